# cython: language_level=3
import asyncio
import logging

from netcore.errors import DisconnectReason

from netcore.framing cimport MAX_WIRE_SIZE
from netcore.sendbuffer cimport SendBuffer
from netcore.session cimport DEFAULT_MAX_PENDING_BYTES, SendFlusher, Session, send_to_all

log = logging.getLogger("netcore.service")


cdef class Service:

    def __init__(self, session_factory, *, Py_ssize_t max_sessions=DEFAULT_MAX_SESSIONS,
                 Py_ssize_t max_packet_size=MAX_WIRE_SIZE,
                 Py_ssize_t max_pending_bytes=DEFAULT_MAX_PENDING_BYTES,
                 double flush_interval_ms=0):
        if not callable(session_factory):
            raise TypeError("session_factory must be callable")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be >= 1")
        if flush_interval_ms < 0:
            raise ValueError("flush_interval_ms must be >= 0")
        self.flush_interval_ms = flush_interval_ms
        self.session_factory = session_factory
        self.sessions = {}
        self.max_sessions = max_sessions
        self.max_packet_size = max_packet_size
        self.max_pending_bytes = max_pending_bytes

    def __len__(self):
        return len(self.sessions)

    def broadcast(self, SendBuffer buf not None):
        """Queue one buffer to every session; returns how many got it."""
        return send_to_all(list(self.sessions.values()), buf)

    cdef object new_session(self):
        cdef Session s
        if self.flusher is None:
            self.flusher = SendFlusher(asyncio.get_running_loop(), self.flush_interval_ms)
        obj = self.session_factory()
        if not isinstance(obj, Session):
            raise TypeError(f"session_factory returned {type(obj).__name__}, not a Session")
        s = <Session>obj
        s.configure(self, self.flusher, self.max_packet_size, self.max_pending_bytes)
        return s

    def _session_started(self, Session s):
        """Called from connection_made: register, or refuse when full."""
        if len(self.sessions) >= self.max_sessions:
            self.rejected += 1
            s.close(DisconnectReason.SERVER_FULL, f"{self.max_sessions} sessions", False)
            return False
        self.sessions[s.session_id] = s
        return True

    def _session_ended(self, Session s):
        self.sessions.pop(s.session_id, None)

    def pause_reading(self):
        """Stop reading from every session (a shutdown's first step: what was
        received is handled, nothing new comes in)."""
        for s in list(self.sessions.values()):
            transport = (<Session>s).transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()

    async def close_sessions(self, reason=DisconnectReason.SHUTDOWN, float timeout=5.0):
        """Flush and close every session, waiting for them to be gone."""
        sessions = list(self.sessions.values())
        for s in sessions:
            s.disconnect(reason)
        waiters = [s.wait_closed() for s in sessions]
        if waiters:
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waiters], timeout=timeout)
            for s in sessions:
                if s.transport is not None:     # did not close in time
                    s.disconnect(reason, "close timed out", abort=True)
            for t in pending:
                t.cancel()


cdef class ServerService(Service):
    """Listens and accepts: one session from session_factory per connection."""

    def __init__(self, session_factory, str host="127.0.0.1", int port=0, *,
                 int backlog=4096, **limits):
        super().__init__(session_factory, **limits)
        self.host = host
        self.port = port
        self.backlog = backlog

    async def start(self):
        loop = asyncio.get_running_loop()
        self.flusher = SendFlusher(loop, self.flush_interval_ms)
        self.server = await loop.create_server(
            self._accept, self.host, self.port, backlog=self.backlog, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d", self.host, self.port)
        return self

    def _accept(self):
        return self.new_session()

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def listening(self):
        return self.server is not None and self.server.is_serving()

    def stop_accepting(self):
        if self.server is not None:
            self.server.close()

    async def close(self, reason=DisconnectReason.SHUTDOWN, float timeout=5.0):
        """Stop accepting, deliver what is queued, close every session."""
        self.stop_accepting()
        await self.close_sessions(reason, timeout)
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()


cdef class ClientService(Service):
    """Dials `count` sessions to one server, as the original DummyClient did."""

    def __init__(self, session_factory, str host="127.0.0.1", int port=7777,
                 Py_ssize_t count=1, *, Py_ssize_t connect_concurrency=100, **limits):
        super().__init__(session_factory, max_sessions=max(count, 1), **limits)
        if count < 1:
            raise ValueError("count must be >= 1")
        if connect_concurrency < 1:
            raise ValueError("connect_concurrency must be >= 1")
        self.host = host
        self.port = port
        self.count = count
        self.connect_concurrency = connect_concurrency
        self.failures = []

    async def connect_one(self):
        loop = asyncio.get_running_loop()
        _, session = await loop.create_connection(self.new_session, self.host, self.port)
        return session

    async def start(self):
        """Connect every session (at most connect_concurrency in flight).

        Connections that fail are recorded in `failures`; returns the sessions.
        """
        sem = asyncio.Semaphore(self.connect_concurrency)

        async def one():
            async with sem:
                try:
                    return await self.connect_one()
                except OSError as exc:
                    self.failures.append(exc)
                    return None

        results = await asyncio.gather(*[one() for _ in range(self.count)])
        return [s for s in results if s is not None]

    async def close(self, reason=DisconnectReason.CLOSED, float timeout=5.0):
        await self.close_sessions(reason, timeout)

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()
