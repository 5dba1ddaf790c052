# Services own sessions: ServerService accepts them, ClientService dials them
# (the DummyClient's side). Both keep a registry, apply the limits every
# session of theirs runs with, and share one SendFlusher so that all their
# sessions flush in a single callback per event-loop iteration.
#
# Deadlines (login_timeout, idle_timeout) cost no timer per session: one sweep
# per service, every timeout / SWEEP_DIVISIONS (clamped to MIN..MAX_SWEEP_MS),
# walks the session dict in C comparing int64 stamps the receive path already
# keeps. Measured: 8,000 sessions in 80-110 us (10-14 ns each), so 20,000 idle
# connections cost about 0.3 ms a second. A session is closed between its
# deadline and one sweep interval after it. A timer per session would be a
# heap entry and a handle object each, plus a cancel and re-arm per packet for
# the idle timeout; a timer wheel would save the walk, which is not worth its
# bookkeeping at these sizes.
#
# Out of file descriptors (EMFILE/ENFILE) at accept, as measured on 3.11:
# - uvloop: libuv keeps a spare descriptor; when accept fails it closes the
#   spare, accepts and closes every pending connection, and reopens it. The
#   clients see their connection closed; the listener carries on.
# - asyncio's selector loop means to log the error and pause accepting for a
#   second, but does so without leaving its accept loop (CPython gh-151615):
#   with a backlog of 4096, one wakeup logs 4096 tracebacks and schedules 4096
#   restarts, each of which does the same. We measured 85,000 tracebacks in
#   10 s, and a fresh client waited 8 s after the storm was over.
# So ServerService binds its own listening sockets (ListenSocket in
# service.pyx), whose accept() does what libuv does. On both loops a
# connection that cannot get a descriptor is closed at once, nothing spins,
# and the log says how many were shed, at most once a second. (uvloop never
# calls the Python accept(), so it keeps no second spare.) One shedding pass
# closes at most SHED_BATCH connections: under a connect flood the backlog
# refills as fast as it is emptied, and a pass that ran until it was empty
# would hold the event loop for as long as the flood lasts. What it leaves
# keeps the socket readable, so the loop returns to it after one iteration
# of serving everything else.

#
# Per source address (netcore.addresses: an IPv4 address or an IPv6 /64;
# exempt networks, loopback by default, are not counted), at most
# max_sessions_per_address sessions: a further one is aborted at once as
# ADDRESS_FULL, so one host cannot take every slot of max_sessions. The count
# is a dict keyed by address, updated at connect and at close: a getpeername
# per connection, nothing per packet. The address parse (the ipaddress
# module, ~5 us) is cached per host string (address_keys, cleared past
# ADDRESS_KEY_CACHE entries), so a login storm from one network parses once.
#
# TCP keepalive on accepted sockets (keepalive_idle seconds of silence, then
# KEEPALIVE_PROBES probes keepalive_interval apart): a peer that vanished
# without a FIN or RST (a pulled cable, a NAT that forgot the flow) is found
# and its session ended as a connection error after idle + probes * interval
# seconds, instead of holding its slot for the kernel's default two hours.
# On Linux the options are set once, on the listening sockets: an accepted
# socket inherits SO_KEEPALIVE and the TCP_KEEP* values from its listener,
# so a connection costs no setsockopt at all (four per connection were 5% of
# a login storm's server time). Elsewhere, and for a connection the service
# did not accept from its own listener, setsockopt on the session's
# descriptor from C (through the transport's socket object it cost a socket
# object and a getsockname per connection, 13% of a login storm).
# A live but silent client answers the probes and stays; that is the idle
# timeout's business.
#
# max_pending_bytes_total bounds the bytes queued in all sessions together;
# see SendFlusher in session.pxd for who is cut off past it.
#
# Listening sockets per address (ServerService listen_sockets). libuv, under
# uvloop, accepts one connection per listening socket per loop iteration
# (libuv PR 3696: the common case is one pending connection, and the second
# accept() of a loop fails with EAGAIN). In a login storm that makes every
# connection cost a whole iteration: a poll, a flush pass, a wake-up of the
# peer. So on Linux under uvloop a service listens with a group of
# DEFAULT_LISTEN_SOCKETS sockets on one port (SO_REUSEPORT: the kernel spreads
# the connections over them), and one iteration accepts up to that many (the
# login storm: 12,100-12,600 logins + enters a second with one socket,
# 18,400-20,200 with 8 to 64). A port the service owns alone stays its own: a
# plain bind is tried first, so a second server on that port fails as before
# (reuse_port=True, the workers' shared port, skips that check). The selector
# loop accepts up to its backlog per readiness already and gets one socket,
# and so does netcore's own acceptor (tcp_transport "netcore", the default
# under uvloop on Linux: see tcp.pxd), which takes every pending connection.

from cpython.time cimport PyTime_t

from netcore.proxy cimport HeaderReader, NetworkSet
from netcore.session cimport SendFlusher, Session
from netcore.stats cimport PacketStats

cdef enum:
    DEFAULT_MAX_SESSIONS = 20000
    SWEEP_DIVISIONS = 8
    MIN_SWEEP_MS = 10
    MAX_SWEEP_MS = 1000
    SHED_LOG_INTERVAL_MS = 1000
    SHED_BATCH = 128            # connections closed per shedding pass (see above)
    KEEPALIVE_PROBES = 3
    MAX_KEEPALIVE_S = 32767
    ABORT_WAIT_MS = 1000        # close_sessions: for aborted stragglers to be gone
    ADDRESS_KEY_CACHE = 4096    # host strings whose address key is remembered
    DEFAULT_LISTEN_SOCKETS = 16 # per address, under uvloop on Linux (see above)
    MAX_LISTEN_SOCKETS = 64


