# cython: language_level=3
"""netcore's own TCP path for accepted connections (see tcp.pxd)."""
import errno
import logging
import os
import socket
from asyncio.trsock import TransportSocket

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.errno cimport errno as c_errno

from netcore.proxy cimport NetworkSet

cdef extern from *:
    """
    #ifdef __linux__
    #include <sys/socket.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #include <unistd.h>
    #include <errno.h>
    typedef struct sockaddr_storage netcore_sockaddr;
    #define NETCORE_TCP 1
    static int netcore_accept(int fd, netcore_sockaddr *a) {
        socklen_t len = sizeof *a;
        int r;
        do r = accept4(fd, (struct sockaddr *)a, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        while (r < 0 && errno == EINTR);
        return r;
    }
    static Py_ssize_t netcore_recv(int fd, char *p, Py_ssize_t n) {
        Py_ssize_t r;
        do r = recv(fd, p, (size_t)n, 0); while (r < 0 && errno == EINTR);
        return r;
    }
    static Py_ssize_t netcore_send(int fd, const char *p, Py_ssize_t n) {
        Py_ssize_t r;
        do r = send(fd, p, (size_t)n, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
        return r;
    }
    static int netcore_shutdown_write(int fd) { return shutdown(fd, SHUT_WR); }
    static int netcore_close(int fd) { return close(fd); }
    static int netcore_sockname(int fd, netcore_sockaddr *a) {
        socklen_t len = sizeof *a;
        return getsockname(fd, (struct sockaddr *)a, &len);
    }
    #include <sys/epoll.h>
    #define NETCORE_IN EPOLLIN
    #define NETCORE_OUT EPOLLOUT
    #define NETCORE_ERR (EPOLLERR | EPOLLHUP)
    typedef struct epoll_event netcore_event;
    static int netcore_poller_new(void) { return epoll_create1(EPOLL_CLOEXEC); }
    /* op: 0 add, 1 modify, 2 delete */
    static int netcore_poller_set(int epfd, int op, int fd, unsigned events, void *ptr) {
        struct epoll_event ev;
        ev.events = events;
        ev.data.ptr = ptr;
        return epoll_ctl(epfd, op == 0 ? EPOLL_CTL_ADD : op == 1 ? EPOLL_CTL_MOD : EPOLL_CTL_DEL,
                         fd, &ev);
    }
    static int netcore_poller_wait(int epfd, netcore_event *evs, int n) {
        int r;
        do r = epoll_wait(epfd, evs, n, 0); while (r < 0 && errno == EINTR);
        return r;
    }
    static unsigned netcore_event_mask(netcore_event *evs, int i) { return evs[i].events; }
    static void *netcore_event_ptr(netcore_event *evs, int i) { return evs[i].data.ptr; }
    /* The peer's address as the socket module gives it: 4 (host, port) or
       6 (host, port, flowinfo, scope_id); 0 for another family. */
    static int netcore_address(const netcore_sockaddr *a, char *host, size_t hostlen,
                               unsigned *port, unsigned *flowinfo, unsigned *scope_id) {
        if (a->ss_family == AF_INET) {
            const struct sockaddr_in *in4 = (const struct sockaddr_in *)a;
            if (!inet_ntop(AF_INET, &in4->sin_addr, host, hostlen)) return 0;
            *port = ntohs(in4->sin_port);
            return 4;
        }
        if (a->ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
            if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, hostlen)) return 0;
            *port = ntohs(in6->sin6_port);
            *flowinfo = ntohl(in6->sin6_flowinfo);
            *scope_id = in6->sin6_scope_id;
            return 6;
        }
        return 0;
    }
    #else
    /* Elsewhere ServerService keeps the loop's transports (tcp.AVAILABLE). */
    #include <errno.h>
    typedef struct { char bytes[128]; } netcore_sockaddr;
    #define NETCORE_TCP 0
    static int netcore_accept(int fd, netcore_sockaddr *a) {
        (void)fd; (void)a; errno = ENOSYS; return -1;
    }
    static Py_ssize_t netcore_recv(int fd, char *p, Py_ssize_t n) {
        (void)fd; (void)p; (void)n; errno = ENOSYS; return -1;
    }
    static Py_ssize_t netcore_send(int fd, const char *p, Py_ssize_t n) {
        (void)fd; (void)p; (void)n; errno = ENOSYS; return -1;
    }
    static int netcore_shutdown_write(int fd) { (void)fd; errno = ENOSYS; return -1; }
    static int netcore_close(int fd) { (void)fd; errno = ENOSYS; return -1; }
    static int netcore_sockname(int fd, netcore_sockaddr *a) {
        (void)fd; (void)a; errno = ENOSYS; return -1;
    }
    #define NETCORE_IN 1
    #define NETCORE_OUT 4
    #define NETCORE_ERR 24
    typedef struct { unsigned events; void *ptr; } netcore_event;
    static int netcore_poller_new(void) { errno = ENOSYS; return -1; }
    static int netcore_poller_set(int epfd, int op, int fd, unsigned events, void *ptr) {
        (void)epfd; (void)op; (void)fd; (void)events; (void)ptr; errno = ENOSYS; return -1;
    }
    static int netcore_poller_wait(int epfd, netcore_event *evs, int n) {
        (void)epfd; (void)evs; (void)n; errno = ENOSYS; return -1;
    }
    static unsigned netcore_event_mask(netcore_event *evs, int i) { return evs[i].events; }
    static void *netcore_event_ptr(netcore_event *evs, int i) { return evs[i].ptr; }
    static int netcore_address(const netcore_sockaddr *a, char *host, size_t hostlen,
                               unsigned *port, unsigned *flowinfo, unsigned *scope_id) {
        (void)a; (void)host; (void)hostlen; (void)port; (void)flowinfo; (void)scope_id;
        return 0;
    }
    #endif
    """
    ctypedef struct netcore_sockaddr:
        pass
    int NETCORE_TCP
    int netcore_accept(int fd, netcore_sockaddr* a) nogil
    Py_ssize_t netcore_recv(int fd, char* p, Py_ssize_t n) nogil
    Py_ssize_t netcore_send(int fd, const char* p, Py_ssize_t n) nogil
    int netcore_shutdown_write(int fd) nogil
    int netcore_close(int fd) nogil
    int netcore_sockname(int fd, netcore_sockaddr* a) nogil
    int netcore_address(const netcore_sockaddr* a, char* host, size_t hostlen,
                        unsigned* port, unsigned* flowinfo, unsigned* scope_id) nogil
    ctypedef struct netcore_event:
        pass
    unsigned NETCORE_IN, NETCORE_OUT, NETCORE_ERR
    int netcore_poller_new() nogil
    int netcore_poller_set(int epfd, int op, int fd, unsigned events, void* ptr) nogil
    int netcore_poller_wait(int epfd, netcore_event* evs, int n) nogil
    unsigned netcore_event_mask(netcore_event* evs, int i) nogil
    void* netcore_event_ptr(netcore_event* evs, int i) nogil

