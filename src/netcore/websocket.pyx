# cython: language_level=3
"""WebSocket transport: netcore sessions over binary WebSocket messages (see websocket.pxd)."""
import asyncio
import functools
import logging
import math

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from picows import (
    WSError,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_connect,
)
from picows.picows import WSProtocol

from netcore.errors import Disconnect, DisconnectReason
from netcore.framing import header_error
from netcore.logs import format_address, peer_line
# Private here (the constant is netcore.loop's, not this module's API).
from netcore.loop import DESCRIPTOR_HEADROOM as _HEADROOM, reserve_descriptors
from netcore.origins import DEFAULT_ORIGINS, OriginPolicy
from netcore.service import _create_server, _serve_on, listen_socket_count
from netcore.session import _drain_backlog

from picows.picows cimport WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from netcore.framing cimport (
    FRAME_OK, FRAME_PARTIAL, HEADER_SIZE, FrameHeader, FrameReader, FrameStatus, read_header,
)
from netcore.proxy cimport HeaderReader, NetworkSet, ProxyHeader, forwarded_client, header_source
from netcore.service cimport ServerService
from netcore.session cimport Session

log = logging.getLogger("netcore.websocket")
# picows logs every connection at INFO and every frame error it answers at
# ERROR, outside netcore's per-client line budget. Each of those endings
# reaches our log anyway, as the session's one disconnect line, so its own
# lines are off unless someone turns this logger up to look at picows itself.
picows_log = logging.getLogger("netcore.websocket.picows")
picows_log.setLevel(logging.CRITICAL)
picows_log.propagate = False

# A client reads whatever the server joins into one flush: up to the server's
# max_pending_bytes (1 MiB by default) in one message.
CLIENT_MAX_MESSAGE_SIZE = 16 << 20

# picows's protocol, as ws_create_server makes it, less its automatic pong
# (PINGs are ours: WsConnection.answer_ping) and its handshake timeout (the
# listener's deadline aborts; picows's only closes gracefully).
READ_BUFFER_INIT_SIZE = 16 * 1024

cdef object PEER_CLOSED = DisconnectReason.PEER_CLOSED
cdef object PROTOCOL_ERROR = DisconnectReason.PROTOCOL_ERROR
cdef object HANDLER_ERROR = DisconnectReason.HANDLER_ERROR

# Every ending's close code (websocket.pxd; docs/protocol.md). A fault found in
# the WebSocket framing itself has a code of its own, set before closing.
CLOSE_CODES = {
    DisconnectReason.CLOSED: CLOSE_NORMAL,
    DisconnectReason.SHUTDOWN: CLOSE_GOING_AWAY,
    DisconnectReason.PROTOCOL_ERROR: CLOSE_PACKET_ERROR,
    DisconnectReason.HANDLER_ERROR: CLOSE_INTERNAL_ERROR,
    DisconnectReason.CONNECTION_ERROR: CLOSE_INTERNAL_ERROR,
    DisconnectReason.RATE_LIMITED: CLOSE_RATE_LIMITED,
    DisconnectReason.SLOW_CONSUMER: CLOSE_SLOW_CONSUMER,
    DisconnectReason.LOGIN_TIMEOUT: CLOSE_LOGIN_TIMEOUT,
    DisconnectReason.IDLE_TIMEOUT: CLOSE_IDLE_TIMEOUT,
    DisconnectReason.SERVER_FULL: CLOSE_SERVER_FULL,
    DisconnectReason.ADDRESS_FULL: CLOSE_ADDRESS_FULL,
    DisconnectReason.LOST_PACKETS: CLOSE_LOST_PACKETS,
    DisconnectReason.PEER_CLOSED: CLOSE_NORMAL,    # or the peer's own code, echoed
}
# Faults of the WebSocket layer, with the code each closes with (the reason
# is a protocol error either way).
FAULT_CODES = {
    "text frame": CLOSE_UNSUPPORTED_DATA,
    "message too big": CLOSE_MESSAGE_TOO_BIG,
    "websocket protocol": CLOSE_WS_PROTOCOL,
    "truncated packet": CLOSE_TRUNCATED_PACKET,
}
# The codes a close frame of ours can carry, for metrics that exist from the start.
ALL_CLOSE_CODES = tuple(sorted(set(CLOSE_CODES.values()) | set(FAULT_CODES.values())))
# Codes a peer may send and we echo when answering its close (RFC 6455 7.4).
cdef frozenset _ECHOABLE = frozenset([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011])


