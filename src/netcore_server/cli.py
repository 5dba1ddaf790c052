"""netcore-server: the chat game server.

    netcore-server [--config server.toml] [--print-config] [--migrate-only]
                   [--host 127.0.0.1] [--port 7777] [--db PATH|postgresql://...]
                   [--max-sessions N] [--loop uvloop|asyncio] [--log-level INFO]
                   [--metrics-port N] ... (--help lists every limit)

Every setting is also a key of the --config file and an environment variable
NETCORE_<NAME>; later wins: default < file < environment < flag.

Prints one line once it listens. SIGINT/SIGTERM stop it cleanly: no new
connections, queued packets delivered, sessions closed, database closed, exit 0.
A bad setting or a failed start is one line on stderr and exit status 2; Ctrl-C
while still starting, exit status 130.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn

import netcore
from netcore.logs import configure_peer_lines, start_queued_logging
from netcore.loop import (DESCRIPTOR_HEADROOM, raise_open_files_limit, tune_gc_for_serving,
                          uvloop_available)

from netcore_game.config import ConfigError, Origin, env_texts, load_file, resolve
from netcore_game.config import render as render_config
from netcore_game.db import SCHEMA_VERSION, DatabaseError, describe_database, make_database
from netcore_game.server import GameServer, ServerConfig, StartupError, host_port
from netcore_game.settings import fields_of, kind_of
from netcore_game import workers

log = logging.getLogger("netcore_game.cli")

EXIT_USAGE = 2              # a bad setting, or the server could not start
EXIT_INTERRUPTED = 130      # Ctrl-C before it served (128 + SIGINT, as shells report it)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_loop_kind() -> str:
    return "uvloop" if uvloop_available() else "asyncio"


# (flag, ServerConfig field, type, help); each default comes from ServerConfig,
# each check of the value from its field's metadata (settings.setting). The
# type is the field's; it stays here for readers.
FLAGS = [
    ("--host", "host", str, "address to listen on"),
    ("--port", "port", int, "0 picks a free port"),
    ("--db", "db", str, "SQLite file, created on first run, or a PostgreSQL URL "
     "postgresql://user:password@host:port/dbname (pip install \"netcore[postgres]\")"),
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
     "SQLite: seconds to wait for a database lock held by another process"),
    ("--db-pool-size", "db_pool_size", int,
     "PostgreSQL: connections of each worker process (see docs/operations.md)"),
    ("--db-connect-timeout", "db_connect_timeout", float,
     "PostgreSQL: seconds to connect, or to wait for a free connection"),
    ("--db-statement-timeout", "db_statement_timeout", float,
     "PostgreSQL: seconds a statement may take; past it that login fails"),
    ("--flush-interval-ms", "flush_interval_ms", float,
     "under load, write to each client at most this often (0: every loop iteration); "
     "trades up to this much latency for far fewer syscalls"),
    ("--room-announce-seconds", "room_announce_seconds", float,
     "every room announces its member count this often (0: off)"),
    ("--metrics-port", "metrics_port", int, "serve Prometheus metrics on this port (0: off)"),
    ("--metrics-host", "metrics_host", str, "address of the metrics endpoint"),
    ("--ws-port", "ws_port", int,
     "serve WebSocket clients (browsers, web builds) and the chat page on this port (0: off)"),
    ("--ws-origins", "ws_origins", str,
     "web pages that may connect: self, loopback, *, null or exact origins, comma-separated"),
    ("--ws-max-message-bytes", "ws_max_message_bytes", int,
     "largest WebSocket message a client may send; larger closes it (1009)"),
    ("--exempt-networks", "exempt_networks", str,
     "comma-separated networks no per-address limit counts (\"\": none)"),
    ("--max-sessions-per-address", "max_sessions_per_address", int,
     "connections from one address (an IPv6 /64) at once; more are refused (0: no cap)"),
    ("--keepalive-idle", "keepalive_idle", float,
     "seconds of silence before TCP keepalive probes find a vanished client (0: off)"),
    ("--keepalive-interval", "keepalive_interval", float,
     "seconds between keepalive probes; 3 unanswered end the connection"),
    ("--tcp-transport", "tcp_transport", str,
     "whose transports carry TCP connections: netcore's own, the event loop's, or auto "
     "(netcore's under uvloop on Linux)"),
    ("--listen-sockets", "listen_sockets", int,
     "listening sockets per address sharing the port, each accepting one connection per "
     "loop iteration with uvloop's transports (0: 16 for those on Linux, else 1)"),
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
    ("--fast-replies", "fast_replies", bool,
     "S_LOGIN and S_ENTER_GAME success replies laid out by hand, the bytes protobuf makes "
     "(false: built through protobuf)"),
    ("--workers", "workers", int,
     "worker processes sharing the port (auto: one per core); more than 1 joins them over NATS"),
    ("--node-id", "node_id", str, "this machine's name in the cluster (default: the host name)"),
    ("--cluster", "cluster", str,
     "every machine's workers, node=N[,node=N...], the same on every node "
     "(default: this node alone)"),
    ("--cluster-prefix", "cluster_prefix", str, "NATS subject prefix of this deployment"),
]


# --loop and --log-level take one of their field's choices (case-insensitive
# for the log level); every flag's value is checked as its field says.
FLAGS += [
    ("--loop", "loop", str, "event loop"),
    ("--log-level", "log_level", str, "logging threshold"),
]


def _metavar(field) -> str:
    if field.metadata.get("choices"):
        return "|".join(field.metadata["choices"])
    if kind_of(field) in (int, float):
        return "N"
    if kind_of(field) is bool:
        return "true|false"
    return field.name.upper().split("_")[-1]


def _flag_help(field, text: str) -> str:
    choices = field.metadata.get("choices")
    default = ("uvloop when installed" if field.name == "loop" else
               str(field.default).lower() if isinstance(field.default, bool) else field.default)
    return (f"{text}: one of {', '.join(choices)} " if choices else f"{text} ") + (
        f"(default: {default})")


def build_parser() -> argparse.ArgumentParser:
    fields = fields_of(ServerConfig)
    ap = argparse.ArgumentParser(
        prog="netcore-server", description="The netcore chat game server.",
        epilog="Every setting can also be a key of the --config file or an environment "
               "variable NETCORE_<NAME> (NETCORE_MAX_SESSIONS=...); flags win over the "
               "environment, which wins over the file.")
    ap.add_argument("--config", metavar="TOML", help="a file of settings (default: none)")
    ap.add_argument("--print-config", action="store_true",
                    help="print the effective configuration as TOML, with where each value "
                         "came from, and exit")
    ap.add_argument("--migrate-only", action="store_true",
                    help="create or migrate the database's schema (--db), say which version "
                         "it is at, and exit: for operators who migrate before a rollout")
    # Flags default to "not given", so that only those on the command line
    # override the file and the environment; values are strings until the
    # field's checks turn them into its type.
    for flag, field, _kind, text in FLAGS:
        ap.add_argument(flag, dest=field, metavar=_metavar(fields[field]),
                        default=argparse.SUPPRESS, help=_flag_help(fields[field], text))
    ap.add_argument("--nats", action="append", metavar="URL", default=argparse.SUPPRESS,
                    help="a NATS server of the cluster (repeat for several; default: none, and "
                         "with --workers above 1 a private nats-server is started)")
    ap.add_argument("--version", action="version", version=f"netcore-server {netcore.__version__}")
    return ap


@dataclass
class Invocation:
    config: ServerConfig
    origins: dict[str, Origin]
    loop_kind: str          # the event loop it runs on, resolved
    print_only: bool
    migrate_only: bool = False


def fail(message: str) -> NoReturn:
    """A configuration or start-up error: one line on stderr, exit status 2."""
    print(f"netcore-server: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse(argv=None, environ=None) -> Invocation:
    """The effective configuration (defaults < --config file < environment < flags)."""
    args = vars(build_parser().parse_args(argv))
    config_path, print_only = args.pop("config"), args.pop("print_config")
    migrate_only = args.pop("migrate_only")
    if "nats" in args:
        args["nats"] = ",".join(args["nats"])
    try:
        file_values = load_file(config_path) if config_path else {}
        config, origins = resolve(file_values, env_texts(os.environ if environ is None else environ),
                                  args, config_path)
    except ConfigError as exc:
        fail(str(exc))
    try:
        kind = netcore.resolve_loop_kind(config.loop or default_loop_kind())
    except (RuntimeError, ValueError) as exc:
        fail(f"{origins['loop'].show('loop', config.loop)}: {exc}")
    return Invocation(config, origins, kind, print_only, migrate_only)


def parse_args(argv=None) -> tuple[ServerConfig, bool]:
    """The effective configuration, and whether --print-config was asked for."""
    invocation = parse(argv)
    return invocation.config, invocation.print_only


def print_config(invocation: Invocation) -> None:
    config, notes = invocation.config, {}
    if config.loop is None:
        installed = "installed" if invocation.loop_kind == "uvloop" else "not installed"
        notes["loop"] = f"uvloop when installed, and it is {installed}"
        config = dataclasses.replace(config, loop=invocation.loop_kind)
    if describe_database(config.db) != config.db:
        # Output that is pasted into tickets and chats carries no password.
        notes["db"] = "password hidden"
        config = dataclasses.replace(config, db=describe_database(config.db))
    print(f"# netcore-server {netcore.__version__}: the effective configuration")
    print(render_config(config, invocation.origins, notes), end="")


async def migrate(config: ServerConfig) -> int:
    """--migrate-only: open the database (which creates or migrates its
    schema, under the backend's lock), say what it found, close it."""
    try:
        db = make_database(config)
        await db.open()
    except DatabaseError as exc:
        print(f"netcore-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    await db.close()
    found = ("created" if db.found_version == 0 else
             "already current" if db.found_version == SCHEMA_VERSION else
             f"migrated from version {db.found_version}")
    print(f"netcore-server: database {describe_database(config.db)} at schema version "
          f"{SCHEMA_VERSION} ({found})", flush=True)
    return 0


async def serve(config: ServerConfig, kind: str) -> int:
    limit = raise_open_files_limit(config.max_sessions + DESCRIPTOR_HEADROOM)
    if limit is not None and limit < config.max_sessions:
        log.warning("the open-files limit is %d, below max sessions %d: connections past "
                    "about %d are closed at once", limit, config.max_sessions,
                    max(limit - DESCRIPTOR_HEADROOM, 0))
    try:
        server = GameServer(config, make_database(config))
        await server.start()
    except (DatabaseError, StartupError) as exc:
        print(f"netcore-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:     # Windows loops: a plain handler hands over to the loop
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    tune_gc_for_serving()
    web = (f"; websocket and chat page on http://{host_port(config.host, server.ws_port)}/"
           if server.ws is not None else "")
    print(f"netcore-server {netcore.__version__} listening on {config.host}:{server.port} "
          f"({kind}, database {describe_database(config.db)}){web}", flush=True)
    await stop.wait()
    log.info("shutting down: %d sessions", len(server.service))
    await server.stop()
    log.info("stopped")
    return 0


def main(argv=None) -> int:
    """Exit status: 0 after a clean stop (SIGINT/SIGTERM once it serves), 2 for a
    bad setting or a failed start, 130 when interrupted while starting."""
    try:
        invocation = parse(argv)
        if invocation.print_only:
            print_config(invocation)
            return 0
        config = invocation.config
        if invocation.migrate_only:
            return netcore.run(migrate(config), invocation.loop_kind)
        worker = workers.is_worker()
        fmt = LOG_FORMAT
        if worker:      # each line says which worker wrote it
            fmt = (f"%(asctime)s %(levelname)s [{os.environ[workers.ENV_SLOT]}] "
                   f"%(name)s: %(message)s")
        # Written by a thread of its own: a slow disk or a stderr pipe nobody
        # reads holds that thread, never the event loop.
        logs = start_queued_logging(config.log_level, fmt)
        configure_peer_lines(config.peer_log_rate)
        try:
            if not worker and (config.workers > 1 or config.nats):
                return workers.run_cluster(config, sys.argv[1:] if argv is None else list(argv))
            if worker:
                return netcore.run(workers.serve_worker(config, invocation.loop_kind),
                                   invocation.loop_kind)
            return netcore.run(serve(config, invocation.loop_kind), invocation.loop_kind)
        finally:
            logs.stop()
    except KeyboardInterrupt:
        print("netcore-server: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