log = logging.getLogger("netcore.tcp")

AVAILABLE = bool(NETCORE_TCP)
"""Whether this platform has netcore's TCP path (Linux)."""

cdef int EAGAIN = errno.EAGAIN
cdef int EWOULDBLOCK = errno.EWOULDBLOCK
cdef tuple _OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
# A connection reset or aborted before accept: the next one is still there.
cdef tuple _ACCEPT_SKIP = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM)


cdef inline bint _would_block(int err) noexcept:
    return err == EAGAIN or err == EWOULDBLOCK


cdef object _strerror(int err):
    return os.strerror(err)


cdef object _os_error(int err):
    """The OSError subclass for errno `err` (ConnectionResetError, ...)."""
    return OSError(err, os.strerror(err))


cdef object _address(netcore_sockaddr* a):
    cdef char host[64]
    cdef unsigned port = 0, flowinfo = 0, scope_id = 0
    cdef int kind = netcore_address(a, host, sizeof(host), &port, &flowinfo, &scope_id)
    if kind == 4:
        return (host.decode("ascii"), port)
    if kind == 6:
        return (host.decode("ascii"), port, flowinfo, scope_id)
    return None


cdef int _fatal(TcpTransport t, exc) except -1:
    # As asyncio's transports: a fault in a callback ends this connection only.
    log.error("connection %r: %r", t, exc, exc_info=exc)
    t.fail(exc)
    return 0