def close_reason_bytes(str text):
    """A close frame's reason: at most MAX_CLOSE_REASON bytes of UTF-8, cut
    on a character boundary."""
    cdef bytes data = text.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON:
        return data
    return data[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")


cdef FrameStatus whole_packets(const unsigned char* p, Py_ssize_t n, Py_ssize_t max_size,
                               FrameHeader* h) noexcept:
    """FRAME_OK when p[0:n] is a run of whole packets; else the verdict on
    the first header that is bad, or FRAME_PARTIAL for a cut-off end."""
    cdef Py_ssize_t pos = 0
    cdef FrameStatus st
    while pos < n:
        st = read_header(p + pos, n - pos, max_size, h)
        if st != FRAME_OK:
            return st
        pos += h.size
    return FRAME_OK


cdef class WsConnection(WSListener):
    """One WebSocket connection: the picows listener, and its session's transport."""

    def __init__(self, Session session not None, Py_ssize_t max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
                 WebSocketListener listener=None):
        if max_message_size < HEADER_SIZE:
            raise ValueError(f"max_message_size must be >= {HEADER_SIZE}")
        self.session = session
        self.listener = listener
        self.max_message_size = max_message_size
        session.transport_kind = "ws"

    def __dealloc__(self):
        free(self.frag)

    # -- picows callbacks ------------------------------------------------------------

    cpdef on_ws_connected(self, WSTransport transport):
        self.ws = transport
        self.tcp = transport.underlying_transport
        if self.listener is not None:
            protocol = self.tcp.get_protocol()
            # The upgrade is done: from now on the session is counted, not it.
            self.listener.end_upgrade(protocol)
            if self.listener.trusted is not None:
                # Behind a trusted proxy: the session is the client's from the start.
                client = self.listener.client_of(protocol, transport)
                if client is not None:
                    self.session._peername = client
        # Fetched now, while the socket is open: a session ended by a frame
        # error picows answered itself is logged after the socket is gone.
        self.session.peername
        self.session.connection_made(self)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType kind = frame.msg_type
        cdef Session s = self.session
        try:
            if s.closing:
                # Lingering after our close frame: only the peer's answer matters.
                if kind == WSMsgType.CLOSE:
                    self.peer_closed(frame)
                return
            if self.close_received:
                return          # nothing may follow the peer's close frame (RFC 6455 5.5.1)
            if transport.is_close_frame_sent and not self.close_sent:
                # picows failed the connection (a frame broke its rules: a bad
                # close code, an unmasked frame...): its close frame is sent
                # and it disconnects 10 ms later. Nothing more of the peer's
                # is handled meanwhile (RFC 6455 7.1.7), whatever reads come.
                return
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                # No extension is ever negotiated: a set RSV bit fails the
                # connection (RFC 6455 5.2); picows leaves that check to us.
                self.refuse(CLOSE_WS_PROTOCOL, PROTOCOL_ERROR,
                            "websocket: a frame with an RSV bit set (no extension negotiated)")
                return
            if kind == WSMsgType.BINARY:
                if self.in_fragments:
                    self.refuse(CLOSE_WS_PROTOCOL, PROTOCOL_ERROR,
                                "websocket: a new message began inside a fragmented one")
                elif frame.fin:
                    if frame.payload_size > self.max_message_size:
                        self.refuse(CLOSE_MESSAGE_TOO_BIG, PROTOCOL_ERROR,
                                    f"websocket: a message of {frame.payload_size} bytes "
                                    f"> maximum {self.max_message_size}")
                    else:
                        self.feed(<const unsigned char*>frame.payload_ptr, frame.payload_size)
                elif s.admit_frame():           # a fragment before the last: no packet yet
                    self.in_fragments = True
                    self.frag_len = 0
                    self.add_fragment(frame)
            elif kind == WSMsgType.CONTINUATION:
                if not self.in_fragments:
                    self.refuse(CLOSE_WS_PROTOCOL, PROTOCOL_ERROR,
                                "websocket: a continuation frame with no message to continue")
                elif frame.fin or s.admit_frame():
                    self.add_fragment(frame)
            elif kind == WSMsgType.PING:
                self.pings += 1
                if s.admit_frame():
                    self.answer_ping(frame)
            elif kind == WSMsgType.PONG:
                s.admit_frame()                 # unasked (we send no pings): only its cost
            elif kind == WSMsgType.TEXT:
                self.refuse(CLOSE_UNSUPPORTED_DATA, PROTOCOL_ERROR,
                            "websocket: a text frame (the protocol is binary messages)")
            elif kind == WSMsgType.CLOSE:
                self.peer_closed(frame)
        except Exception as exc:
            # Never left to picows, which would log it outside the line budget.
            if peer_line(log, logging.ERROR):
                log.exception("session %d: websocket frame handling failed", s.session_id)
            s.close(HANDLER_ERROR, f"websocket frame: {exc!r}", True)

    cpdef on_ws_disconnected(self, WSTransport transport):
        cdef Session s = self.session
        self.lost = True
        free(self.frag)
        self.frag = NULL
        self.frag_len = 0
        if s.close_reason is None:
            handshake = transport.close_handshake
            if handshake is not None and handshake.sent is not None and not self.close_sent:
                # picows refused a frame (opcode, mask, length) and sent this itself.
                self.close_code = handshake.sent.code
                s.close_reason = Disconnect(PROTOCOL_ERROR, f"websocket: {handshake.sent.reason} "
                                                            f"(close {self.close_code})")
                if self.listener is not None:
                    self.listener.count_close(self.close_code)
            elif self.peer_code:
                s.close_reason = Disconnect(PEER_CLOSED, f"close {self.peer_code}")
            else:
                s.close_reason = Disconnect(PEER_CLOSED, "without a close frame")
        s.connection_lost(None)

    cpdef pause_writing(self):
        self.session.pause_writing()

    cpdef resume_writing(self):
        cdef bytes payload
        self.session.resume_writing()
        if self.pong_due is not None and not self.session.write_paused:
            payload, self.pong_due = self.pong_due, None
            if not self.close_sent and not self.lost:
                self.ws.send(WSMsgType.PONG, payload)

    def peer_eof(self):
        """The peer's FIN (our protocol's eof_received): as a close frame
        without a code. True keeps the transport open (answers still to
        come, or a backlog still to handle first)."""
        cdef Session s = self.session
        if s.closing or self.lost or s.transport is None:
            return False
        return s.peer_ended("without a close frame") != 0

    # -- the transport its Session writes to ---------------------------------------

    def write(self, data):
        if not self.close_sent and not self.lost:
            self.ws.send(WSMsgType.BINARY, data)

    def write_eof(self):
        # A graceful close: our close frame says we send nothing more; the
        # peer's answering close frame (or the session's linger) ends it.
        self.send_close()

    def can_write_eof(self):
        return True

    def close(self):
        if not self.lost:
            self.send_close()
            self.tcp.close()

    def abort(self):
        if not self.lost:
            self.send_close()
            self.tcp.abort()

    def is_closing(self):
        return self.lost or self.tcp.is_closing()

    def pause_reading(self):
        self.tcp.pause_reading()

    def resume_reading(self):
        self.tcp.resume_reading()

    def get_extra_info(self, name, default=None):
        # "framing": what it sends is framed, so a flush must never write to
        # the socket itself (Session's direct path); the socket is still
        # there for keepalive.
        if name == "framing":
            return "websocket"
        return self.tcp.get_extra_info(name, default)

    def set_write_buffer_limits(self, high=None, low=None):
        self.tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self):
        return self.tcp.get_write_buffer_size()

    # -- C level --------------------------------------------------------------------

    cdef int feed(self, const unsigned char* data, Py_ssize_t size) except -1:
        """One whole binary message into the session's packet parser, in place."""
        cdef Session s = self.session
        cdef FrameReader r
        cdef FrameHeader h
        cdef FrameStatus st
        if size == 0:
            s.admit_frame()         # an empty message: no packet, but not free
            return 0
        if s.backlogged:
            # picows hands over the rest of a socket read's messages after a
            # capped parse paused reading: they queue behind the backlog.
            st = whole_packets(data, size, s.max_packet_size, &h)
            if st == FRAME_OK:
                s.rbuf.append(data, size)
            elif st == FRAME_PARTIAL:
                self.refuse(CLOSE_TRUNCATED_PACKET, PROTOCOL_ERROR,
                            f"websocket: a message of {size} bytes ends inside a packet")
            else:
                s.close(PROTOCOL_ERROR, header_error(h.size, s.max_packet_size), True)
            return 0
        s.rbuf.begin_message(data, size, &r)
        try:
            s.process(&r)
            if not s.closing and r.pos != r.len:
                st = FRAME_PARTIAL
                if s.backlogged:
                    st = whole_packets(r.buf + r.pos, r.len - r.pos, s.max_packet_size, &h)
                if st == FRAME_OK:
                    s.rbuf.keep_tail(&r, 0)
                elif st == FRAME_PARTIAL:
                    self.refuse(CLOSE_TRUNCATED_PACKET, PROTOCOL_ERROR,
                                f"websocket: a message of {size} bytes ends inside a packet")
                else:
                    s.close(PROTOCOL_ERROR, header_error(h.size, s.max_packet_size), True)
        finally:
            s.rbuf.end_parse()
        if s.backlogged and not s.closing:
            self.tcp.pause_reading()
            asyncio.get_running_loop().call_soon(_drain_backlog, s)
        return 0

    cdef int add_fragment(self, WSFrame frame) except -1:
        cdef Py_ssize_t n = frame.payload_size
        cdef unsigned char* grown
        if n > self.max_message_size - self.frag_len:
            self.in_fragments = False
            self.refuse(CLOSE_MESSAGE_TOO_BIG, PROTOCOL_ERROR,
                        f"websocket: a fragmented message past {self.max_message_size} bytes")
            return 0
        if n:
            grown = <unsigned char*>realloc(self.frag, self.frag_len + n)
            if grown == NULL:
                raise MemoryError()
            self.frag = grown
            memcpy(self.frag + self.frag_len, frame.payload_ptr, n)
            self.frag_len += n
        if frame.fin:
            self.in_fragments = False
            try:
                self.feed(self.frag, self.frag_len)
            finally:
                # Rare: the memory is not kept for the next one.
                free(self.frag)
                self.frag = NULL
                self.frag_len = 0
        return 0

    cdef int refuse(self, int code, object kind, str detail) except -1:
        self.fault_code = code
        self.session.close(kind, detail, True)
        return 0

    cdef int answer_ping(self, WSFrame frame) except -1:
        cdef bytes payload = frame.get_payload_as_bytes()      # at most 125 bytes
        if self.session.write_paused:
            # The peer reads nothing for now: remember only the latest ping
            # (resume_writing answers it), not a pong per ping.
            self.pong_due = payload
        elif not self.close_sent and not self.lost:
            self.ws.send(WSMsgType.PONG, payload)
        return 0

    cdef int peer_closed(self, WSFrame frame) except -1:
        cdef Session s = self.session
        self.peer_code = <int>frame.get_close_code()
        if self.close_sent:
            # Our close frame has been answered: the closing handshake is done.
            self.tcp.close()
            return 0
        if s.closing or self.close_received:
            return 0
        self.close_received = True
        # As TCP's FIN (Session.end_input): what the peer sent before has
        # been handled (behind a backlog, once it has drained); deliver what
        # is queued, then answer with our close frame, unless the session has
        # answers still to come (on_eof; it disconnects later).
        reason = frame.get_close_reason()
        s.peer_ended(f"close {self.peer_code}" + (f" {reason!r}" if reason else ""))
        return 0

    cdef int send_close(self) except -1:
        cdef int code
        if self.close_sent or self.lost or self.tcp.is_closing():
            return 0
        self.close_sent = True
        reason = self.session.close_reason
        if self.fault_code:
            code = self.fault_code
        elif reason is None:
            code = CLOSE_NORMAL
        elif reason.kind is PEER_CLOSED and self.peer_code in _ECHOABLE:
            code = self.peer_code
        else:
            code = CLOSE_CODES.get(reason.kind, CLOSE_NORMAL)
        self.close_code = code
        if self.listener is not None:
            self.listener.count_close(code)
        self.ws.send_close(<WSCloseCode>code, close_reason_bytes(str(reason) if reason else ""))
        return 0


