# cython: language_level=3
import asyncio
import errno
import functools
import logging
import math
import os
import socket
import sys
import time

from netcore.addresses import DEFAULT_EXEMPT, address_key, parse_networks
from netcore.errors import DisconnectReason
from netcore.logs import format_address, peer_line
from netcore.proxy import HEADER_TIMEOUT as _PROXY_HEADER_TIMEOUT, REASONS as _PROXY_REASONS
# Private here (the constant is netcore.loop's, not this module's API).
from netcore.loop import DESCRIPTOR_HEADROOM as _HEADROOM, reserve_descriptors
from netcore import tcp

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.time cimport PyTime_MonotonicRaw, PyTime_t
from libc.string cimport memcpy

from netcore.framing cimport MAX_WIRE_SIZE
from netcore.proxy cimport HeaderReader, NetworkSet, ProxyHeader, header_source
from netcore.sendbuffer cimport SendBuffer
from netcore.stats cimport PacketStats
from netcore.tcp cimport TcpAcceptor, TcpPoller
from netcore.session cimport (
    DEFAULT_MAX_PENDING_BYTES, RateLimit, SendFlusher, Session, default_burst, rate_init,
    send_to_all,
)

cdef extern from *:
    """
    #ifdef _WIN32
    static int netcore_keepalive(int fd, int idle, int interval, int probes) {
        (void)fd; (void)idle; (void)interval; (void)probes;
        return -1;                  /* no descriptor path: the socket object's */
    }
    #else
    #include <sys/socket.h>
    #include <netinet/in.h>
    #include <netinet/tcp.h>
    static int netcore_keepalive(int fd, int idle, int interval, int probes) {
        int on = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0) return -1;
    #if defined(TCP_KEEPIDLE)
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0) return -1;
    #elif defined(TCP_KEEPALIVE)            /* macOS names the idle time so */
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPALIVE, &idle, sizeof idle) < 0) return -1;
    #endif
    #ifdef TCP_KEEPINTVL
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) < 0) return -1;
    #endif
    #ifdef TCP_KEEPCNT
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes) < 0) return -1;
    #endif
        return 0;
    }
    #endif
    """
    int netcore_keepalive(int fd, int idle, int interval, int probes) nogil

log = logging.getLogger("netcore.service")

cdef object LOGIN_TIMEOUT = DisconnectReason.LOGIN_TIMEOUT
cdef object IDLE_TIMEOUT = DisconnectReason.IDLE_TIMEOUT
cdef object ADDRESS_FULL = DisconnectReason.ADDRESS_FULL
cdef tuple _OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


cdef PyTime_t _seconds_ns(str name, double seconds) except -1:
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0")
    return <PyTime_t>(seconds * 1e9)


class ListenSocket(socket.socket):
    """A listening socket that sheds connections when the process is out of
    file descriptors instead of failing its accept (see service.pxd)."""

    __slots__ = ("_spare", "_shed", "_shed_logged_at")

    def __init__(self, *args, **kwargs):
        socket.socket.__init__(self, *args, **kwargs)
        self._spare = -1
        self._shed = 0
        self._shed_logged_at = -1e9

    def listen(self, *args):
        # Called by the selector and proactor loops when they start serving,
        # never by uvloop, which has a spare of its own.
        if self._spare < 0:
            self._spare = _open_spare()
        socket.socket.listen(self, *args)

    def accept(self):
        try:
            return socket.socket.accept(self)
        except OSError as exc:
            if exc.errno not in _OUT_OF_FDS:
                raise
        self._shed_pending()
        # What the loop expects when nothing is pending: it stops accepting
        # until the socket is readable again, and has nothing to log.
        raise BlockingIOError(errno.EAGAIN, "out of file descriptors: pending connections shed")

    def _shed_pending(self):
        cdef Py_ssize_t n = 0
        cdef int i
        if self._spare >= 0:
            os.close(self._spare)
            self._spare = -1
        # At most SHED_BATCH per call: under a connect flood the backlog
        # refills as fast as it is shed, and an unbounded loop would hold the
        # event loop for as long as the flood lasts. What is left keeps the
        # socket readable: the loop comes back after serving everyone else.
        for i in range(SHED_BATCH):
            try:
                conn, _ = socket.socket.accept(self)
            except ConnectionAbortedError:
                continue
            except OSError:
                # EAGAIN: all shed. EMFILE: another thread took the spare's
                # descriptor; until one is free again the loop finds the socket
                # readable and comes back every iteration (a spin, but one that
                # still serves every other socket).
                break
            conn.close()
            n += 1
        self._spare = _open_spare()
        self._shed += n
        now = time.monotonic()
        if self._shed and now - self._shed_logged_at >= SHED_LOG_INTERVAL_MS / 1000.0:
            log.warning("out of file descriptors: closed %d connections that could not be "
                        "accepted (raise the open-files limit, or lower max sessions)",
                        self._shed)
            self._shed = 0
            self._shed_logged_at = now

    def close(self):
        if self._spare >= 0:
            os.close(self._spare)
            self._spare = -1
        socket.socket.close(self)