def _poll_ready(TcpPoller p):
    # A module function given its object, never a bound method kept by the
    # loop: no reference cycle outlives the poller (see netcore.loop).
    p.dispatch()


cdef class TcpPoller:
    """The connections' readiness, in an epoll set of netcore's own that the
    loop watches as one descriptor (see tcp.pxd)."""

    def __cinit__(self):
        self.epfd = -1

    def __init__(self, loop, int batch=POLL_BATCH):
        """batch: events per epoll_wait (tests make it small)."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.loop = loop
        self.batch = batch
        self.epfd = netcore_poller_new()
        if self.epfd < 0:
            raise _os_error(c_errno)
        self.events = PyMem_Malloc(batch * sizeof(netcore_event))
        if self.events == NULL:
            netcore_close(self.epfd)
            self.epfd = -1
            raise MemoryError()
        self.retired = []
        loop.add_reader(self.epfd, _poll_ready, self)

    def __dealloc__(self):
        PyMem_Free(self.events)
        if self.epfd >= 0:
            netcore_close(self.epfd)

    def close(self):
        """Stop watching: connections still registered are told nothing more
        (call it once they have ended)."""
        if self.epfd >= 0 and not self.closed:
            self.closed = True
            self.loop.remove_reader(self.epfd)

    cdef int watch(self, TcpTransport t) except -1:
        """Register what t waits for now: reading, writing, both or neither.
        Neither takes it out of the set: a connection that is not read is
        not watched for errors either (as with the loop's transports), and a
        level-triggered error on it would otherwise spin."""
        cdef unsigned want = (NETCORE_IN if t.reading else 0) | (NETCORE_OUT if t.writing else 0)
        cdef int op
        if want == t.events or self.epfd < 0 or t.fd < 0:
            return 0
        if want == 0 and t.lost_scheduled and t.sock is None:
            # Closing for good: close() of its only descriptor, a loop turn
            # from now and before the next poll, takes it out of the set
            # (forget() drops the reference then); a delete now would be a
            # system call per connection for nothing. Its events meanwhile
            # are ignored: it neither reads nor writes.
            return 0
        op = 0 if t.events == 0 else 2 if want == 0 else 1
        # A failed delete still takes it out (the kernel drops a closed
        # descriptor by itself): the set's reference must go either way.
        if netcore_poller_set(self.epfd, op, t.fd, want, <void*>t) < 0 and op != 2:
            raise _os_error(c_errno)
        if op == 0:
            Py_INCREF(t)                # the set's reference, for the event's pointer
        elif op == 2:
            if self.dispatching:        # events of this batch may still name it
                self.retired.append(t)
            Py_DECREF(t)
        t.events = want
        return 0

    cdef int forget(self, TcpTransport t) except -1:
        """t's descriptor was closed (no duplicate of it): the kernel took it
        out of the set; drop the set's reference."""
        if t.events:
            t.events = 0
            if self.dispatching:
                self.retired.append(t)
            Py_DECREF(t)
        return 0

    cdef int dispatch(self) except -1:
        """Every connection event there is, up to POLL_ROUNDS full batches:
        a loop iteration that takes long (a fan-out to thousands) must read
        everything that arrived meanwhile, or reads fall behind for good."""
        cdef int i, n, rounds
        for rounds in range(POLL_ROUNDS):
            n = netcore_poller_wait(self.epfd, <netcore_event*>self.events, self.batch)
            if n < 0:
                raise _os_error(c_errno)
            # Not full, or nothing in it to do (connections closing for good
            # stay in the set until their close, their events ignored).
            if self.dispatch_batch(n) == 0 or n < self.batch:
                break
        return 0

    cdef int dispatch_batch(self, int n) except -1:
        """Handle n events; returns how many were for a reader or a writer."""
        cdef int i, handled = 0
        cdef unsigned mask
        cdef TcpTransport t
        self.dispatching = True
        try:
            for i in range(n):
                mask = netcore_event_mask(<netcore_event*>self.events, i)
                t = <TcpTransport>netcore_event_ptr(<netcore_event*>self.events, i)
                try:
                    if t.reading and mask & (NETCORE_IN | NETCORE_ERR):
                        handled += 1
                        t.read_ready()
                    if t.writing and mask & (NETCORE_OUT | NETCORE_ERR):
                        handled += 1
                        t.write_ready()
                except Exception as exc:
                    _fatal(t, exc)
        finally:
            self.dispatching = False
            if self.retired:
                self.retired = []
        return handled


def _call_connection_lost(TcpTransport t, exc):
    protocol = t.protocol
    try:
        if protocol is not None:
            protocol.connection_lost(exc)
    finally:
        t.reading = t.writing = False
        if t.events and t.sock is not None:
            # A duplicate descriptor (get_extra_info("socket")) keeps the
            # connection open past our close: out of the set explicitly.
            t.lost_scheduled = False
            t.poller.watch(t)
        # Only now: until connection_lost has run, the session may still
        # hold this number as its descriptor.
        if t.fd >= 0:
            netcore_close(t.fd)
            t.fd = -1
        t.poller.forget(t)
        if t.sock is not None:
            t.sock.close()
            t.sock = None
        t.protocol = None
        t.loop = None
        t.poller = None


cdef class TcpTransport:
    """One accepted connection (see tcp.pxd): the asyncio.Transport calls a
    netcore Session makes, over a non-blocking socket descriptor it owns."""

    def __init__(self):
        raise TypeError("TcpTransport is made by TcpAcceptor for each accepted connection")

    def __dealloc__(self):
        if self.fd >= 0:            # never reached connection_lost (not in the set then)
            netcore_close(self.fd)

    def __cinit__(self):
        self.fd = -1
        self.pending = bytearray()
        self.high_water = DEFAULT_HIGH_WATER
        self.low_water = DEFAULT_HIGH_WATER // 4

    def __repr__(self):
        state = "closing" if self.closing else "open"
        return f"<TcpTransport fd={self.fd} {state} peer={self.peername!r}>"

    # -- reading -----------------------------------------------------------

    cdef int start_reading(self) except -1:
        if not self.reading and not self.closing and not self.read_eof:
            self.reading = True
            try:
                self.poller.watch(self)
            except BaseException:
                self.reading = False        # not registered: a later call tries again
                raise
        return 0

    cdef int stop_reading(self) except -1:
        if self.reading:
            self.reading = False
            self.poller.watch(self)
        return 0

    cdef int read_ready(self) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t n
        cdef int err = 0
        if self.closing or not self.reading:
            return 0
        buf = self.protocol.get_buffer(-1)
        PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
        try:
            if view.len == 0:
                raise RuntimeError("get_buffer() returned an empty buffer")
            n = netcore_recv(self.fd, <char*>view.buf, view.len)
            if n < 0:
                err = c_errno
        finally:
            PyBuffer_Release(&view)
        if n > 0:
            self.protocol.buffer_updated(n)
        elif n == 0:
            self.read_eof = True
            self.reading = False
            if not self.protocol.eof_received():
                self.close()
            # Out of the set, or writing only; the usual end (closed, nothing
            # left to send) costs no call: its close takes it out.
            self.poller.watch(self)
        elif not _would_block(err):
            self.fail(_os_error(err))
        return 0

    def pause_reading(self):
        self.stop_reading()

    def resume_reading(self):
        self.start_reading()

    def is_reading(self):
        return self.reading

    # -- writing -----------------------------------------------------------

    def write(self, data):
        cdef Py_buffer view
        cdef Py_ssize_t n = 0
        cdef int err = 0
        if self.eof_written or self.eof_pending:
            raise RuntimeError("cannot call write() after write_eof()")
        if self.lost_scheduled:
            return          # as asyncio's once the connection is lost: dropped
        # (after close() with bytes still buffered, these follow them, as asyncio's)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return
            if PyByteArray_GET_SIZE(self.pending) == 0:
                n = netcore_send(self.fd, <const char*>view.buf, view.len)
                if n < 0:
                    err = c_errno
                    if not _would_block(err):
                        self.fail(_os_error(err))
                        return
                    n = 0
                if n == view.len:
                    return
            self.pending += (<const char*>view.buf)[n:view.len]
        finally:
            PyBuffer_Release(&view)
        if not self.writing:
            self.writing = True
            try:
                self.poller.watch(self)
            except BaseException:
                self.writing = False
                raise
        self.check_pause()

    def writelines(self, list_of_data):
        for data in list_of_data:
            self.write(data)

    cdef int check_pause(self) except -1:
        if not self.protocol_paused and PyByteArray_GET_SIZE(self.pending) > self.high_water:
            self.protocol_paused = True
            self.protocol.pause_writing()
        return 0

    cdef int send_pending(self) except -1:
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self.pending)
        cdef Py_ssize_t n = netcore_send(self.fd, PyByteArray_AS_STRING(self.pending), size)
        cdef int err
        if n < 0:
            err = c_errno
            if not _would_block(err):
                self.fail(_os_error(err))
            return 0
        if n:
            del self.pending[:n]
        return 0

    cdef int write_ready(self) except -1:
        if self.fd < 0 or not self.writing:
            return 0
        self.send_pending()
        if self.fd < 0 or self.lost_scheduled:
            return 0
        if PyByteArray_GET_SIZE(self.pending):
            if self.protocol_paused and PyByteArray_GET_SIZE(self.pending) <= self.low_water:
                self.protocol_paused = False
                self.protocol.resume_writing()
            return 0
        self.writing = False
        if self.closing:
            self.schedule_lost(None)        # first: then leaving the set costs no call
        self.poller.watch(self)
        if self.protocol_paused:
            self.protocol_paused = False
            if not self.closing:
                self.protocol.resume_writing()
        if self.eof_pending and not self.closing:
            self.eof_pending = False
            self.eof_written = True
            netcore_shutdown_write(self.fd)
        return 0

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self.eof_written or self.eof_pending or self.closing:
            return
        if PyByteArray_GET_SIZE(self.pending):
            self.eof_pending = True
        else:
            self.eof_written = True
            netcore_shutdown_write(self.fd)

    def get_write_buffer_size(self):
        return PyByteArray_GET_SIZE(self.pending)

    def get_write_buffer_limits(self):
        return (self.low_water, self.high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        # asyncio's rule: high defaults to 64 KiB, or to 4 * low; low to high / 4.
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high_water = high
        self.low_water = low
        self.check_pause()

    # -- closing -------------------------------------------------------------

    def is_closing(self):
        return self.closing

    def close(self):
        """Stop reading; end the connection once what is buffered is sent."""
        if self.closing:
            return
        self.closing = True
        if not PyByteArray_GET_SIZE(self.pending):
            self.schedule_lost(None)        # first: then leaving the set costs no call
        self.stop_reading()

    def abort(self):
        """End the connection now; what is buffered is dropped."""
        self.fail(None)

    cdef int fail(self, object exc) except -1:
        self.closing = True
        self.reading = self.writing = False
        del self.pending[:]
        self.schedule_lost(exc)             # first: then leaving the set costs no call
        if self.poller is not None:         # None once connection_lost has run
            self.poller.watch(self)
        return 0

    cdef int schedule_lost(self, object exc) except -1:
        if not self.lost_scheduled and self.fd >= 0:
            self.lost_scheduled = True
            self.loop.call_soon(_call_connection_lost, self, exc)
        return 0

    # -- the rest of asyncio.Transport ---------------------------------------------

    def get_extra_info(self, name, default=None):
        cdef netcore_sockaddr addr
        if name == "peername":
            return self.peername
        if self.fd < 0:
            return default
        if name == "sockname":
            if netcore_sockname(self.fd, &addr) < 0:
                return default
            return _address(&addr)
        if name == "socket":
            if self.sock is None:
                # A socket object of its own, on a duplicate descriptor of
                # the same connection (setsockopt and getsockname act on the
                # connection; closing it closes only the duplicate), wrapped
                # as asyncio wraps its own: it cannot be made blocking.
                self.sock = socket.socket(fileno=_dup(self.fd))
            return TransportSocket(self.sock)
        return default

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol


cdef int _dup(int fd) except -1:
    return os.dup(fd)


def _accept_ready(TcpAcceptor a):
    a.accept_ready()


def _resume_accepting(TcpAcceptor a):
    if a.serving:
        a.loop.add_reader(a.fd, _accept_ready, a)


cdef class TcpAcceptor:
    """Accepts on one listening socket and makes a TcpTransport and a
    protocol (protocol_factory()) per connection. close(), is_serving() and
    wait_closed() as asyncio.Server's. With `trusted` (a proxy.NetworkSet),
    a connection from one of its networks gets its protocol from `proxied`
    instead (see tcp.pxd)."""

    def __init__(self, loop, TcpPoller poller not None, sock, protocol_factory, int backlog, *,
                 NetworkSet trusted=None, proxied=None):
        if trusted is not None and proxied is None:
            raise ValueError("trusted proxies need a protocol factory of their own (proxied)")
        self.loop = loop
        self.poller = poller
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol_factory = protocol_factory
        self.trusted = trusted
        self.proxied = proxied
        sock.setblocking(False)
        # Inherited by every accepted socket (Linux): no setsockopt per connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(backlog)
        loop.add_reader(self.fd, _accept_ready, self)
        self.serving = True

    cdef int accept_ready(self) except -1:
        cdef netcore_sockaddr addr
        cdef int fd, err, i
        cdef TcpTransport t
        for i in range(ACCEPT_BATCH):
            if not self.serving:
                return 0
            fd = netcore_accept(self.fd, &addr)
            if fd < 0:
                err = c_errno
                if _would_block(err):
                    return 0
                if err in _ACCEPT_SKIP:
                    continue
                if err in _OUT_OF_FDS:
                    self.sock._shed_pending()       # service.ListenSocket: as libuv does
                    return 0
                # ENOBUFS, ENOMEM...: the listener stays readable, so pause
                # accepting a second rather than spin, as asyncio does.
                log.error("accept on %s failed: %s; accepting again in %g s",
                          self.sock.getsockname(), _strerror(err), ACCEPT_PAUSE_MS / 1000.0)
                self.loop.remove_reader(self.fd)
                self.loop.call_later(ACCEPT_PAUSE_MS / 1000.0, _resume_accepting, self)
                return 0
            t = TcpTransport.__new__(TcpTransport)
            t.loop = self.loop
            t.poller = self.poller
            t.fd = fd
            t.peername = _address(&addr)
            try:
                if self.trusted is not None and self.trusted.contains_sockaddr(<const void*>&addr):
                    t.protocol = self.proxied()
                else:
                    t.protocol = self.protocol_factory()
                # Registered first: a pause_reading() in connection_made holds.
                t.start_reading()
                t.protocol.connection_made(t)
            except Exception as exc:
                log.exception("a new connection could not be set up")
                t.fail(exc)
        return 0

    def close(self):
        if self.serving:
            self.serving = False
            self.loop.remove_reader(self.fd)
            self.sock.close()

    def is_serving(self):
        return self.serving

    async def wait_closed(self):
        return None

    @property
    def sockets(self):
        return (self.sock,) if self.serving else ()
