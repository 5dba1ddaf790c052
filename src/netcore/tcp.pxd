# netcore's own TCP path for accepted connections: TcpAcceptor accepts, a
# TcpTransport carries each connection to its protocol (a netcore Session).
#
# Why not the loop's transports. A login storm is a connection per login, and
# under uvloop each costs a TCPTransport and its stream handle, the
# connection_made call deferred a loop turn, a getsockname and a getpeername
# (uvloop keeps both addresses for after the close), a setsockopt for
# TCP_NODELAY, and one accept per listening socket per loop turn (libuv). The
# login storm measured uvloop's own connection path at most of the gap to the
# C server (benchmarks/README.md). Here a connection costs what the C server
# pays: an accept4 (batched: every pending connection of a readiness, up to
# ACCEPT_BATCH), an epoll_ctl, a recv per read, and close.
# TCP_NODELAY and the keepalive options are set once, on the listening
# socket: Linux copies both into every accepted socket. The peer's address
# comes with accept4 and becomes a tuple only when asked for.
#
# The transport is the asyncio.Transport subset a Session uses, with the
# same semantics as the selector loop's: write() sends at once what the
# kernel takes and buffers the rest (the loop's writer callback sends it;
# pause_writing()/resume_writing() around the high/low water marks);
# close() stops reading and ends the connection once the buffer is sent;
# abort() ends it now; write_eof() shuts the sending side down after the
# buffer; connection_lost() is called in a later loop turn, then the
# descriptor is closed, so that a number the session still holds never
# names another connection while the session can use it. A read reads once
# per readiness into the protocol's get_buffer() (asyncio.BufferedProtocol:
# no bytes object per read), and end of file calls eof_received(): false
# closes, true keeps the sending side open.
#
# Switch: ServerService(tcp_transport=...) and netcore-server --tcp-transport:
# "netcore" (this), "loop" (the event loop's create_server transports), or
# "auto", this one under uvloop on Linux and the loop's elsewhere. Linux
# only (accept4, and inheritance of the listener's options).

from netcore.proxy cimport NetworkSet

cdef enum:
    ACCEPT_BATCH = 128          # connections accepted per readiness of a listener
    POLL_BATCH = 1024           # connection events per epoll_wait of the poller
    POLL_ROUNDS = 16            # full batches handled per readiness (libuv: 48 of 1024)
    ACCEPT_PAUSE_MS = 1000      # after an accept error other than EAGAIN or EMFILE
    DEFAULT_HIGH_WATER = 65536  # as asyncio's transports; low = high / 4


# Readiness. The loop's own fd watchers will not do: uvloop's add_reader is a
# libuv poll handle, and libuv stops a poll handle for good when epoll reports
# EPOLLERR (a connection reset, say), without calling the reader (libuv's
# uv_poll_cb documents UV_EBADF: "polling is discontinued"); uvloop then
# closes the handle and logs, and the session would never hear of its end.
# So the connections live in an epoll set of netcore's own (TcpPoller), one
# per service, and the loop watches only that set's descriptor: readable
# when any connection has an event. One loop callback then handles every
# connection event in C (batches of POLL_BATCH, until one is not full, at
# most POLL_ROUNDS: an iteration that fans out to thousands takes long, and
# a cap below what arrives meanwhile lets reads fall behind for good), an
# error calling the reader (whose recv reports it) or the writer. The set is
# level-triggered, holds a connection only while it is read or written
# (paused and idle: out of the set, so an error on it cannot spin; one
# closing for good stays in until the close of its descriptor, a loop turn
# later, takes it out: no epoll_ctl to delete, as the C server does), and an
# event names its transport by pointer: the
# set holds a reference while registered, and a transport taken out during a
# batch is kept alive until the batch ends.
cdef class TcpPoller:
    cdef object loop
    cdef int epfd
    cdef void* events                   # `batch` epoll events
    cdef int batch                      # POLL_BATCH
    cdef bint closed                    # the loop no longer watches it
    cdef bint dispatching
    cdef list retired                   # taken out during this batch
    cdef int watch(self, TcpTransport t) except -1
    cdef int forget(self, TcpTransport t) except -1
    cdef int dispatch(self) except -1
    cdef int dispatch_batch(self, int n) except -1


cdef class TcpTransport:
    cdef object loop
    cdef TcpPoller poller
    cdef unsigned events                # what the poller watches for it now
    cdef readonly int fd
    cdef object protocol
    cdef bytearray pending              # what the kernel did not take yet, in order
    cdef Py_ssize_t high_water
    cdef Py_ssize_t low_water
    cdef bint reading                   # the loop's reader is registered
    cdef bint writing                   # the loop's writer is registered
    cdef bint read_eof                  # the peer half-closed: nothing more to read
    cdef bint closing                   # close() or abort(): connection_lost follows
    cdef bint lost_scheduled
    cdef bint eof_pending               # write_eof() waits for the buffer
    cdef bint eof_written
    cdef bint protocol_paused           # pause_writing() was called
    cdef readonly object peername
    cdef object sock                    # for get_extra_info("socket"), made on first use
    cdef int start_reading(self) except -1
    cdef int stop_reading(self) except -1
    cdef int read_ready(self) except -1
    cdef int write_ready(self) except -1
    cdef int send_pending(self) except -1
    cdef int fail(self, object exc) except -1
    cdef int schedule_lost(self, object exc) except -1
    cdef int check_pause(self) except -1


# Trusted proxies (proxy.pxd): a connection from one of their networks gets
# its protocol from `proxied` (the service's ProxiedConnection, which reads
# the PROXY header before any session exists), every other one from
# protocol_factory as before. The check is made once per accept, on the
# address accept4 gave, in C; with no trusted proxies (None) it is a pointer
# compare.
cdef class TcpAcceptor:
    cdef object loop
    cdef TcpPoller poller
    cdef object sock                    # the listening socket (service.ListenSocket)
    cdef int fd
    cdef object protocol_factory
    cdef NetworkSet trusted             # None: no proxy is trusted
    cdef object proxied                 # the protocol factory for their connections
    cdef bint serving
    cdef int accept_ready(self) except -1
