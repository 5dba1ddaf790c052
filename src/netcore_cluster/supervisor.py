"""The supervisor: N worker processes sharing one port, restarted when they die.

    supervisor ──┬── nats-server (private, loopback; unless --nats was given)
                 ├── worker <node>-0 ─┐
                 ├── worker <node>-1 ─┼─ each listens on the same port (SO_REUSEPORT);
                 └── worker <node>-N ─┘  the kernel spreads connections over them

A worker reports on a pipe: `ready` once it listens, `quiesced` once it has
stopped reading and every op it forwarded has run. A second pipe, which the
supervisor holds open and never writes, is the worker's lifeline: if the
supervisor dies (even by SIGKILL) the worker reads end-of-file and shuts down,
so no worker outlives it holding the port. The private nats-server is told to
die with it (Linux: PR_SET_PDEATHSIG). The supervisor itself
serves no client. It holds the port (bound, not listening) for its whole life
so that a restarting worker finds it free, and tells the cluster when a
worker died (`down` on <prefix>.ctl) so that owners drop that worker's players
at once rather than when it comes back.

Broker credentials (auth.py): the private nats-server gets a user and
password made for this run; with --nats, the deployment's NatsAuth is used.
Either way the supervisor connects with them and hands them to each worker
through an inherited pipe (NETCORE_CLUSTER_AUTH_FD), never on a command line.

A rolling restart (SIGHUP to the supervisor, or `rolling_restart()`)
replaces the workers one at a time, each by a successor that goes on as
the same incarnation (netcore_server.restart): the successor starts and
listens to the slot's messages (`attached`), then the worker hands its
players and rooms over into a file of a directory only this user can
enter (`handed`) and exits, and the successor takes over from it and
serves (`ready`) before the next worker goes. A worker that cannot hand
over in time is killed, and its successor starts as a restart after a
crash would (its players lose what a crash loses).

Shutdown keeps the one-process promise across processes: first every worker
quiesces (no new input; everything already accepted has been run by its
room's owner and streamed back), and only then does any worker flush and
close its connections, so no chat accepted by one worker is lost because its
room's owner closed first.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field

log = logging.getLogger("netcore_cluster.supervisor")

READY_TIMEOUT = 60.0
QUIESCE_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0
MAX_BACKOFF = 5.0
STABLE_AFTER = 10.0         # a worker up this long resets its restart backoff
HANDOFF_TIMEOUT = 30.0      # a worker's handover, from the signal to its `handed`


class StartError(Exception):
    """The cluster could not start; the message says what, in one line."""


def reserve_port(host: str, port: int, what: str = "game port") -> socket.socket:
    """A socket bound to the game port (or the WebSocket port) with
    SO_REUSEPORT and not listening: it picks the port when `port` is 0, proves
    nobody else serves it, and keeps it ours while workers come and go."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise StartError("--workers needs SO_REUSEPORT (Linux, BSD, macOS); "
                         "run one worker per port instead")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise StartError(f"cannot listen on {host}:{port} ({what}): {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartError(f"cannot listen on {host}:{port} ({what}): {reason}") from None
    return sock


@dataclass
class Worker:
    slot: str
    index: int                          # its position on this node
    incarnation: int = -1               # starts so far
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    failures: int = 0                   # quick deaths in a row: the restart backoff
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    quiesced: asyncio.Event = field(default_factory=asyncio.Event)
    epoch: int = 0
    info: dict = field(default_factory=dict)
    lifeline: int = -1                  # our end of its lifeline pipe
    successor: bool = False             # the process starting now takes over (a rolling restart)
    replacing: bool = False             # a rolling restart is replacing it: no crash restart
    attached: asyncio.Event = field(default_factory=asyncio.Event)
    handed: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs each worker slot of this node as `command(worker, status_fd,
    lifeline_fd)`, which gives (argv, extra environment)."""

    def __init__(self, slots: list[str], command, *, nats_servers: list[str] | None,
                 host: str, port: int, prefix: str = "netcore", ws_port: int = 0,
                 auth=None):
        """ws_port: the workers' WebSocket port, held like the game port (0: none).
        auth: the NatsAuth for nats_servers (ignored without them: the private
        broker gets credentials of its own); handed to every worker."""
        self.workers = [Worker(slot, i) for i, slot in enumerate(slots)]
        self.command = command
        self.nats_servers = list(nats_servers or [])
        self.host = host
        self.port = port
        self.ws_port = ws_port
        self.ws_port_holder: socket.socket | None = None
        self.prefix = prefix
        self.auth = auth
        self.natsd = None
        self.nc = None
        self.port_holder: socket.socket | None = None
        self.stopping = False
        self.restarts = 0
        self.rolling: asyncio.Task | None = None
        self.rolled = 0                 # workers replaced by rolling restarts
        self.handoff_dir = tempfile.mkdtemp(prefix="netcore-handoff-")     # mode 0700
        self._watchers: set[asyncio.Task] = set()

    # -- start ---------------------------------------------------------------------

    async def start(self, before_workers=None) -> None:
        """Hold the port, start the broker, then (after `before_workers()`,
        which may raise StartError) every worker; returns once all are ready."""
        self.port_holder = reserve_port(self.host, self.port)
        self.port = self.port_holder.getsockname()[1]
        if self.ws_port:
            self.ws_port_holder = reserve_port(self.host, self.ws_port, "websocket port")
            self.ws_port = self.ws_port_holder.getsockname()[1]
        from netcore_cluster.auth import AuthError, NatsAuth
        if not self.nats_servers:
            from netcore_cluster.natsd import NatsServer, NatsServerMissing
            self.auth = NatsAuth.generate()
            try:
                self.natsd = await NatsServer(auth=self.auth).start()
            except NatsServerMissing as exc:
                raise StartError(str(exc)) from None
            self.nats_servers = [self.natsd.url]
        if self.auth is not None:
            try:
                self.auth.check()
            except AuthError as exc:
                raise StartError(str(exc)) from None
        try:
            import nats
            self.nc = await nats.connect(self.nats_servers, name="netcore supervisor",
                                         connect_timeout=2, max_reconnect_attempts=-1,
                                         reconnect_time_wait=0.25, error_cb=self._broker_error,
                                         **(self.auth or NatsAuth()).connect_options())
        except Exception as exc:
            raise StartError(f"cannot reach NATS at {','.join(self.nats_servers)}: "
                             f"{exc or type(exc).__name__}") from None
        if before_workers is not None:
            before_workers()
        for w in self.workers:
            await self._spawn(w)
        try:
            await asyncio.wait_for(self._all_ready(), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise StartError(f"workers not ready after {READY_TIMEOUT:.0f} s") from None

    async def _broker_error(self, exc) -> None:
        # The workers report the broker's state; the supervisor only needs it
        # to say `down`, so it says nothing while reconnect attempts fail.
        log.debug("broker: %r", exc)

    async def _all_ready(self) -> None:
        for w in self.workers:
            ready = asyncio.ensure_future(w.ready.wait())
            died = asyncio.ensure_future(w.proc.wait())
            await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            died.cancel()
            if not w.ready.is_set():
                raise StartError(f"worker {w.slot} exited at start (status "
                                 f"{w.proc.returncode}); its error is above")

    async def _spawn(self, w: Worker, successor: bool = False) -> None:
        w.incarnation += 1
        w.successor = successor
        w.ready = asyncio.Event()
        w.quiesced = asyncio.Event()
        w.attached = asyncio.Event()
        w.handed = asyncio.Event()
        read_fd, write_fd = os.pipe()
        life_read, life_write = os.pipe()
        argv, env = self.command(w, write_fd, life_read)
        passed = [write_fd, life_read]
        if self.auth is not None:
            from netcore_cluster.auth import ENV_FD, hand_to_child
            auth_fd = hand_to_child(self.auth)
            passed.append(auth_fd)
            env = {**env, ENV_FD: str(auth_fd)}
        try:
            w.proc = await asyncio.create_subprocess_exec(
                *argv, env={**os.environ, **env}, pass_fds=tuple(passed),
                start_new_session=True, stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            os.close(life_write)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        if w.lifeline >= 0:
            os.close(w.lifeline)            # the previous incarnation's
        w.lifeline = life_write
        w.started = time.monotonic()
        events = {"ready": w.ready, "quiesced": w.quiesced, "attached": w.attached,
                  "handed": w.handed}
        task = asyncio.get_running_loop().create_task(self._watch(w, w.proc, read_fd, events))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, w: Worker, proc, read_fd: int, events: dict) -> None:
        """One process's status lines (its own events: a worker being
        replaced still reports while its successor starts)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                word, _, rest = line.decode().strip().partition(" ")
                if word == "ready":
                    w.info = json.loads(rest or "{}")
                    w.epoch = int(w.info.get("epoch", 0))
                if word in events:
                    events[word].set()
                if word == "handed":
                    log.info("worker %s handed over: %s", w.slot, rest)
        finally:
            transport.close()
        code = await proc.wait()
        if proc is w.proc and not self.stopping and not w.replacing:
            await self._died(w, code)

    async def _died(self, w: Worker, code: int) -> None:
        lived = time.monotonic() - w.started
        w.failures = 0 if lived > STABLE_AFTER else w.failures + 1
        delay = 0.0 if w.failures <= 1 else min(0.1 * 2 ** (w.failures - 1), MAX_BACKOFF)
        how = f"signal {-code}" if code < 0 else f"status {code}"
        log.error("worker %s (pid %d) died (%s) after %.1f s; restarting in %.1f s",
                  w.slot, w.proc.pid, how, lived, delay)
        await self._say_down(w.slot, w.epoch)
        if delay:
            await asyncio.sleep(delay)
        if not self.stopping:
            self.restarts += 1
            await self._spawn(w)

    async def _say_down(self, slot: str, epoch: int) -> None:
        if self.nc is not None and epoch:
            try:        # owners drop its players now, not when it says hello again
                await self.nc.publish(f"{self.prefix}.ctl", json.dumps(
                    {"op": "down", "slot": slot, "epoch": epoch}).encode())
                await self.nc.flush(timeout=2)
            except Exception as exc:
                log.warning("could not tell the cluster that %s died: %r", slot, exc)

    # -- a rolling restart ------------------------------------------------------------

    def request_rolling_restart(self) -> None:
        """SIGHUP: restart every worker, one at a time (module docstring)."""
        if self.stopping:
            return
        if self.rolling is not None and not self.rolling.done():
            log.warning("a rolling restart is under way already: SIGHUP ignored")
            return
        self.rolling = asyncio.get_running_loop().create_task(self.rolling_restart())

    async def rolling_restart(self) -> int:
        """Replace every worker by a successor, one at a time; how many
        handed over (the others were restarted as after a crash)."""
        started = time.monotonic()
        log.info("rolling restart of %d workers", len(self.workers))
        handed = 0
        for w in self.workers:
            if self.stopping:
                break
            if await self._replace(w):
                handed += 1
        log.info("rolling restart done in %.1f s: %d of %d workers handed over",
                 time.monotonic() - started, handed, len(self.workers))
        return handed

    async def _replace(self, w: Worker) -> bool:
        old, old_epoch, old_handed = w.proc, w.epoch, w.handed
        old_events = (w.ready, w.quiesced, w.attached, w.handed)
        if old is None or old.returncode is not None:
            return False
        path = os.path.join(self.handoff_dir, f"{w.slot}.handoff")
        if os.path.exists(path):
            os.unlink(path)
        old_lifeline, w.lifeline = w.lifeline, -1   # old lives on until it has handed over
        w.replacing = True
        try:
            await self._spawn(w, successor=True)
            new = w.proc
            if not await _event_or_exit(w.attached, new, READY_TIMEOUT):
                log.error("worker %s: its successor did not start (status %s); the worker "
                          "serves on", w.slot, new.returncode)
                if new.returncode is None:
                    new.kill()
                    await new.wait()
                os.close(w.lifeline)
                w.proc, w.epoch, w.lifeline = old, old_epoch, old_lifeline
                w.ready, w.quiesced, w.attached, w.handed = old_events     # its own again
                w.successor = False
                return False
            _signal_proc(old, signal.SIGUSR2)
            # The file is written (renamed into place) before the line: a
            # worker that exits before its line is read has handed over all the same.
            handed = (await _event_or_exit(old_handed, old, HANDOFF_TIMEOUT)
                      or os.path.exists(path))
            if not handed:
                log.error("worker %s did not hand over in %.0f s: killed; its successor "
                          "starts afresh", w.slot, HANDOFF_TIMEOUT)
                if old.returncode is None:
                    old.kill()
                await self._say_down(w.slot, old_epoch)
            _signal_proc(new, signal.SIGUSR2)
            try:
                await asyncio.wait_for(old.wait(), EXIT_TIMEOUT)
            except asyncio.TimeoutError:
                log.error("worker %s did not exit after handing over: killed", w.slot)
                old.kill()
                await old.wait()
            os.close(old_lifeline)
            ready = await _event_or_exit(w.ready, new, READY_TIMEOUT)
        finally:
            w.replacing = False
        if not ready:
            if new.returncode is not None and not self.stopping:
                await self._died(w, new.returncode)     # a crash after all: restarted
            return False
        self.rolled += 1
        return handed

    # -- stop ----------------------------------------------------------------------

    async def stop(self) -> int:
        """Quiesce every worker, then close them; 0 when all exited cleanly."""
        self.stopping = True
        if self.rolling is not None and not self.rolling.done():
            self.rolling.cancel()
            await asyncio.gather(self.rolling, return_exceptions=True)
        live = [w for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for w in live:
            _signal(w, signal.SIGUSR1)
        waits = [asyncio.ensure_future(_first(w.quiesced.wait(), w.proc.wait())) for w in live]
        if waits:
            done, pending = await asyncio.wait(waits, timeout=QUIESCE_TIMEOUT)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("%d workers did not quiesce in %.0f s", len(pending), QUIESCE_TIMEOUT)
        for w in live:
            _signal(w, signal.SIGTERM)
        codes = []
        for w in live:
            try:
                codes.append(await asyncio.wait_for(w.proc.wait(), EXIT_TIMEOUT))
            except asyncio.TimeoutError:
                log.error("worker %s did not exit in %.0f s: killed", w.slot, EXIT_TIMEOUT)
                w.proc.kill()
                codes.append(await w.proc.wait())
        for task in list(self._watchers):
            task.cancel()
        for w in self.workers:
            if w.lifeline >= 0:
                os.close(w.lifeline)
                w.lifeline = -1
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:
                pass
        if self.natsd is not None:
            await self.natsd.stop()
        for holder in (self.port_holder, self.ws_port_holder):
            if holder is not None:
                holder.close()
        shutil.rmtree(self.handoff_dir, ignore_errors=True)
        return 0 if all(c == 0 for c in codes) else 1


def _signal(w: Worker, sig) -> None:
    _signal_proc(w.proc, sig)


def _signal_proc(proc, sig) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


async def _event_or_exit(event: asyncio.Event, proc, timeout: float) -> bool:
    """True once `event` is set; False when `proc` exits first or timeout passes."""
    got = asyncio.ensure_future(event.wait())
    died = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({got, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        got.cancel()
        died.cancel()
    return event.is_set()


async def _first(*aws):
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