cdef class WebSocketListener:
    """Accepts WebSocket connections into a ServerService's sessions.

    Every session it makes is the service's: registered, counted against
    max_sessions and the per-address cap, swept for its deadlines, flushed
    by the service's flusher, closed by service.close(). A plain HTTP GET
    of a path in `pages` is answered with that page; any other plain request
    with 404. An upgrade whose Origin the policy refuses gets 403.
    """

    def __init__(self, ServerService service not None, str host="127.0.0.1", int port=0, *,
                 origins=DEFAULT_ORIGINS, Py_ssize_t max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
                 pages=None, bint reuse_port=False, int backlog=4096, int listen_sockets=0,
                 double handshake_timeout=HANDSHAKE_TIMEOUT_S,
                 Py_ssize_t max_upgrades=DEFAULT_MAX_UPGRADES,
                 Py_ssize_t max_upgrades_per_address=DEFAULT_MAX_UPGRADES_PER_ADDRESS,
                 bint proxy_protocol=False):
        """origins: a netcore.origins policy ("self,loopback", "*", exact
        origins) or an OriginPolicy. pages: {path: (content type, bytes)}.
        listen_sockets: as ServerService's (0: 16 under uvloop on Linux).
        handshake_timeout: seconds a connection has from its accept to finish
        its upgrade (or its plain request); then it is aborted.
        max_upgrades: connections in their upgrade at once, server-wide (fewer
        where the open-files limit leaves fewer: upgrade_limit_for);
        max_upgrades_per_address: from one address, not counting the
        service's exempt networks (0: no cap). One past either is aborted at
        once (see websocket.pxd). proxy_protocol: the service's trusted
        proxies are TCP proxies that send a PROXY header first, not HTTP
        proxies that name their client in Forwarded / X-Forwarded-For (see
        websocket.pxd)."""
        listen_socket_count(listen_sockets, None)      # checked now, chosen at start
        if max_message_size < service.max_packet_size:
            raise ValueError(f"max_message_size {max_message_size} cannot carry a packet of "
                             f"max_packet_size {service.max_packet_size}")
        if not (handshake_timeout > 0 and math.isfinite(handshake_timeout)):
            raise ValueError("handshake_timeout must be a finite number of seconds > 0")
        if max_upgrades < 1:
            raise ValueError("max_upgrades must be >= 1")
        if max_upgrades_per_address < 0:
            raise ValueError("max_upgrades_per_address must be >= 0")
        self.handshake_timeout = handshake_timeout
        self.proxy_protocol = proxy_protocol
        self.trusted = service.trusted_proxies
        self.max_upgrades = max_upgrades
        self.max_upgrades_per_address = max_upgrades_per_address
        self.upgrade_limit = max_upgrades
        self.pending = set()
        self.upgrading_by_address = {}
        self.service = service
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.listen_sockets = listen_sockets
        self.backlog = backlog
        self.max_message_size = max_message_size
        self.origin_policy = origins if isinstance(origins, OriginPolicy) else OriginPolicy(origins)
        self.pages = {}
        for path, (content_type, body) in (pages or {}).items():
            self.pages[path] = (str(content_type), bytes(body))
        self.closes = {code: 0 for code in ALL_CLOSE_CODES}

    async def start(self):
        """Listen (the service must be started); returns self."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.request_handler = self._request
        self.listen_sockets = listen_socket_count(self.listen_sockets, loop)
        self.upgrade_limit = upgrade_limit_for(self.max_upgrades, self.service.max_sessions)
        # As ServerService.start: the descriptor table at its full size now.
        reserve_descriptors(self.service.max_sessions + self.upgrade_limit + _HEADROOM)
        self.servers, self.port, inherited = await _serve_on(
            self.host, self.port, self.reuse_port,
            functools.partial(_create_server, loop, None,
                              functools.partial(_new_protocol, self), self.backlog),
            self.service.keepalive_idle, self.service.keepalive_interval, self.listen_sockets)
        if not inherited:
            # Its sessions are the service's: all of them get keepalive per connection.
            self.service.keepalive_inherited = False
        self.service.add_listener(self)
        log.info("websocket on %s:%d", self.host, self.port)
        return self

    def _request(self, request):
        """picows's listener factory: one HTTP request, upgrade or not."""
        headers = request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            return self._plain_request(request)
        if self.stopped:
            # Accepted before stop_accepting(), upgraded after: a session now
            # would miss the shutdown's close_sessions.
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                503, b"shutting down\n"), None)
        origin = headers.get("Origin")
        if not self.origin_policy.allows(origin, headers.get("Host")):
            self.refused_origins += 1
            if peer_line(log, logging.INFO):
                log.info("websocket upgrade refused: origin %r is not allowed (allowed: %s)",
                         origin, self.origin_policy)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                403, b"origin not allowed\n"), None)
        self.upgrades += 1
        return WsConnection(self.service.new_session(), self.max_message_size, self)

    def _plain_request(self, request):
        path = request.path.decode("latin-1").split("?", 1)[0]
        page = self.pages.get(path) if request.method == b"GET" else None
        if page is None:
            self.not_found += 1
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                404, b"not found\n", {"Content-Type": "text/plain; charset=utf-8"}), None)
        self.pages_served += 1
        content_type, body = page
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(
            body, {"Content-Type": content_type, "Cache-Control": "no-cache",
                   "X-Content-Type-Options": "nosniff"}), None)

    def count_close(self, int code):
        self.closes[code] = self.closes.get(code, 0) + 1

    @property
    def upgrading(self):
        """Connections accepted and not yet a session (nor gone)."""
        return len(self.pending)

    cdef int begin_upgrade(self, object protocol, object transport) except -1:
        """A connection accepted: count it, or refuse it (0) past a cap; 2:
        from a trusted proxy that sends a PROXY header first."""
        cdef Py_ssize_t n
        cdef bint trusted = False
        key = None
        if self.trusted is not None:
            peer = transport.get_extra_info("peername")
            trusted = (peer is not None and isinstance(peer, tuple)
                       and self.trusted.contains_host(peer[0]))
        if len(self.pending) >= self.upgrade_limit:
            why = f"{len(self.pending)} upgrades in progress (max {self.upgrade_limit})"
        else:
            why = None
            # A trusted proxy's connections are counted per address under
            # their client's, once known (a PROXY header), else not at all.
            if self.max_upgrades_per_address and not trusted:
                key = self.service.address_key_for(transport.get_extra_info("peername"))
                if key is not None:
                    n = self.upgrading_by_address.get(key, 0)
                    if n >= self.max_upgrades_per_address:
                        why = (f"{n} upgrades in progress from {key} "
                               f"(max {self.max_upgrades_per_address})")
                    else:
                        self.upgrading_by_address[key] = n + 1
        if why is not None:
            self.refused_upgrades += 1
            if peer_line(log, logging.INFO):
                log.info("websocket connection from %s refused: %s",
                         format_address(transport.get_extra_info("peername")), why)
            return 0
        self.pending.add(protocol)
        protocol.key = key
        protocol.tcp = transport
        protocol.deadline = self.loop.call_later(self.handshake_timeout, _upgrade_deadline,
                                                 protocol)
        if trusted and self.proxy_protocol:
            return 2
        protocol.trusted_headers = trusted
        return 1

    cdef int proxied_upgrade(self, object protocol, object client) except -1:
        """A trusted proxy's PROXY header names `client` (None: the proxy's
        own connection): count the upgrade under the client's address, or
        refuse it (0) past the per-address cap."""
        cdef Py_ssize_t n
        key = None
        if client is not None and self.max_upgrades_per_address:
            key = self.service.address_key_for(client)
            if key is not None:
                n = self.upgrading_by_address.get(key, 0)
                if n >= self.max_upgrades_per_address:
                    self.refused_upgrades += 1
                    if peer_line(log, logging.INFO):
                        log.info("websocket connection from %s (through proxy %s) refused: %d "
                                 "upgrades in progress from %s (max %d)", format_address(client),
                                 format_address(protocol.tcp.get_extra_info("peername")), n,
                                 key, self.max_upgrades_per_address)
                    return 0
                self.upgrading_by_address[key] = n + 1
        protocol.key = key
        protocol.client = client
        # The request's headers count only where the one the header names
        # is a trusted proxy too (or it is the proxy's own connection).
        protocol.trusted_headers = client is None or self.trusted.contains_host(client[0])
        return 1

    cdef object client_of(self, object protocol, WSTransport transport):
        """The session's address behind trusted proxies: the client a
        trusted peer names (Forwarded, X-Forwarded-For; the PROXY header's
        client), or None: the connection's own."""
        client = protocol.client
        if protocol.trusted_headers and transport.request is not None:
            named = forwarded_client(transport.request.headers)
            if named is not None:
                client = named
        return client

    cdef int end_upgrade(self, object protocol) except -1:
        """Upgraded (a session now) or gone: no longer counted here."""
        cdef Py_ssize_t n
        if protocol not in self.pending:
            return 0
        self.pending.discard(protocol)
        key = protocol.key
        if key is not None:
            n = self.upgrading_by_address.pop(key, 0) - 1
            if n > 0:
                self.upgrading_by_address[key] = n
        if protocol.deadline is not None:
            protocol.deadline.cancel()
            protocol.deadline = None
        return 0

    def _upgrade_timed_out(self, protocol):
        if protocol not in self.pending:
            return
        protocol.deadline = None
        self.handshake_timeouts += 1
        if protocol.header is not None:
            # Still reading its PROXY header: that is what was too slow.
            (<WsProxyHeader>protocol.header).end(
                "timeout", f"no complete PROXY header within {self.handshake_timeout:g} s "
                           f"(the handshake's deadline)", True)
            return
        if peer_line(log, logging.INFO):
            log.info("websocket connection from %s aborted: no upgrade within %g s",
                     format_address(protocol.tcp.get_extra_info("peername")),
                     self.handshake_timeout)
        protocol.tcp.abort()        # connection_lost ends the count

    @property
    def listening(self):
        return self.servers is not None and any(s.is_serving() for s in self.servers)

    @property
    def address(self):
        return (self.host, self.port)

    def stop_accepting(self):
        self.stopped = True
        if self.servers is not None:
            for server in self.servers:
                server.close()

    async def wait_closed(self):
        # Connections still in their upgrade can no longer become sessions
        # (they would get 503): not waited for.
        for protocol in list(self.pending):
            protocol.tcp.abort()
        if self.servers is not None:
            for server in self.servers:
                await server.wait_closed()
            self.servers = None


