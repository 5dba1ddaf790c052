# WebSocket transport: the same sessions, packets and limits as TCP, carried
# in binary WebSocket messages (browsers, Unity WebGL, Godot web exports).
#
# picows does the WebSocket work (HTTP upgrade, frame parsing, masking) in
# C; pings we answer ourselves (below). We cimport its listener type, so
# picows calls our on_ws_frame through its C vtable and we read each payload
# in place, in its receive buffer (no copy, no Python object per frame).
#
# WsConnection is both the picows listener of one connection and the
# "transport" its netcore Session writes to: the Session calls write(),
# abort(), close(), write_eof(), pause_reading() and so on as it would on an
# asyncio transport, and never knows it is speaking WebSocket.
#
# Receive: each binary message carries one or more WHOLE packets (the TCP
# framing: 4-byte header, protobuf payload). The payload is parsed by the
# session's own C loop (PacketSession.process over a FrameReader pointed at
# the message), so packet size, rate limit, max_packets_per_read, the login
# and idle deadlines and every handler see exactly what TCP gives them.
# A read capped by max_packets_per_read keeps the rest of the message (and of
# any later message picows delivers from the same socket read) in the
# session's RecvBuffer and pauses reading, as TCP does.
#
# Send: the session's SendFlusher joins its queue once per loop iteration as
# for TCP; write() sends that as ONE binary message (picows writes header and
# payload with one send() when the socket has room). The session's direct
# sendmsg path is off for it (get_extra_info("framing")): raw packets on the
# socket would break the WebSocket stream. Write back-pressure
# (pause_writing/resume_writing) comes through picows to the session.
#
# Closing: every ending has a close code and a reason text (the session's
# DisconnectReason and detail; docs/protocol.md has the table). A graceful
# close sends the close frame and keeps reading until the peer answers with
# its own, for at most the session's linger (as TCP's FIN does); an abort
# sends the close frame and drops the connection at once. WebSocket-level
# faults (a text frame, a message over max_message_size, a continuation
# without a start, a truncated packet at a message's end) close the session
# as a protocol error with a code of their own. picows's own frame errors
# (bad opcode, unmasked client frame, bad length) are answered by picows with
# 1002/1009; the session learns of them from the close frame picows sent.
#
# Fragmented messages are put together in a buffer of the connection's own,
# bounded by max_message_size; the common unfragmented message is never
# copied.
#
# Every frame costs the peer something. A binary message costs its packets
# (the session's rate limit, in process); a frame that carries no packet (a
# PING, a PONG, an empty message, a fragment before the last) costs one
# packet's worth of the same rate (Session.admit_frame): a flood of any of
# them is cut off as rate limited like a flood of packets. They are not
# activity for the idle timeout, which counts packets as on TCP. PINGs reach
# us (picows's automatic pong is off) and are answered through the same
# write back-pressure as everything else: while the session's transport is
# paused (its buffer over the high-water mark: the peer does not read), only
# the latest ping is remembered and its pong goes once writing resumes (RFC
# 6455 5.5.3 allows answering only the most recent), so a peer that pings and
# never reads costs one 125-byte payload, not a pong per ping.
#
# The peer's end of input: a close frame, or TCP's FIN (our protocol class
# hands picows's eof_received to WsConnection.peer_eof), is the session's
# end_input, as TCP's FIN is: what is queued is delivered, then a graceful
# close with the session's linger deadline. picows parses a whole socket read
# at once, so a close frame can come right behind a message that
# max_packets_per_read left partly handled: it waits (Session.peer_ended)
# until that backlog has drained, and nothing sent before it is dropped.
#
# Upgrades in progress. A connection to the WebSocket port is no session
# until its HTTP upgrade is done, so max_sessions and the per-address cap do
# not count it; it still holds a descriptor and picows's buffers. The
# listener counts them (our subclass of picows's protocol, from the accept to
# the upgrade or the connection's end): at most upgrade_limit in progress
# (max_upgrades, less where the open-files limit could not hold them beside
# max_sessions: see upgrade_limit_for), at most max_upgrades_per_address
# from one address (the service's address keys and exempt networks). One
# past either is aborted at once, before picows sees it. Each has
# handshake_timeout seconds from its accept to finish the upgrade (a plain
# request: to be answered and gone); then it is aborted, whatever picows is
# still waiting for (its own timeout only closes gracefully, which a peer
# that reads nothing puts off for ever).

#
# Behind proxies (proxy.pxd has the rules). The service's trusted_proxies
# are the peers whose word on their client is taken. An HTTP reverse proxy
# (proxy_protocol off, the default): an upgrade from a trusted network
# takes its session's address from the request's Forwarded or
# X-Forwarded-For header, read once the upgrade is accepted
# (client_of, at on_ws_connected); such a connection is not counted per
# address while it upgrades (the proxy's one address would count all its
# clients together: it has read the client's request before it connects,
# so slow requests are its to bound), only server-wide. A TCP proxy
# (proxy_protocol on): a connection from a trusted network must begin with
# a PROXY header, read by a WsProxyHeader before picows sees a byte,
# within the handshake deadline; the upgrade is then counted under the
# client's address the header names, and the request's headers are
# believed only when that address is itself trusted. From anyone else the
# headers are ignored and no PROXY header is looked for: its bytes are a
# bad HTTP request.

from picows.picows cimport WSFrame, WSListener, WSTransport

from netcore.proxy cimport HeaderReader, NetworkSet
from netcore.service cimport ServerService
from netcore.session cimport Session