cdef class Service:
    cdef readonly dict sessions             # session_id -> Session
    cdef readonly object session_factory
    cdef readonly Py_ssize_t max_sessions
    cdef readonly Py_ssize_t max_packet_size
    cdef readonly Py_ssize_t max_pending_bytes
    cdef readonly double packet_rate        # per session, packets/s; 0: no limit
    cdef readonly Py_ssize_t packet_burst
    cdef readonly double login_timeout      # seconds; 0: none
    cdef readonly double idle_timeout       # seconds; 0: none
    cdef readonly unsigned long long rejected
    cdef readonly Py_ssize_t max_packets_per_read    # per session per read; 0: no cap
    cdef readonly PacketStats packet_stats  # packets and bytes in and out, by id
    cdef readonly dict disconnects          # reason text -> sessions ended so
    cdef readonly double flush_interval_ms
    cdef readonly Py_ssize_t max_pending_bytes_total    # all sessions together; 0: no bound
    cdef readonly Py_ssize_t max_sessions_per_address   # 0: no cap
    cdef readonly tuple exempt_networks     # not counted per address
    cdef readonly dict address_sessions     # address key -> sessions open from it
    cdef dict address_keys                  # host string -> its address key (a cache)
    cdef readonly unsigned long long rejected_by_address
    # Connections accepted that are no session yet but hold a descriptor (a
    # trusted proxy's, reading its PROXY header): counted with the sessions
    # against max_sessions.
    cdef Py_ssize_t waiting
    cdef readonly double keepalive_idle     # seconds; 0: no keepalive
    cdef readonly double keepalive_interval
    # Every listener of this service has the keepalive options: its accepted
    # sockets inherit them (Linux), nothing to set per connection.
    cdef readonly bint keepalive_inherited
    cdef PyTime_t login_timeout_ns
    cdef PyTime_t idle_timeout_ns
    cdef object loop
    cdef object sweep_handle
    cdef readonly double sweep_interval     # seconds between sweeps; 0 when there is none
    cdef SendFlusher flusher
    cdef object new_session(self)
    cdef object address_key_of(self, Session s)
    cdef object address_key_for(self, object peer)
    cdef SendFlusher make_flusher(self, object loop)
    cdef int start_sweeping(self, object loop) except -1
    cdef void stop_sweeping(self) noexcept


cdef class ProxiedConnection                 # below: a trusted proxy's connection, header first


cdef class ServerService(Service):
    cdef readonly str host
    cdef readonly int port
    cdef readonly int backlog
    cdef readonly bint reuse_port           # SO_REUSEPORT: workers of one machine share the port
    cdef readonly int listen_sockets        # per address; 0 until started when left to choose
    # Whose transports carry the accepted connections: "netcore" (netcore.tcp)
    # or "loop"; "auto" until started (see tcp.pxd).
    cdef readonly str tcp_transport
    cdef list servers                       # per listening socket: an asyncio Server or a TcpAcceptor
    cdef object poller                      # netcore.tcp's: its connections' epoll set
    # Other listeners making sessions of this service (netcore.websocket's
    # WebSocketListener): stopped and waited for with the service's own.
    cdef readonly list listeners
    # Proxies whose connections begin with a PROXY header (proxy.pxd): None
    # when there are none (the default), and then no accept path looks further.
    cdef readonly NetworkSet trusted_proxies
    cdef readonly double proxy_header_timeout   # seconds; then closed as "timeout"
    cdef set proxied                        # ProxiedConnections still reading their header
    cdef readonly dict proxy_header_failures    # reason (proxy.REASONS) -> connections closed so
    cdef bint stopped                       # stop_accepting(): no header now makes a session
    cdef int proxy_begin(self, ProxiedConnection c) except -1
    cdef void proxy_end(self, ProxiedConnection c) noexcept
    cdef int proxy_failed(self, str reason, str detail, object peer) except -1


# A connection from a trusted proxy until its PROXY header has been read
# (proxy.pxd): a session is made only then, its peername the client's, and
# the bytes after the header in the same read are the session's first. Under
# the loop's transports the trust is checked here, at connection_made (the
# loop makes the protocol before it says who the peer is): a connection from
# anyone else is handed to a session at once, unread. Until it is a session
# it counts against max_sessions (with the sessions), so that connections
# that never send their header cannot take more descriptors than sessions
# could; proxy_header_timeout bounds how long each waits.
cdef class ProxiedConnection(HeaderReader):
    cdef ServerService service
    cdef bint checked                       # the acceptor found the peer trusted already
    cdef bint waiting                       # in service.proxied
    cdef object timer                       # the header's deadline
    cdef int hand_over(self, object peername, const unsigned char* rest,
                       Py_ssize_t n) except -1
    cdef int end(self, str reason, str detail, bint abort) except -1


cdef class ClientService(Service):
    cdef readonly str host
    cdef readonly int port
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t connect_concurrency
    cdef readonly list failures
    cdef readonly str transport             # "tcp", or "ws" (netcore.websocket)