def upgrade_limit_for(Py_ssize_t max_upgrades, Py_ssize_t max_sessions, limit=None):
    """Upgrades in progress allowed beside max_sessions sessions: max_upgrades,
    unless the open-files soft limit (`limit`; None: this process's) cannot
    hold them beside max_sessions and DESCRIPTOR_HEADROOM; then what it leaves
    after those, but at least 1/UPGRADE_SHARE_DIVISOR of the descriptors past
    the headroom (a server whose limit is below its max_sessions still takes
    WebSocket players), and at least 1. The game port keeps the rest: a flood
    of connections that never upgrade cannot take its descriptors."""
    cdef Py_ssize_t usable
    if limit is None:
        try:
            import resource
        except ImportError:         # Windows: no such limit
            return max_upgrades
        limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if limit == resource.RLIM_INFINITY:
            return max_upgrades
    usable = limit - _HEADROOM
    return max(1, min(max_upgrades, max(usable - max_sessions, usable // UPGRADE_SHARE_DIVISOR)))


class _UpgradeProtocol(WSProtocol):
    """picows's server protocol, counted by its listener from the accept
    until the upgrade is done or the connection gone (websocket.pxd), and
    handing the peer's FIN to the session once there is one."""

    # client: the one a PROXY header named (None: the connection's own);
    # trusted_headers: the request's Forwarded / X-Forwarded-For are
    # believed; header: the WsProxyHeader while it reads the PROXY header.
    __slots__ = ("port", "tcp", "key", "deadline", "client", "trusted_headers", "header")

    def connection_made(self, transport):
        cdef int admitted = (<WebSocketListener>self.port).begin_upgrade(self, transport)
        if not admitted:
            self.tcp = None
            transport.abort()           # picows never sees it
            return
        if admitted == 2:
            # A trusted proxy's PROXY header first: picows sees the connection after it.
            self.header = _new_ws_header(self, transport)
            transport.set_protocol(self.header)
            return
        WSProtocol.connection_made(self, transport)

    def connection_lost(self, exc):
        if self.tcp is None:
            return                      # refused at accept: picows never saw it
        (<WebSocketListener>self.port).end_upgrade(self)
        WSProtocol.connection_lost(self, exc)

    def eof_received(self):
        connection = self.listener
        if isinstance(connection, WsConnection):
            return (<WsConnection>connection).peer_eof()
        return False                    # not upgraded: close


def _new_protocol(WebSocketListener listener):
    protocol = _UpgradeProtocol(
        None, None, False, listener.request_handler, picows_log,
        True,                           # disconnect_on_exception
        None,                           # picows's handshake timeout: ours aborts
        False, 20, 20, 1,               # no automatic ping (idle, reply, strategy unused)
        False,                          # no automatic pong: WsConnection.answer_ping
        listener.max_message_size, None, READ_BUFFER_INIT_SIZE)
    protocol.port = listener
    protocol.tcp = None                 # set once admitted (begin_upgrade)
    protocol.key = None
    protocol.deadline = None
    protocol.client = None
    protocol.trusted_headers = False
    protocol.header = None
    return protocol


def _new_ws_header(protocol, transport):
    cdef WsProxyHeader reader = _WsHeader.__new__(_WsHeader)
    reader.protocol = protocol
    reader.transport = transport
    return reader


cdef class WsProxyHeader(HeaderReader):
    """The PROXY header of a trusted proxy's connection to the WebSocket
    port (websocket.pxd); then picows's protocol takes the connection."""

    cdef int done(self, ProxyHeader* h, const unsigned char* rest, Py_ssize_t n) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t k
        protocol = self.protocol
        transport = self.transport
        listener = <WebSocketListener>protocol.port
        if not listener.proxied_upgrade(protocol, header_source(h)):
            transport.abort()           # connection_lost ends the count
            return 0
        protocol.header = None
        transport.set_protocol(protocol)
        WSProtocol.connection_made(protocol, transport)
        while n > 0 and not transport.is_closing():
            buf = protocol.get_buffer(-1)
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            try:
                k = n if n < view.len else view.len
                memcpy(view.buf, rest, k)
            finally:
                PyBuffer_Release(&view)
            protocol.buffer_updated(k)
            rest += k
            n -= k
        return 0

    cdef int failed(self, str reason, str detail) except -1:
        return self.end(reason, detail, True)

    cdef int end(self, str reason, str detail, bint abort) except -1:
        cdef WebSocketListener listener = <WebSocketListener>self.protocol.port
        self.finished = True
        listener.service.proxy_failed(reason, detail, self.transport.get_extra_info("peername"))
        if abort:
            self.transport.abort()      # connection_lost ends the count
        return 0

    def connection_lost(self, exc):
        # picows never saw this connection: only the listener's count ends.
        self.lost(exc)
        protocol = self.protocol
        protocol.header = None
        (<WebSocketListener>protocol.port).end_upgrade(protocol)
        self.protocol = self.transport = None

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


class _WsHeader(WsProxyHeader, asyncio.BufferedProtocol):
    # The BufferedProtocol base: the selector loop's transports check it (netcore/__init__.py).
    __slots__ = ()


def _upgrade_deadline(protocol):
    # A module function given its protocol (see netcore.loop: no bound
    # method kept on an object of ours).
    (<WebSocketListener>protocol.port)._upgrade_timed_out(protocol)


class _ClientListenerFactory:
    """picows's client-side listener factory: a WsConnection around a new session."""

    __slots__ = ("session_factory", "max_message_size", "connection")

    def __init__(self, session_factory, max_message_size):
        self.session_factory = session_factory
        self.max_message_size = max_message_size
        self.connection = None

    def __call__(self, *request_and_response):
        self.connection = WsConnection(self.session_factory(), self.max_message_size)
        return self.connection


async def connect_websocket(session_factory, str host, int port, str path="/", *,
                            Py_ssize_t max_message_size=CLIENT_MAX_MESSAGE_SIZE,
                            origin=None, float handshake_timeout=HANDSHAKE_TIMEOUT_S):
    """Dial ws://host:port/path and run a session from session_factory over
    it; returns the session once the upgrade is done. A refused or failed
    upgrade is a ConnectionError saying why."""
    factory = _ClientListenerFactory(session_factory, max_message_size)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        await ws_connect(factory, f"ws://{netloc}{path}",
                         websocket_handshake_timeout=handshake_timeout,
                         logger_name=picows_log, enable_auto_ping=False,
                         enable_auto_pong=False,    # as the server's: WsConnection.answer_ping
                         max_frame_size=max_message_size, use_aiofastnet=False,
                         extra_headers={"Origin": origin} if origin else None)
    except WSError as exc:
        raise ConnectionError(f"websocket upgrade to {netloc} failed: {exc}") from None
    except asyncio.TimeoutError:
        raise ConnectionError(f"websocket upgrade to {netloc} timed out") from None
    return factory.connection.session