def _set_keepalive(transport, double idle, double interval):
    """Keepalive probes on an accepted socket (see service.pxd)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(math.ceil(idle)))
        elif hasattr(socket, "TCP_KEEPALIVE"):      # macOS names the idle time so
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPALIVE, int(math.ceil(idle)))
        if hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, int(math.ceil(interval)))
        if hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except OSError:
        pass        # the connection is gone already; connection_lost follows


cdef double _keepalive_seconds(str name, double seconds, bint allow_zero) except -1:
    # Linux takes 1..32767 s for both (a larger value fails setsockopt).
    if not ((1 <= seconds <= MAX_KEEPALIVE_S) or (allow_zero and seconds == 0)):
        raise ValueError(f"{name} must be a number of seconds in 1..{MAX_KEEPALIVE_S}"
                         f"{' (or 0: off)' if allow_zero else ''}, not {seconds}")
    return seconds


def _open_spare():
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return -1       # out of descriptors already: the next listen() or shed retries


cdef bint _listeners_keepalive(list socks, double idle, double interval):
    """Keepalive options on listening sockets, for their accepted sockets to
    inherit (Linux does; other systems do not promise it): True when every
    socket has them."""
    if not idle or not sys.platform.startswith("linux"):
        return False
    for sock in socks:
        if netcore_keepalive(sock.fileno(), <int>math.ceil(idle), <int>math.ceil(interval),
                             KEEPALIVE_PROBES) < 0:
            return False
    return True


# SO_REUSEPORT spreads connections over a group of sockets (Linux; the BSDs
# give them all to one socket).
cdef bint _REUSEPORT_SPREADS = (sys.platform.startswith("linux")
                                and hasattr(socket, "SO_REUSEPORT"))


TCP_TRANSPORTS = ("auto", "netcore", "loop")


def _is_uvloop(loop):
    return type(loop).__module__.partition(".")[0] == "uvloop"


def tcp_transport_kind(str requested, loop):
    """Whose transports carry accepted connections: "netcore" (netcore.tcp)
    or "loop" (the event loop's create_server); "auto" is netcore's under
    uvloop on Linux, the loop's elsewhere (see tcp.pxd)."""
    if requested not in TCP_TRANSPORTS:
        raise ValueError(f"tcp_transport must be one of {', '.join(TCP_TRANSPORTS)}, "
                         f"not {requested!r}")
    if requested == "netcore" and not tcp.AVAILABLE:
        raise ValueError("tcp_transport 'netcore' needs Linux; 'loop' works everywhere")
    if requested == "auto":
        return "netcore" if tcp.AVAILABLE and loop is not None and _is_uvloop(loop) else "loop"
    return requested


async def _start_acceptor(loop, poller, protocol_factory, int backlog, sock, *, trusted=None,
                          proxied=None):
    return TcpAcceptor(loop, poller, sock, protocol_factory, backlog, trusted=trusted,
                       proxied=proxied)


async def _create_server(loop, poller, protocol_factory, int backlog, sock):
    return await loop.create_server(protocol_factory, sock=sock, backlog=backlog)


def listen_socket_count(int requested, loop, str transport="loop"):
    """How many listening sockets per address: `requested`, or with 0 the
    default for this loop and transport (see service.pxd: DEFAULT_LISTEN_SOCKETS
    for uvloop's own transports on Linux, else 1: netcore's acceptor takes
    every pending connection per readiness)."""
    if requested < 0 or requested > MAX_LISTEN_SOCKETS:
        raise ValueError(f"listen_sockets must be in 0..{MAX_LISTEN_SOCKETS}, not {requested}")
    if requested > 1 and not _REUSEPORT_SPREADS:
        raise ValueError("listen_sockets > 1 needs SO_REUSEPORT spreading connections "
                         "(Linux)")
    if requested:
        return requested
    if _REUSEPORT_SPREADS and transport == "loop" and _is_uvloop(loop):
        return DEFAULT_LISTEN_SOCKETS
    return 1


async def _serve_on(str host, int port, bint reuse_port, start, double keepalive_idle=0,
                    double keepalive_interval=0, int listen_sockets=1):
    """Listeners on every address of host, `listen_sockets` sockets each:
    start(sock) awaited for each bound socket (loop.create_server's,
    picows's); on any failure all that was made is closed again and the
    error raised. Returns (servers, the bound port, whether the accepted
    sockets inherit keepalive with keepalive_idle > 0)."""
    socks = await _listen_sockets(host, port, reuse_port, listen_sockets)
    inherited = _listeners_keepalive(socks, keepalive_idle, keepalive_interval)
    servers = []
    try:
        for sock in socks:
            servers.append(await start(sock))
    except BaseException:
        for server in servers:
            server.close()
        for sock in socks:
            sock.close()
        raise
    return servers, socks[0].getsockname()[1], inherited


def _bind(sock, address):
    try:
        sock.bind(address)
    except OSError as exc:
        raise OSError(exc.errno, f"error while attempting to bind on address "
                                 f"{address!r}: {exc.strerror.lower()}") from None


def _with_port_of(address, sock):
    """`address` with the port `sock` is bound to (the one port 0 picked)."""
    return address[:1] + sock.getsockname()[1:2] + address[2:]


def _claim_port(family, socktype, proto, address):
    """The address with its port, checked free for a socket group about to
    take it: a plain bind fails on a port anyone listens on (a group of
    SO_REUSEPORT sockets would join another one of the same user instead)."""
    probe = socket.socket(family, socktype, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _bind(probe, address)
        return _with_port_of(address, probe)
    finally:
        probe.close()


async def _listen_sockets(str host, int port, bint reuse_port=False, int count=1):
    """Bound (not yet listening) sockets for every address of host, as
    loop.create_server would make them, `count` per address. With
    reuse_port, several processes listen on the same port and the kernel
    spreads connections over them (SO_REUSEPORT: Linux, and the BSDs without
    the spreading); a group of count > 1 on a port of its own does the same
    within the process (see service.pxd)."""
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this platform has no SO_REUSEPORT: several workers cannot share a port")
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, family=socket.AF_UNSPEC,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks, seen = [], set()
    try:
        for family, socktype, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            if count > 1 and not reuse_port:
                address = _claim_port(family, socktype, proto, address)
            for i in range(count):
                sock = ListenSocket(family, socktype, proto)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port or count > 1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                _bind(sock, address)
                sock.setblocking(False)
                if i == 0:      # port 0: the group takes the port the first got
                    address = _with_port_of(address, sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(f"no address to listen on for {host!r}")
    return socks


cdef class Service:
    """What both services share: the registry of their sessions (`sessions`,
    by session_id), the limits every session of theirs runs with, and one
    flusher that writes all their sessions once per event-loop iteration.

    Keyword arguments, each also a read-only attribute: max_sessions (20000;
    a further connection is aborted, SERVER_FULL), max_packet_size (65535, a
    header announcing more closes the session), max_pending_bytes (1 MiB
    unsent per session, SLOW_CONSUMER past it), flush_interval_ms (0: flush
    every iteration), and the ones below (each 0 is off).
    """

    def __init__(self, session_factory, *, Py_ssize_t max_sessions=DEFAULT_MAX_SESSIONS,
                 Py_ssize_t max_packet_size=MAX_WIRE_SIZE,
                 Py_ssize_t max_pending_bytes=DEFAULT_MAX_PENDING_BYTES,
                 double flush_interval_ms=0, double packet_rate=0, Py_ssize_t packet_burst=0,
                 double login_timeout=0, double idle_timeout=0,
                 Py_ssize_t max_packets_per_read=0, Py_ssize_t max_pending_bytes_total=0,
                 Py_ssize_t max_sessions_per_address=0, exempt_networks=DEFAULT_EXEMPT,
                 double keepalive_idle=0, double keepalive_interval=10):
        """packet_rate: packets/s each session may send, 0 for no limit, with
        bursts of packet_burst (0: one second's worth). login_timeout: seconds
        a session has to call mark_logged_in(). idle_timeout: seconds without
        a packet after that (or after connecting, with no login_timeout).
        max_pending_bytes_total: unsent bytes of all sessions together.
        max_sessions_per_address: sessions from one source address, not
        counting exempt_networks ("127.0.0.0/8,::1" or a list). keepalive_idle:
        seconds of silence before TCP keepalive probes, keepalive_interval
        apart. Each 0 is off."""
        cdef RateLimit check
        if not callable(session_factory):
            raise TypeError("session_factory must be callable")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be >= 1")
        if flush_interval_ms < 0:
            raise ValueError("flush_interval_ms must be >= 0")
        if max_packets_per_read < 0:
            raise ValueError("max_packets_per_read must be >= 0")
        if max_pending_bytes_total < 0:
            raise ValueError("max_pending_bytes_total must be >= 0")
        if max_sessions_per_address < 0:
            raise ValueError("max_sessions_per_address must be >= 0")
        self.keepalive_idle = _keepalive_seconds("keepalive_idle", keepalive_idle, True)
        self.keepalive_interval = _keepalive_seconds("keepalive_interval", keepalive_interval,
                                                     False)
        self.exempt_networks = parse_networks(exempt_networks)
        self.max_pending_bytes_total = max_pending_bytes_total
        self.max_sessions_per_address = max_sessions_per_address
        self.address_sessions = {}
        self.address_keys = {}
        self.max_packets_per_read = max_packets_per_read
        packet_burst = default_burst(packet_rate, packet_burst)
        rate_init(&check, packet_rate, packet_burst)    # refuse a bad limit now, not per session
        self.login_timeout_ns = _seconds_ns("login_timeout", login_timeout)
        self.idle_timeout_ns = _seconds_ns("idle_timeout", idle_timeout)
        self.flush_interval_ms = flush_interval_ms
        self.session_factory = session_factory
        self.sessions = {}
        self.packet_stats = PacketStats()
        self.disconnects = {}
        self.max_sessions = max_sessions
        self.max_packet_size = max_packet_size
        self.max_pending_bytes = max_pending_bytes
        self.packet_rate = packet_rate
        self.packet_burst = packet_burst if packet_rate > 0 else 0
        self.login_timeout = login_timeout
        self.idle_timeout = idle_timeout

    def __len__(self):
        return len(self.sessions)

    def broadcast(self, SendBuffer buf not None):
        """Queue one buffer to every session; returns how many got it."""
        return send_to_all(list(self.sessions.values()), buf)

    cdef SendFlusher make_flusher(self, object loop):
        cdef SendFlusher f = SendFlusher(loop, self.flush_interval_ms)
        f.max_pending_bytes = self.max_pending_bytes_total
        f.sessions = self.sessions
        return f

    @property
    def pending_bytes(self):
        """Bytes queued in all sessions and not yet handed to a transport."""
        return self.flusher.pending_bytes if self.flusher is not None else 0

    @property
    def shed_sessions(self):
        """Sessions cut off to keep max_pending_bytes_total."""
        return self.flusher.shed_sessions if self.flusher is not None else 0

    cdef object new_session(self):
        cdef Session s
        if self.flusher is None:
            self.flusher = self.make_flusher(asyncio.get_running_loop())
        obj = self.session_factory()
        if not isinstance(obj, Session):
            raise TypeError(f"session_factory returned {type(obj).__name__}, not a Session")
        s = <Session>obj
        s.configure(self, self.flusher, self.max_packet_size, self.max_pending_bytes,
                    self.packet_rate, self.packet_burst)
        s.stats = self.packet_stats
        s.max_packets_per_read = self.max_packets_per_read
        return s

    cdef int start_sweeping(self, object loop) except -1:
        cdef PyTime_t shortest
        if self.sweep_handle is not None or not (self.login_timeout_ns or self.idle_timeout_ns):
            return 0
        if not self.login_timeout_ns or (self.idle_timeout_ns
                                         and self.idle_timeout_ns < self.login_timeout_ns):
            shortest = self.idle_timeout_ns
        else:
            shortest = self.login_timeout_ns
        self.sweep_interval = min(max(shortest / 1e9 / SWEEP_DIVISIONS, MIN_SWEEP_MS / 1000.0),
                                  MAX_SWEEP_MS / 1000.0)
        self.loop = loop
        self.sweep_handle = loop.call_later(self.sweep_interval, _sweep_service, self)
        return 0

    cdef void stop_sweeping(self) noexcept:
        if self.sweep_handle is not None:
            self.sweep_handle.cancel()
            self.sweep_handle = None

    def _sweep(self):
        """Close every session past its login deadline or idle timeout."""
        cdef PyTime_t now = PyTime_MonotonicRaw()
        cdef Py_ssize_t pos = 0
        cdef PyObject* key
        cdef PyObject* value
        cdef Session s
        cdef list late = None
        cdef list idle = None
        self.sweep_handle = self.loop.call_later(self.sweep_interval, _sweep_service, self)
        while PyDict_Next(self.sessions, &pos, &key, &value):
            s = <Session>value
            if s.closing:
                continue
            if self.login_timeout_ns and not s.logged_in:
                if now - s.connected_ns >= self.login_timeout_ns:
                    if late is None:
                        late = []
                    late.append(s)
            elif self.idle_timeout_ns and now - s.last_recv_ns >= self.idle_timeout_ns:
                if idle is None:
                    idle = []
                idle.append(s)
        # Closed after the walk: a close may end up changing the dict. A
        # connection that never logged in is owed nothing: aborted, so that
        # its descriptor and its slot are free now, not after a linger.
        if late is not None:
            for s in late:
                s.close(LOGIN_TIMEOUT, f"not logged in within {self.login_timeout:g} s", True)
        if idle is not None:
            for s in idle:
                s.close(IDLE_TIMEOUT, f"no packet for {self.idle_timeout:g} s", False)

    def _session_started(self, Session s):
        """Called from connection_made: register, or refuse when full."""
        if len(self.sessions) + self.waiting >= self.max_sessions:
            self.rejected += 1
            # Aborted, not lingered: nothing was sent to it, and a lingering
            # refused connection would hold a descriptor outside the count.
            s.close(DisconnectReason.SERVER_FULL, f"{self.max_sessions} sessions", True)
            return False
        if self.max_sessions_per_address:
            key = self.address_key_of(s)
            if key is not None:
                n = self.address_sessions.get(key, 0)
                if n >= self.max_sessions_per_address:
                    self.rejected_by_address += 1
                    s.close(ADDRESS_FULL, f"{n} sessions from {key}", True)
                    return False
                self.address_sessions[key] = n + 1
        self.sessions[s.session_id] = s
        if self.keepalive_idle and not self.keepalive_inherited:
            # An error means the connection is gone already (connection_lost
            # follows) or, on Windows, no descriptor path: the socket object's.
            if s.fd < 0 or netcore_keepalive(
                    s.fd, <int>math.ceil(self.keepalive_idle),
                    <int>math.ceil(self.keepalive_interval), KEEPALIVE_PROBES) < 0:
                _set_keepalive(s.transport, self.keepalive_idle, self.keepalive_interval)
        return True

    cdef object address_key_of(self, Session s):
        return self.address_key_for(s.peername)

    cdef object address_key_for(self, object peer):
        """The per-address key of a peer address (None: not counted)."""
        if not peer or not isinstance(peer, tuple) or not isinstance(peer[0], str):
            return address_key(peer, self.exempt_networks)
        host = peer[0]
        try:
            return self.address_keys[host]
        except KeyError:
            pass
        key = address_key(peer, self.exempt_networks)
        if len(self.address_keys) >= ADDRESS_KEY_CACHE:
            self.address_keys.clear()
        self.address_keys[host] = key
        return key

    def _session_ended(self, Session s):
        if self.sessions.pop(s.session_id, None) is not None and self.max_sessions_per_address:
            key = self.address_key_of(s)
            if key is not None:
                n = self.address_sessions.pop(key, 0) - 1
                if n > 0:
                    self.address_sessions[key] = n
        kind = s.close_reason.kind.value
        self.disconnects[kind] = self.disconnects.get(kind, 0) + 1

    def pause_reading(self):
        """Stop reading from every session (a shutdown's first step: what was
        received is handled, nothing new comes in, not even after a session
        has drained the backlog of a capped read)."""
        for s in list(self.sessions.values()):
            (<Session>s).pause_reading()

    async def drain_backlogs(self):
        """After pause_reading(): wait until every packet already read has
        reached its handler. A capped read (max_packets_per_read) leaves the
        rest in the session's buffer, handled a cap's worth per loop
        iteration; a shutdown that closed sessions meanwhile would deliver
        those packets' broadcasts to the sessions still open and not to the
        ones already closed."""
        while True:
            for s in self.sessions.values():
                if (<Session>s).backlogged and not (<Session>s).closing:
                    break
            else:
                return
            await asyncio.sleep(0)      # one iteration: each backlog drains a cap's worth

    async def close_sessions(self, reason=DisconnectReason.SHUTDOWN, float timeout=5.0):
        """Flush and close every session, waiting for them to be gone: when
        this returns, every on_disconnected has run."""
        sessions = list(self.sessions.values())
        for s in sessions:
            s.disconnect(reason)
        waiters = [asyncio.ensure_future(s.wait_closed()) for s in sessions]
        if not waiters:
            return
        done, pending = await asyncio.wait(waiters, timeout=timeout)
        if pending:
            for s in sessions:
                if s.transport is not None:     # did not close in time
                    s.disconnect(reason, "close timed out", abort=True)
            # An aborted transport reports the loss in a later loop iteration:
            # wait for that too, so that nothing of these sessions (a game's
            # leave, say) runs after the caller has moved on.
            done, pending = await asyncio.wait(pending, timeout=ABORT_WAIT_MS / 1000.0)
            for t in pending:
                t.cancel()


def _sweep_service(Service service):
    # A module function, not a bound method kept on the service: see
    # _run_flusher in session.pyx.
    service._sweep()


cdef class ServerService(Service):
    """Listens and accepts: one session from session_factory() per connection.

    Arguments: session_factory, host ("127.0.0.1"), port (0 picks a free
    port; `port` holds the real one once started), then by keyword backlog
    (4096), reuse_port (False; True lets the worker processes of one machine
    share the port, SO_REUSEPORT), tcp_transport ("auto", the default:
    netcore's own accept and transport, netcore.tcp, under uvloop on Linux,
    else the event loop's; "netcore" or "loop" to choose), listen_sockets
    (listening sockets per address; 0, the default, picks 16 for uvloop's
    own transports on Linux, where libuv accepts one connection per socket
    per loop iteration, else 1), trusted_proxies ("": none, the default;
    "10.0.0.0/8,2001:db8::/32" or a list: a connection from these networks
    must begin with a PROXY header, and its session's peername is the
    client the header names; see proxy.pxd), proxy_header_timeout (5 s: a
    trusted connection whose header is not complete by then is closed) and
    any of Service's limits.
    ``async with ServerService(...) as service:`` starts it and, on the way
    out, closes it (close()).
    """

    def __init__(self, session_factory, str host="127.0.0.1", int port=0, *,
                 int backlog=4096, bint reuse_port=False, int listen_sockets=0,
                 str tcp_transport="auto", trusted_proxies="",
                 double proxy_header_timeout=_PROXY_HEADER_TIMEOUT, **limits):
        super().__init__(session_factory, **limits)
        listen_socket_count(listen_sockets, None)      # checked now, chosen at start
        tcp_transport_kind(tcp_transport, None)
        if not (proxy_header_timeout > 0 and math.isfinite(proxy_header_timeout)):
            raise ValueError("proxy_header_timeout must be a finite number of seconds > 0")
        trusted = NetworkSet(trusted_proxies or "")
        self.trusted_proxies = trusted if len(trusted) else None
        self.proxy_header_timeout = proxy_header_timeout
        self.proxied = set()
        self.proxy_header_failures = {reason: 0 for reason in _PROXY_REASONS}
        self.tcp_transport = tcp_transport
        self.host = host
        self.port = port
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.listen_sockets = listen_sockets
        self.listeners = []

    def add_listener(self, listener):
        """Another listener whose sessions are this service's (it has
        stop_accepting() and async wait_closed()): stop_accepting() and
        close() act on it too."""
        if listener not in self.listeners:
            self.listeners.append(listener)

    async def start(self):
        """Listen on every address of `host`; returns this service. An address
        that cannot be listened on raises OSError, and nothing listens."""
        loop = asyncio.get_running_loop()
        # The descriptor table at its full size now, not grown by doubling
        # under a storm of accepts (each growth a stall: netcore.loop).
        reserve_descriptors(self.max_sessions + _HEADROOM)
        self.flusher = self.make_flusher(loop)
        self.tcp_transport = tcp_transport_kind(self.tcp_transport, loop)
        self.listen_sockets = listen_socket_count(self.listen_sockets, loop, self.tcp_transport)
        # partial, not a lambda: a Cython coroutine's closure scope would hold
        # the lambda that holds the scope, a cycle keeping the service alive.
        self.loop = loop
        if self.tcp_transport == "netcore":
            self.poller = TcpPoller(loop)
            # A trusted proxy's connection is told apart by the acceptor,
            # from the address accept4 gave.
            start = functools.partial(
                _start_acceptor, loop, self.poller, self._accept, self.backlog,
                trusted=self.trusted_proxies,
                proxied=(None if self.trusted_proxies is None
                         else functools.partial(_new_proxied, self, True)))
        else:
            # The loop makes the protocol before it says who the peer is:
            # with trusted proxies, each connection's protocol checks at
            # connection_made (ProxiedConnection); without, none is made.
            start = functools.partial(
                _create_server, loop, None,
                (self._accept if self.trusted_proxies is None
                 else functools.partial(_new_proxied, self, False)),
                self.backlog)
        try:
            self.servers, self.port, self.keepalive_inherited = await _serve_on(
                self.host, self.port, self.reuse_port, start,
                self.keepalive_idle, self.keepalive_interval, self.listen_sockets)
        except BaseException:
            if self.poller is not None:
                self.poller.close()
                self.poller = None
            raise
        self.start_sweeping(loop)
        log.info("listening on %s:%d", self.host, self.port)
        return self

    def _accept(self):
        return self.new_session()

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def listening(self):
        return self.servers is not None and any(s.is_serving() for s in self.servers)

    def stop_accepting(self):
        self.stopped = True
        if self.servers is not None:
            for server in self.servers:
                server.close()
        for listener in self.listeners:
            listener.stop_accepting()
        # Still reading their PROXY header: no session yet, none to be made now.
        for c in list(self.proxied):
            self.proxy_end(<ProxiedConnection>c)
            (<ProxiedConnection>c).finished = True
            (<ProxiedConnection>c).transport.abort()

    @property
    def proxied_waiting(self):
        """Connections from trusted proxies whose PROXY header is not read yet."""
        return self.waiting

    cdef int proxy_begin(self, ProxiedConnection c) except -1:
        """A trusted proxy's connection begins: wait for its header, within
        max_sessions (with the sessions) and proxy_header_timeout."""
        cdef Py_ssize_t waiting = self.waiting
        if self.stopped or len(self.sessions) + waiting >= self.max_sessions:
            c.finished = True
            if not self.stopped:
                self.rejected += 1
                kind = DisconnectReason.SERVER_FULL.value
                self.disconnects[kind] = self.disconnects.get(kind, 0) + 1
                if peer_line(log, logging.INFO):
                    log.info("connection from proxy %s refused: server full (%d sessions, %d "
                             "waiting for their PROXY header)",
                             format_address(c.transport.get_extra_info("peername")),
                             len(self.sessions), waiting)
            c.transport.abort()
            return 0
        self.proxied.add(c)
        self.waiting += 1
        c.waiting = True
        c.timer = self.loop.call_later(self.proxy_header_timeout, _proxy_header_late, c)
        return 0

    cdef void proxy_end(self, ProxiedConnection c) noexcept:
        if c.waiting:
            c.waiting = False
            self.waiting -= 1
            self.proxied.discard(c)
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None

    cdef int proxy_failed(self, str reason, str detail, object peer) except -1:
        """A trusted proxy's connection closed before its header was read:
        counted by reason, logged (a malformed or missing header is a
        proxy that is not configured as we are: a warning)."""
        cdef int level
        self.proxy_header_failures[reason] = self.proxy_header_failures.get(reason, 0) + 1
        level = (logging.DEBUG if reason == "closed" else logging.INFO if reason == "timeout"
                 else logging.WARNING)
        if peer_line(log, level):
            log.log(level, "connection from proxy %s closed: %s", format_address(peer), detail)
        return 0

    async def close(self, reason=DisconnectReason.SHUTDOWN, float timeout=5.0):
        """Stop accepting, deliver what is queued, close every session."""
        self.stop_accepting()
        self.stop_sweeping()
        await self.close_sessions(reason, timeout)
        if self.servers is not None:
            for server in self.servers:
                await server.wait_closed()
            self.servers = None
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        for listener in self.listeners:
            await listener.wait_closed()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()


def _new_proxied(ServerService service, bint checked):
    # The protocol factory for trusted proxies (checked: by netcore's acceptor).
    cdef ProxiedConnection c = _Proxied.__new__(_Proxied)
    c.service = service
    c.checked = checked
    return c


def _proxy_header_late(ProxiedConnection c):
    # A module function given its object (see netcore.loop), as every timer here.
    c.timer = None
    if not c.finished:
        c.end("timeout", f"no complete PROXY header within {c.service.proxy_header_timeout:g} s",
              True)


cdef class ProxiedConnection(HeaderReader):
    """A connection's protocol until its PROXY header is read (service.pxd);
    then a session of the service's, the client's address its peername."""

    def connection_made(self, transport):
        cdef ServerService service = self.service
        self.transport = transport
        if not self.checked:
            # The loop's transports: who the peer is, known only now.
            peer = transport.get_extra_info("peername")
            if not (peer and isinstance(peer, tuple)
                    and service.trusted_proxies.contains_host(peer[0])):
                self.finished = True
                self.hand_over(None, NULL, 0)       # a session as any other, nothing read
                return
        service.proxy_begin(self)

    cdef int done(self, ProxyHeader* h, const unsigned char* rest, Py_ssize_t n) except -1:
        cdef ServerService service = self.service
        service.proxy_end(self)
        if service.stopped:
            self.transport.abort()
            return 0
        self.hand_over(header_source(h), rest, n)
        return 0

    cdef int failed(self, str reason, str detail) except -1:
        return self.end(reason, detail, True)

    cdef int end(self, str reason, str detail, bint abort) except -1:
        self.finished = True
        self.service.proxy_end(self)
        self.service.proxy_failed(reason, detail, self.transport.get_extra_info("peername"))
        if abort:
            self.transport.abort()
        return 0

    cdef int hand_over(self, object peername, const unsigned char* rest,
                       Py_ssize_t n) except -1:
        """The connection becomes a session: `peername` its address (None:
        the connection's own), rest[0:n] the first bytes it reads."""
        cdef Session s
        cdef Py_buffer view
        transport = self.transport
        s = <Session>self.service.new_session()
        if peername is not None:
            s._peername = peername
        transport.set_protocol(s)
        s.connection_made(transport)        # registered (or refused) under the client's address
        if n and not s.closing and s.transport is not None:
            buf = s.get_buffer(-1)
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            try:
                # A fresh session lends at least READ_ASIDE (64 KiB) bytes.
                if view.len < n:
                    raise RuntimeError(f"a session lent {view.len} bytes for the {n} after "
                                       f"the PROXY header")
                memcpy(view.buf, rest, n)
            finally:
                PyBuffer_Release(&view)
            s.buffer_updated(n)
        return 0

    def connection_lost(self, exc):
        self.lost(exc)
        self.transport = None

    def pause_writing(self):
        pass                                # nothing is written before the session

    def resume_writing(self):
        pass


class _Proxied(ProxiedConnection, asyncio.BufferedProtocol):
    # The BufferedProtocol base: the selector loop's transports check it with
    # isinstance to read into get_buffer() (see netcore/__init__.py).
    __slots__ = ()


cdef class ClientService(Service):
    """Dials `count` sessions to one server, as the original DummyClient did.

    Arguments: session_factory, host ("127.0.0.1"), port (7777), count (1),
    then by keyword connect_concurrency (100: start() connects at most that
    many at a time) and any of Service's limits.
    """

    def __init__(self, session_factory, str host="127.0.0.1", int port=7777,
                 Py_ssize_t count=1, *, Py_ssize_t connect_concurrency=100,
                 str transport="tcp", **limits):
        """transport: "tcp", or "ws" to speak the same packets in binary
        WebSocket messages to a netcore WebSocketListener."""
        super().__init__(session_factory, max_sessions=max(count, 1), **limits)
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be 'tcp' or 'ws', not {transport!r}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if connect_concurrency < 1:
            raise ValueError("connect_concurrency must be >= 1")
        self.host = host
        self.port = port
        self.count = count
        self.connect_concurrency = connect_concurrency
        self.failures = []
        self.transport = transport

    async def connect_one(self):
        """Dial one more session; returns it (OSError when it cannot connect)."""
        if self.transport == "ws":
            from netcore.websocket import connect_websocket
            return await connect_websocket(self._make_session, self.host, self.port)
        loop = asyncio.get_running_loop()
        _, session = await loop.create_connection(self.new_session, self.host, self.port)
        return session

    def _make_session(self):
        return self.new_session()

    async def start(self):
        """Connect every session (at most connect_concurrency in flight).

        Connections that fail are recorded in `failures`; returns the sessions.
        """
        sem = asyncio.Semaphore(self.connect_concurrency)
        reserve_descriptors(self.count + _HEADROOM)     # as ServerService.start
        self.start_sweeping(asyncio.get_running_loop())
        # A method, not a closure: a Cython coroutine's locals live in a scope
        # object that a nested function would hold while being held by it, a
        # reference cycle keeping every session of `results` alive.
        results = await asyncio.gather(*[self._connect_within(sem) for _ in range(self.count)])
        return [s for s in results if s is not None]

    async def _connect_within(self, sem):
        async with sem:
            try:
                return await self.connect_one()
            except OSError as exc:
                self.failures.append(exc)
                return None

    async def close(self, reason=DisconnectReason.CLOSED, float timeout=5.0):
        """Deliver what is queued and close every session."""
        self.stop_sweeping()
        await self.close_sessions(reason, timeout)

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()
