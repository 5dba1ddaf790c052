"""netcore-server: the chat game server.

    netcore-server [--host 127.0.0.1] [--port 7777] [--db PATH] [--max-sessions N]
                   [--loop uvloop|asyncio] [--log-level INFO]

Prints one line once it listens. SIGINT/SIGTERM stop it cleanly: no new
connections, queued packets delivered, sessions closed, database closed, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import netcore
from netcore.loop import LOOP_KINDS, raise_open_files_limit, tune_gc_for_serving

from game.db import DatabaseError, SQLiteDatabase
from game.server import GameServer, ServerConfig

log = logging.getLogger("game.cli")

# Descriptors the process needs besides one per session: the database and its
# journal per worker thread, the event loop, logs, a refused connection or two.
FD_HEADROOM = 64


def parse_args(argv=None) -> ServerConfig:
    d = ServerConfig()
    ap = argparse.ArgumentParser(prog="netcore-server", description="The netcore chat game server.")
    ap.add_argument("--host", default=d.host)
    ap.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    ap.add_argument("--db", default=d.db, help="SQLite file, created on first run")
    ap.add_argument("--max-sessions", type=int, default=d.max_sessions)
    ap.add_argument("--max-chat-bytes", type=int, default=d.max_chat_bytes)
    ap.add_argument("--max-packet-size", type=int, default=d.max_packet_size)
    ap.add_argument("--max-pending-bytes", type=int, default=d.max_pending_bytes,
                    help="per-session unsent bytes before it is cut off as a slow consumer")
    ap.add_argument("--packet-rate", type=float, default=d.packet_rate,
                    help="packets/s each client may send; more closes it as rate limited "
                         "(0: no limit)")
    ap.add_argument("--packet-burst", type=int, default=d.packet_burst,
                    help="packets a client may send at once above the rate")
    ap.add_argument("--login-timeout", type=float, default=d.login_timeout,
                    help="seconds a connection has to log in (0: no limit)")
    ap.add_argument("--idle-timeout", type=float, default=d.idle_timeout,
                    help="seconds a logged-in client may send nothing (0: no limit)")
    ap.add_argument("--db-busy-timeout", type=float, default=d.db_busy_timeout,
                    help="seconds to wait for a database lock held by another process")
    ap.add_argument("--flush-interval-ms", type=float, default=d.flush_interval_ms,
                    help="under load, write to each client at most this often (0: every loop "
                         "iteration); trades up to this much latency for far fewer syscalls")
    ap.add_argument("--room-announce-seconds", type=float, default=d.room_announce_seconds,
                    help="every room announces its member count this often (0: off)")
    ap.add_argument("--loop", choices=LOOP_KINDS, help="default: uvloop when installed")
    ap.add_argument("--log-level", default=d.log_level,
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("--version", action="version", version=f"netcore-server {netcore.__version__}")
    args = ap.parse_args(argv)
    config = ServerConfig(**{k: v for k, v in vars(args).items()})
    try:
        config.validate()
    except ValueError as exc:
        ap.error(str(exc))
    return config


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
        loop.add_signal_handler(sig, stop.set)
    tune_gc_for_serving()
    print(f"netcore-server {netcore.__version__} listening on {config.host}:{server.port} "
          f"({kind}, database {config.db})", flush=True)
    await stop.wait()
    log.info("shutting down: %d sessions", len(server.service))
    await server.stop()
    log.info("stopped")
    return 0


def main(argv=None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kind = netcore.resolve_loop_kind(config.loop)
    return netcore.run(serve(config, kind), kind)


if __name__ == "__main__":
    sys.exit(main())
