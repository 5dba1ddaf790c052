"""What a server says when it cannot listen, and how it names an address."""
from __future__ import annotations

import os
import socket


class StartupError(Exception):
    """The server could not start; the message says what failed, in one line."""


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(what: str, host: str, port: int, exc: OSError) -> StartupError:
    """`cannot listen on 127.0.0.1:7777 (game port): address already in use`."""
    if isinstance(exc, socket.gaierror):
        why = f"host {host!r} does not resolve ({exc.strerror or exc})"
    elif exc.errno:
        why = os.strerror(exc.errno)
    else:
        why = str(exc)
    return StartupError(f"cannot listen on {host_port(host, port)} ({what}): "
                        f"{why[:1].lower()}{why[1:]}")
