"""`<game>-server`: the command line of every game on the layer.

    <game>-server [--config server.toml] [--print-config] [--migrate-only]
                  [--host 127.0.0.1] [--port 7777] [--db PATH|postgresql://...]
                  [--workers N] [--nats URL] [--ws-port N] [--metrics-port N] ...
                  (--help lists every setting, the game's own after netcore's)

A game's command is one function (netcore-server's is netcore_game.cli):

    def main(argv=None) -> int:
        return netcore_server.cli.main(GAME, argv)

Every setting is also a key of the --config file and an environment variable
NETCORE_<NAME>; later wins: default < file < environment < flag.

Prints one line once it listens. SIGINT/SIGTERM stop it cleanly: no new
connections, queued packets delivered, sessions closed, database closed, exit 0.
SIGHUP restarts the workers of --workers N one at a time, nobody losing
anything (netcore_server.restart); one process has nobody to hand its
players to, so it logs that and serves on.
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

from netcore_server import workers
from netcore_server.config import ServerConfig
from netcore_server.config_file import ConfigError, Origin, env_texts, load_file, resolve
from netcore_server.config_file import render as render_config
from netcore_server.db import SCHEMA_VERSION, DatabaseError, describe_database
from netcore_server.game import Game
from netcore_server.listen import StartupError
from netcore_server.server import GameServer
from netcore_server.settings import fields_of, key_of, kind_of

log = logging.getLogger("netcore_server.cli")

EXIT_USAGE = 2              # a bad setting, or the server could not start
EXIT_INTERRUPTED = 130      # Ctrl-C before it served (128 + SIGINT, as shells report it)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_loop_kind() -> str:
    return "uvloop" if uvloop_available() else "asyncio"


def _metavar(field) -> str:
    if field.metadata.get("metavar"):
        return field.metadata["metavar"]
    if field.metadata.get("choices"):
        return "|".join(field.metadata["choices"])
    if kind_of(field) in (int, float):
        return "N"
    if kind_of(field) is bool:
        return "true|false"
    return field.name.upper().split("_")[-1]


def _flag_help(field) -> str:
    text = field.metadata.get("help") or key_of(field.name)
    choices = field.metadata.get("choices")
    default = (field.metadata["shown_default"] if field.metadata.get("shown_default") else
               str(field.default).lower() if isinstance(field.default, bool) else field.default)
    return (f"{text}: one of {', '.join(choices)} " if choices else f"{text} ") + (
        f"(default: {default})")


def build_parser(game: Game) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=game.command,
        description=game.description or f"The {game.name} game server (built on netcore).",
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
    for field in fields_of(game.config).values():
        if field.metadata.get("flag", True):
            ap.add_argument(f"--{key_of(field.name)}", dest=field.name, metavar=_metavar(field),
                            default=argparse.SUPPRESS, help=_flag_help(field))
    ap.add_argument("--nats", action="append", metavar="URL", default=argparse.SUPPRESS,
                    help="a NATS server of the cluster (repeat for several; default: none, and "
                         "with --workers above 1 a private nats-server is started)")
    ap.add_argument("--version", action="version", version=game.version_line())
    return ap


@dataclass
class Invocation:
    config: ServerConfig
    origins: dict[str, Origin]
    loop_kind: str          # the event loop it runs on, resolved
    print_only: bool
    migrate_only: bool = False


def fail(game: Game, message: str) -> NoReturn:
    """A configuration or start-up error: one line on stderr, exit status 2."""
    print(f"{game.command}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse(game: Game, argv=None, environ=None) -> Invocation:
    """The effective configuration (defaults < --config file < environment < flags)."""
    args = vars(build_parser(game).parse_args(argv))
    config_path, print_only = args.pop("config"), args.pop("print_config")
    migrate_only = args.pop("migrate_only")
    if "nats" in args:
        args["nats"] = ",".join(args["nats"])
    cls = game.config
    try:
        file_values = load_file(config_path, cls) if config_path else {}
        config, origins = resolve(file_values,
                                  env_texts(os.environ if environ is None else environ, cls),
                                  args, config_path, cls)
    except ConfigError as exc:
        fail(game, str(exc))
    try:
        kind = netcore.resolve_loop_kind(config.loop or default_loop_kind())
    except (RuntimeError, ValueError) as exc:
        fail(game, f"{origins['loop'].show('loop', config.loop)}: {exc}")
    return Invocation(config, origins, kind, print_only, migrate_only)


def print_config(game: Game, invocation: Invocation) -> None:
    config, notes = invocation.config, {}
    if config.loop is None:
        installed = "installed" if invocation.loop_kind == "uvloop" else "not installed"
        notes["loop"] = f"uvloop when installed, and it is {installed}"
        config = dataclasses.replace(config, loop=invocation.loop_kind)
    if describe_database(config.db) != config.db:
        # Output that is pasted into tickets and chats carries no password.
        notes["db"] = "password hidden"
        config = dataclasses.replace(config, db=describe_database(config.db))
    for secret in ("nats_password", "nats_token"):
        if getattr(config, secret, ""):
            notes[secret] = "hidden"
            config = dataclasses.replace(config, **{secret: "***"})
    print(f"# {game.version_line()}: the effective configuration")
    print(render_config(config, invocation.origins, notes), end="")


async def migrate(game: Game, config: ServerConfig) -> int:
    """--migrate-only: open the accounts (which creates or migrates the
    database's schema, under the backend's lock), say what it found, close it."""
    try:
        db = game.accounts(config)
        await db.open()
    except DatabaseError as exc:
        print(f"{game.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    await db.close()
    if db.found_version is None:
        print(f"{game.command}: the game's accounts ({type(db).__name__}) have no schema of "
              f"netcore's to migrate", flush=True)
        return 0
    found = ("created" if db.found_version == 0 else
             "already current" if db.found_version == SCHEMA_VERSION else
             f"migrated from version {db.found_version}")
    print(f"{game.command}: database {describe_database(config.db)} at schema version "
          f"{SCHEMA_VERSION} ({found})", flush=True)
    return 0


async def serve(game: Game, config: ServerConfig, kind: str) -> int:
    # The WebSocket port's upgrades in progress hold descriptors of their own.
    upgrades = config.ws_max_upgrades if config.ws_port else 0
    limit = raise_open_files_limit(config.max_sessions + upgrades + DESCRIPTOR_HEADROOM)
    if limit is not None and limit < config.max_sessions:
        log.warning("the open-files limit is %d, below max sessions %d: connections past "
                    "about %d are closed at once", limit, config.max_sessions,
                    max(limit - DESCRIPTOR_HEADROOM, 0))
    try:
        server = GameServer(config, game.accounts(config), game=game)
        await server.start()
    except (DatabaseError, StartupError) as exc:
        print(f"{game.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:     # Windows loops: a plain handler hands over to the loop
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    if hasattr(signal, "SIGHUP"):
        try:
            loop.add_signal_handler(signal.SIGHUP, _no_rolling_restart)
        except NotImplementedError:
            pass
    tune_gc_for_serving()
    print(f"{game.version_line()} listening on {config.host}:{server.port} "
          f"({kind}, database {describe_database(config.db)})"
          f"{game.web_banner(config.host, server.ws_port)}", flush=True)
    await stop.wait()
    log.info("shutting down: %d sessions", len(server.service))
    await server.stop()
    log.info("stopped")
    return 0


def _no_rolling_restart() -> None:
    log.warning("SIGHUP: a rolling restart needs --workers N (a supervisor to start each "
                "worker's successor); one process serves on")


def main(game: Game, argv=None) -> int:
    """Exit status: 0 after a clean stop (SIGINT/SIGTERM once it serves), 2 for a
    bad setting or a failed start, 130 when interrupted while starting."""
    try:
        invocation = parse(game, argv)
        if invocation.print_only:
            print_config(game, invocation)
            return 0
        config = invocation.config
        if invocation.migrate_only:
            return netcore.run(migrate(game, config), invocation.loop_kind)
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
                return workers.run_cluster(game, config,
                                           sys.argv[1:] if argv is None else list(argv))
            if worker:
                return netcore.run(workers.serve_worker(game, config, invocation.loop_kind),
                                   invocation.loop_kind)
            return netcore.run(serve(game, config, invocation.loop_kind), invocation.loop_kind)
        finally:
            logs.stop()
    except KeyboardInterrupt:
        print(f"{game.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
