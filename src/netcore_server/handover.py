"""Handing a resuming connection to the worker that holds its session.

With --workers N the kernel gives each new connection to any worker of the
machine (SO_REUSEPORT), so a C_RESUME often reaches a worker that does not
hold the session: the hold (the session object, its sent log, its place in
its room's stream) is the holding worker's, and moving it would mean moving
a position in every stream it is in. The connection moves instead: the
worker that read the C_RESUME passes the connection's descriptor to the
holding worker (SCM_RIGHTS over a Unix socket of the machine's abstract
namespace, one per worker of a supervisor run), with the token and the
count, and forgets it without a byte on the wire (its descriptor closed,
never shut down: the connection lives on in the other process). The holding
worker makes it a session of its own and resumes it there, exactly as if
the kernel had given it the connection.

Only a TCP connection moves (a WebSocket's framing state is picows's, in the
first worker); only to a worker of the same machine (a descriptor does not
cross machines). Anything else is S_RESUME{success: false}.

The channel is local to the machine and checked: a connection to it from a
process of another user is dropped (SO_PEERCRED), and what it carries is
what the client sent (a token and a count) and the client's own socket, so a
local process could do no more through it than the client itself can.
"""
from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
import struct

from netcore import DisconnectReason

from netcore_server.handlers import begin_resume
from netcore_server.session import State

log = logging.getLogger("netcore_server.handover")

_HEAD = struct.Struct("<Q")     # the count; the token follows, UTF-8
# A sibling being replaced (a rolling restart) has no channel for a moment:
# a pass is tried again this often, for this long.
RETRY_EVERY = 0.02
SIBLING_WAIT = 10.0
MAX_MESSAGE = 256
PEERCRED = struct.Struct("3i")  # pid, uid, gid


def channel(run: int, slot: str) -> str:
    """The abstract Unix address of a worker's channel in supervisor run `run`."""
    return f"\0netcore-resume-{run}-{slot}"


class Handover:
    """One worker's end: it hands connections to its siblings and takes theirs."""

    def __init__(self, server, slot: str, run: int | None = None):
        self.server = server
        self.slot = slot
        self.run = os.getppid() if run is None else run     # the supervisor's pid
        self.listener: socket.socket | None = None
        self.handed = 0             # connections passed to another worker
        self.taken = 0              # connections taken from one
        self.failed = 0             # passes that did not go (the other worker gone, busy)
        self.waits = 0              # tries again while a sibling's channel was closed

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.bind(channel(self.run, self.slot))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        self.listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        if self.listener is not None:
            asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None

    # -- passing one on ----------------------------------------------------------------

    async def pass_on(self, session, slot: str, token: str, received: int) -> bool:
        """Pass `session`'s connection to the worker of `slot`, whose
        channel may be missing for a moment (a rolling restart: its
        successor opens it once it has taken over): tried again every
        RETRY_EVERY for up to SIBLING_WAIT. True once it went; else the
        resume is refused (S_RESUME{success: false}) and False."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SIBLING_WAIT
        session.state = State.RESUMING
        while session.connected:
            try:
                self.hand(session, slot, token, received)
            except (ConnectionRefusedError, BlockingIOError):
                # Nobody listens there yet, or its backlog is full (a
                # restarted worker's players all reconnect at once).
                if loop.time() < deadline:
                    self.waits += 1
                    await asyncio.sleep(RETRY_EVERY)
                    continue
                why = f"its channel was not open for {SIBLING_WAIT:g} s"
            except OSError as exc:
                why = str(exc)
            else:
                session.state = State.RESUMED       # its end is no player's
                session.disconnect(DisconnectReason.CLOSED, f"handed to worker {slot}, "
                                   "which holds its session", abort=True)
                return True
            self.failed += 1
            log.warning("handing session %d to worker %s failed: %s", session.session_id,
                        slot, why)
            session.resume_refused("not_resumable", "resume refused: the session is held by "
                                   "worker %s, which this connection cannot reach (%s)",
                                   slot, why)
            return False
        return False

    def hand(self, session, slot: str, token: str, received: int) -> None:
        """Pass `session`'s connection to the worker of `slot` (the caller
        then aborts its own end, which closes only this process's
        descriptor). Never blocks: OSError when it does not go
        (ConnectionRefusedError: nobody listens on that channel)."""
        raw = session.transport.get_extra_info("socket") if session.transport else None
        if raw is None:
            raise OSError("the connection has no socket to pass")
        out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            out.connect(channel(self.run, slot))
            out.sendmsg([_HEAD.pack(received) + token.encode()],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                          array.array("i", [raw.fileno()]))])
        finally:
            out.close()
        self.handed += 1
        log.info("session %d: handed to worker %s, which holds its session", session.session_id,
                 slot)

    # -- taking one --------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("the resume channel's accept failed: %s", exc)
            return
        _, uid, _ = PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    PEERCRED.size))
        if uid != os.getuid():
            log.warning("the resume channel refused a process of user %d", uid)
            conn.close()
            return
        conn.setblocking(False)
        asyncio.get_running_loop().add_reader(conn.fileno(), self._receive, conn)

    def _receive(self, conn: socket.socket) -> None:
        fds = array.array("i")
        try:
            msg, ancdata, _, _ = conn.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(fds.itemsize))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            msg, ancdata = b"", []
        asyncio.get_running_loop().remove_reader(conn.fileno())
        conn.close()
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        if len(fds) != 1 or len(msg) < _HEAD.size:
            for fd in fds:
                os.close(fd)
            return
        (received,) = _HEAD.unpack_from(msg)
        try:
            token = msg[_HEAD.size:].decode()
        except UnicodeDecodeError:
            os.close(fds[0])
            return
        asyncio.get_running_loop().create_task(self._adopt(fds[0], token, received))

    async def _adopt(self, fd: int, token: str, received: int) -> None:
        service = self.server.service
        sock = socket.socket(fileno=fd)
        if self.server.stopping:
            sock.close()                    # closed as every other connection is now
            return
        sock.setblocking(False)
        try:
            _, session = await asyncio.get_running_loop().connect_accepted_socket(
                service._accept, sock)
        except OSError as exc:
            log.warning("a connection handed over could not be taken: %s", exc)
            sock.close()
            return
        self.taken += 1
        if session.connected:
            begin_resume(session, token, received)
