"""netcore-server: the chat game server.

    netcore-server [--config server.toml] [--print-config] [--host 127.0.0.1]
                   [--port 7777] [--db PATH] [--max-sessions N] [--loop uvloop|asyncio]
                   [--log-level INFO] [--metrics-port N] ... (--help lists every limit)

Prints one line once it listens. SIGINT/SIGTERM stop it cleanly: no new
connections, queued packets delivered, sessions closed, database closed, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import netcore
from netcore.logs import configure_peer_lines, start_queued_logging
from netcore.loop import LOOP_KINDS, raise_open_files_limit, tune_gc_for_serving

from netcore_game.config import ConfigError, load_file
from netcore_game.config import build as build_config
from netcore_game.config import render as render_config
from netcore_game.db import DatabaseError, SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig
from netcore_game import workers

log = logging.getLogger("netcore_game.cli")

# Descriptors the process needs besides one per session: the database and its
# journal per worker thread, the event loop, logs, a refused connection or two.
FD_HEADROOM = 64
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def workers_arg(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number or auto") from None


# (flag, ServerConfig field, type, help); each default comes from ServerConfig.
FLAGS = [
    ("--host", "host", str, "address to listen on"),
    ("--port", "port", int, "0 picks a free port"),
    ("--db", "db", str, "SQLite file, created on first run"),
    ("--max-sessions", "max_sessions", int, "connections served at once; more are refused"),
    ("--max-chat-bytes", "max_chat_bytes", int, "longest chat, in UTF-8 bytes"),
    ("--max-packet-size", "max_packet_size", int, "largest packet a client may send"),
    ("--max-pending-bytes", "max_pending_bytes", int,
     "per-session unsent bytes before it is cut off as a slow consumer"),
    ("--packet-rate", "packet_rate", float,
     "packets/s each client may send; more closes it as rate limited (0: no limit)"),
    ("--packet-burst", "packet_burst", int, "packets a client may send at once above the rate"),
    ("--max-packets-per-read", "max_packets_per_read", int,
     "packets of one client handled per read before others get a turn (0: no cap)"),
    ("--login-timeout", "login_timeout", float, "seconds a connection has to log in (0: no limit)"),
    ("--idle-timeout", "idle_timeout", float,
     "seconds a logged-in client may send nothing (0: no limit)"),
    ("--db-busy-timeout", "db_busy_timeout", float,
     "seconds to wait for a database lock held by another process"),
    ("--flush-interval-ms", "flush_interval_ms", float,
     "under load, write to each client at most this often (0: every loop iteration); "
     "trades up to this much latency for far fewer syscalls"),
    ("--room-announce-seconds", "room_announce_seconds", float,
     "every room announces its member count this often (0: off)"),
    ("--metrics-port", "metrics_port", int, "serve Prometheus metrics on this port (0: off)"),
    ("--metrics-host", "metrics_host", str, "address of the metrics endpoint"),
    ("--exempt-networks", "exempt_networks", str,
     "comma-separated networks no per-address limit counts (\"\": none)"),
    ("--max-sessions-per-address", "max_sessions_per_address", int,
     "connections from one address (an IPv6 /64) at once; more are refused (0: no cap)"),
    ("--keepalive-idle", "keepalive_idle", float,
     "seconds of silence before TCP keepalive probes find a vanished client (0: off)"),
    ("--keepalive-interval", "keepalive_interval", float,
     "seconds between keepalive probes; 3 unanswered end the connection"),
    ("--max-pending-bytes-total", "max_pending_bytes_total", int,
     "unsent bytes of all clients together; past it the largest are cut off (0: no bound)"),
    ("--max-logins-in-flight", "max_logins_in_flight", int,
     "named logins waiting for the database; more are refused at once"),
    ("--max-logins-in-flight-per-address", "max_logins_in_flight_per_address", int,
     "named logins from one address waiting for the database; more are refused at once"),
    ("--max-failed-logins", "max_failed_logins", int,
     "wrong passwords on one connection before it is closed (0: no limit)"),
    ("--address-window", "address_window", float,
     "seconds over which failed logins and new accounts per address are counted"),
    ("--max-failed-logins-per-address", "max_failed_logins_per_address", int,
     "wrong passwords from one address per window; then its named logins wait (0: no limit)"),
    ("--max-new-accounts-per-address", "max_new_accounts_per_address", int,
     "accounts created from one address per window; then new names are refused (0: no limit)"),
    ("--max-room-players", "max_room_players", int, "players in one room; more are refused"),
    ("--max-room-queue", "max_room_queue", int,
     "jobs waiting in one room; a chat past it is dropped and counted"),
    ("--peer-log-rate", "peer_log_rate", float,
     "log lines/s about single clients, server-wide; the rest are counted (0: no limit)"),
    ("--log-summary-seconds", "log_summary_seconds", float,
     "log an INFO summary (sessions, rooms, rates, refusals) this often (0: off)"),
    ("--workers", "workers", workers_arg,
     "worker processes sharing the port (auto: one per core); more than 1 joins them over NATS"),
    ("--node-id", "node_id", str, "this machine's name in the cluster (default: the host name)"),
    ("--cluster", "cluster", str,
     "every machine's workers, node=N[,node=N...], the same on every node "
     "(default: this node alone)"),
    ("--cluster-prefix", "cluster_prefix", str, "NATS subject prefix of this deployment"),
]


def parse_args(argv=None) -> tuple[ServerConfig, bool]:
    """The effective configuration (defaults < --config file < flags), and
    whether --print-config was asked for."""
    d = ServerConfig()
    ap = argparse.ArgumentParser(prog="netcore-server", description="The netcore chat game server.")
    ap.add_argument("--config", metavar="TOML", help="a file of settings; flags override it")
    ap.add_argument("--print-config", action="store_true",
                    help="print the effective configuration as TOML and exit")
    # Flags default to "not given", so that only those on the command line
    # override the file.
    for flag, field, kind, text in FLAGS:
        ap.add_argument(flag, dest=field, type=kind, default=argparse.SUPPRESS,
                        help=f"{text} (default: {getattr(d, field)})")
    ap.add_argument("--nats", action="append", metavar="URL", default=argparse.SUPPRESS,
                    help="a NATS server of the cluster (repeat for several); with --workers "
                         "above 1 and none given, a private nats-server is started")
    ap.add_argument("--loop", choices=LOOP_KINDS, default=argparse.SUPPRESS,
                    help="default: uvloop when installed")
    ap.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                    default=argparse.SUPPRESS, help=f"(default: {d.log_level})")
    ap.add_argument("--version", action="version", version=f"netcore-server {netcore.__version__}")
    args = vars(ap.parse_args(argv))
    config_path, print_only = args.pop("config"), args.pop("print_config")
    if "nats" in args:
        args["nats"] = ",".join(args["nats"])
    try:
        config = build_config(load_file(config_path) if config_path else {}, args)
        config.validate()
    except (ConfigError, ValueError, TypeError) as exc:
        ap.error(str(exc))
    return config, print_only


async def serve(config: ServerConfig, kind: str) -> int:
    limit = raise_open_files_limit(config.max_sessions + FD_HEADROOM)
    if limit is not None and limit < config.max_sessions:
        log.warning("the open-files limit is %d, below max sessions %d: connections past "
                    "about %d are closed at once", limit, config.max_sessions,
                    max(limit - FD_HEADROOM, 0))
    server = GameServer(config, SQLiteDatabase(config.db, busy_timeout=config.db_busy_timeout))
    try:
        await server.start()
    except (DatabaseError, OSError) as exc:
        print(f"netcore-server: {exc}", file=sys.stderr)
        await server.db.close()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:     # Windows loops: a plain handler hands over to the loop
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    tune_gc_for_serving()
    print(f"netcore-server {netcore.__version__} listening on {config.host}:{server.port} "
          f"({kind}, database {config.db})", flush=True)
    await stop.wait()
    log.info("shutting down: %d sessions", len(server.service))
    await server.stop()
    log.info("stopped")
    return 0


def main(argv=None) -> int:
    config, print_only = parse_args(argv)
    if print_only:
        print(render_config(config), end="")
        return 0
    worker = workers.is_worker()
    fmt = LOG_FORMAT
    if worker:
        fmt = f"%(asctime)s %(levelname)s [{os.environ[workers.ENV_SLOT]}] %(name)s: %(message)s"
    # Written by a thread of its own: a slow disk or a stderr pipe nobody
    # reads holds that thread, never the event loop.
    logs = start_queued_logging(config.log_level, fmt)
    configure_peer_lines(config.peer_log_rate)
    try:
        if not worker and (config.workers > 1 or config.nats):
            return workers.run_cluster(config, sys.argv[1:] if argv is None else list(argv))
        kind = netcore.resolve_loop_kind(config.loop)
        if worker:
            return netcore.run(workers.serve_worker(config, kind), kind)
        return netcore.run(serve(config, kind), kind)
    finally:
        logs.stop()


if __name__ == "__main__":
    sys.exit(main())
