"""netcore-server: the chat game's server, the server layer's command line.

    netcore-server [--config server.toml] [--print-config] [--migrate-only]
                   [--host 127.0.0.1] [--port 7777] [--db PATH|postgresql://...]
                   [--max-sessions N] [--loop uvloop|asyncio] [--log-level INFO]
                   [--metrics-port N] ... (--help lists every setting)

See netcore_server.cli: every game's command is this one with its own Game.
"""
from __future__ import annotations

import sys

from netcore_server import cli

from netcore_game.game import CHAT


def build_parser():
    return cli.build_parser(CHAT)


def parse(argv=None, environ=None) -> cli.Invocation:
    return cli.parse(CHAT, argv, environ)


def parse_args(argv=None):
    """The effective configuration, and whether --print-config was asked for."""
    invocation = parse(argv)
    return invocation.config, invocation.print_only


def main(argv=None) -> int:
    return cli.main(CHAT, argv)


if __name__ == "__main__":
    sys.exit(main())