cdef enum:
    # Close codes: RFC 6455 ones where they fit, 4000-4999 (private use) for
    # netcore's own reasons. docs/protocol.md lists them for client authors.
    CLOSE_NORMAL = 1000             # closed locally (e.g. too many failed logins)
    CLOSE_GOING_AWAY = 1001         # server shutdown
    CLOSE_WS_PROTOCOL = 1002        # malformed WebSocket framing
    CLOSE_UNSUPPORTED_DATA = 1003   # a text frame: the protocol is binary
    CLOSE_MESSAGE_TOO_BIG = 1009    # a message over max_message_size
    CLOSE_INTERNAL_ERROR = 1011     # a handler raised; a write failed
    CLOSE_PACKET_ERROR = 4000       # bad packet header, unknown id, invalid payload
    CLOSE_TRUNCATED_PACKET = 4001   # a message that ends inside a packet
    CLOSE_RATE_LIMITED = 4002
    CLOSE_SLOW_CONSUMER = 4003
    CLOSE_LOGIN_TIMEOUT = 4004
    CLOSE_IDLE_TIMEOUT = 4005
    CLOSE_SERVER_FULL = 4006
    CLOSE_ADDRESS_FULL = 4007
    CLOSE_LOST_PACKETS = 4008
    MAX_CLOSE_REASON = 123          # bytes of UTF-8 a close frame's reason can hold
    DEFAULT_MAX_MESSAGE_SIZE = 65536
    HANDSHAKE_TIMEOUT_S = 5         # the HTTP upgrade must be complete by then
    DEFAULT_MAX_UPGRADES = 1024     # upgrades in progress, server-wide
    DEFAULT_MAX_UPGRADES_PER_ADDRESS = 16
    # Where the open-files limit cannot hold max_sessions, max_upgrades and
    # the headroom, upgrades get what is left after max_sessions, but at
    # least this share (1/N) of the descriptors past the headroom: the game
    # port keeps the rest.
    UPGRADE_SHARE_DIVISOR = 4


cdef class WebSocketListener:
    cdef readonly ServerService service
    cdef readonly str host
    cdef readonly int port
    cdef readonly bint reuse_port
    cdef readonly int listen_sockets            # per address; 0 until started when left to choose
    cdef readonly int backlog
    cdef readonly Py_ssize_t max_message_size
    cdef readonly object origin_policy          # netcore.origins.OriginPolicy
    cdef readonly dict pages                    # path -> (content type, body bytes)
    cdef list servers
    cdef readonly bint stopped                  # stop_accepting(): upgrades get 503
    cdef readonly unsigned long long upgrades           # WebSocket sessions begun
    cdef readonly unsigned long long refused_origins    # upgrades refused at the origin check
    cdef readonly unsigned long long pages_served       # plain GETs answered with a page
    cdef readonly unsigned long long not_found          # other plain requests (404)
    cdef readonly dict closes                   # close code -> close frames we sent
    # Upgrades in progress (see above).
    cdef readonly double handshake_timeout      # seconds from accept to a session
    cdef readonly Py_ssize_t max_upgrades
    cdef readonly Py_ssize_t max_upgrades_per_address   # 0: no cap
    cdef readonly Py_ssize_t upgrade_limit      # in force (set at start); max_upgrades before
    cdef set pending                            # their protocols (_UpgradeProtocol)
    cdef readonly dict upgrading_by_address     # address key -> upgrades in progress from it
    cdef readonly unsigned long long refused_upgrades   # aborted at accept: past a cap
    cdef readonly unsigned long long handshake_timeouts # aborted: no upgrade in time
    cdef object loop
    cdef object request_handler                 # self._request, made once
    # Behind proxies (see above).
    cdef readonly bint proxy_protocol           # trusted proxies send a PROXY header first
    cdef NetworkSet trusted                     # the service's trusted_proxies; None: none
    cdef int begin_upgrade(self, object protocol, object transport) except -1
    cdef int end_upgrade(self, object protocol) except -1
    cdef int proxied_upgrade(self, object protocol, object client) except -1
    cdef object client_of(self, object protocol, WSTransport transport)


# A trusted proxy's connection to the WebSocket port with proxy_protocol on,
# until its PROXY header is read: then picows's protocol (`protocol`, our
# _UpgradeProtocol) takes the connection and the bytes after the header.
cdef class WsProxyHeader(HeaderReader):
    cdef object protocol
    cdef int end(self, str reason, str detail, bint abort) except -1


cdef class WsConnection(WSListener):
    cdef readonly Session session
    cdef WebSocketListener listener     # the server's, for its counters; None on a client
    cdef WSTransport ws                 # picows's side of this connection
    cdef object tcp                     # the asyncio transport under it
    cdef readonly Py_ssize_t max_message_size
    cdef readonly int close_code        # the code of the close frame we sent; 0 while none
    cdef readonly int peer_code         # the code of the peer's close frame; 0 while none
    cdef int fault_code                 # a WebSocket-level fault's code, set before closing
    cdef bint close_sent
    cdef bint close_received            # the peer's close frame (nothing after it counts)
    cdef bint lost
    cdef readonly unsigned long long pings      # PING frames received
    cdef bytes pong_due                 # the latest ping's payload, while writing is paused
    # A fragmented message being put together (never used by unfragmented ones).
    cdef unsigned char* frag
    cdef Py_ssize_t frag_len
    cdef bint in_fragments

    cdef int feed(self, const unsigned char* data, Py_ssize_t size) except -1
    cdef int answer_ping(self, WSFrame frame) except -1
    cdef int add_fragment(self, WSFrame frame) except -1
    cdef int refuse(self, int code, object kind, str detail) except -1
    cdef int send_close(self) except -1
    cdef int peer_closed(self, WSFrame frame) except -1
