# Real client addresses behind proxies: the PROXY protocol header (HAProxy's
# proxy-protocol.txt, versions 1 and 2), the trusted networks that may send
# one, and the HTTP headers (Forwarded, X-Forwarded-For) an HTTP reverse
# proxy names its client with.
#
# Why. Behind a TCP load balancer or a TLS reverse proxy every client
# arrives from the proxy's address, so every per-address limit (connections,
# logins in flight, failed logins, new accounts, WebSocket upgrades in
# progress) counts all clients as one, or, with the proxy exempt, counts
# nobody. A proxy that is trusted (ServerService(trusted_proxies=...),
# --trusted-proxies) tells us who its client is; nobody else is believed,
# since a header from an untrusted peer could claim any address.
#
# Who is trusted. NetworkSet holds the networks in C (family, 16 address
# bytes, prefix length): one check per accepted connection, from the
# sockaddr accept4 gave (netcore's acceptor) or from the peer's host string
# (the loop's transports, the WebSocket port), a few compares of bytes. An
# empty setting makes no set at all (None), and the accept paths then cost
# exactly what they did: a pointer compare.
#
# The game port (service.pyx, ProxiedConnection). A connection from a
# trusted network MUST begin with a PROXY header (the spec: the receiver
# must not guess whether one is there; a port that took both would let any
# client behind the proxy claim an address). Until the header is complete
# the connection's protocol is a ProxiedConnection (a HeaderReader), not a
# session: it reads into a buffer of its own of PROXY_MAX_HEADER bytes, and
# the bytes after the header in the same read are handed to the session,
# which sees none of the header and whose peername (so every limit, log
# line and metric) is the client's from the start. A header that does not
# come (timeout), is not one (missing), breaks the spec (malformed) or is
# longer than PROXY_MAX_HEADER (oversized), or a connection that ends first
# (closed), is closed with its reason logged and counted.
#
# The parser (parse_proxy_header) is C over a byte span, re-run over what
# has arrived so far on each read (a header is at most PROXY_MAX_HEADER
# bytes and nearly always comes in one read): it answers 0 (a valid
# beginning: read more), the header's size with the fields filled in, or
# raises ProxyHeaderError with its reason. It reads only the n bytes it is
# given, and decides only from them: an answer for a prefix of a stream
# never changes when more bytes come, except from "read more" (the fuzz
# test checks both). Strict, as the spec asks ("any sequence which does not
# exactly match the protocol must be discarded"):
#   v1  "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n", single spaces,
#       no leading zeros in ports or IPv4 numbers, the address of the
#       family announced; "PROXY UNKNOWN" and anything up to CRLF; CRLF
#       within PROXY_V1_MAX (107) bytes or oversized; a lone LF is
#       malformed.
#   v2  the 12-byte signature, version 2 and command LOCAL or PROXY (else
#       malformed), the family/protocol byte one of the seven the spec
#       lists (AF_UNSPEC, TCP and UDP over IPv4 and IPv6, UNIX stream and
#       datagram), the length big enough for the addresses of TCP over
#       IPv4 (12) or IPv6 (36); the rest of the length (TLVs) is skipped
#       unread; 16 + length above PROXY_MAX_HEADER is oversized.
# Which address results: the source of TCP4/TCP6 (v1) or of TCP over IPv4
# or IPv6 (v2). LOCAL (a proxy's health check), UNKNOWN, AF_UNSPEC and the
# families we do not serve (UDP, UNIX) keep the connection's own address,
# as the spec says a receiver falls back to.
#
# The WebSocket port (websocket.pyx). Its proxies are most often HTTP
# reverse proxies (nginx, Caddy: what terminates wss://), which cannot send
# a PROXY header; a TCP load balancer can. Which one the port is behind is
# configured, never guessed (WebSocketListener(proxy_protocol=...),
# --ws-proxy-protocol): off (the default), an upgrade from a trusted network
# takes its client from the request's headers; on, a connection from a
# trusted network must begin with a PROXY header (read within the upgrade's
# handshake deadline), and the request's headers are then believed only
# when the address the PROXY header names is itself trusted (an HTTP proxy
# behind the load balancer). The headers: `Forwarded` (RFC 7239) if there
# is one, its last element's for= (the one the proxy next to us added; a
# proxy appends), quoted IPv6 "[2001:db8::1]:4711" and an optional port;
# "unknown", an obfuscated identifier or anything malformed keeps the
# proxy's address (a proxy that speaks Forwarded is not second-guessed
# from X-Forwarded-For). Else `X-Forwarded-For`, its last entry (bare IPv4
# or IPv6, "[v6]" or "v4" with a port). Every line of a header counts, in
# order. From anyone not trusted, both are ignored.

cdef enum:
    PROXY_V1_MAX = 107          # the longest v1 line, CRLF included (spec 2.1)
    PROXY_V2_FIXED = 16         # signature (12), version/command, family, length (2)
    PROXY_V2_SIG = 12
    # Our bound on a whole header: v2 with TLVs (a proxy's TLVs are tens to
    # a few hundred bytes: ALPN, authority, unique id, SSL, a cloud's
    # endpoint id). A longer one closes the connection as oversized.
    PROXY_MAX_HEADER = 4096
    PROXY_HEADER_TIMEOUT_S = 5  # default time a trusted connection has to send its header


cdef struct ProxyHeader:
    int version                 # 1 or 2
    int local                   # v2 LOCAL, v1 UNKNOWN: the connection is the proxy's own
    int family                  # 4 or 6: the addresses below; 0: keep the connection's own
    unsigned char src[16]       # network order (4 bytes used for family 4)
    unsigned char dst[16]
    unsigned int src_port
    unsigned int dst_port
    Py_ssize_t size             # bytes the header takes


cdef Py_ssize_t parse_proxy_header(const unsigned char* p, Py_ssize_t n,
                                   ProxyHeader* h) except -1
cdef object header_source(ProxyHeader* h)       # the client's peername, or None: keep


cdef struct Network:
    int family                  # 4 or 6
    int prefix                  # bits
    unsigned char addr[16]


cdef class NetworkSet:
    cdef Network* nets
    cdef Py_ssize_t count
    cdef readonly tuple networks            # the ipaddress objects, as given
    cdef bint contains_ip(self, int family, const unsigned char* addr) noexcept
    cdef bint contains_sockaddr(self, const void* sa) noexcept
    cpdef bint contains_host(self, object host) except -1


# A connection's protocol until its PROXY header is read (service.pyx and
# websocket.pyx subclass it): the buffer the transport reads into, the
# parse, then done() with the header and the bytes after it, or failed()
# with a reason. Either is called once.
cdef class HeaderReader:
    cdef object transport
    cdef Py_ssize_t have
    cdef bint finished
    cdef unsigned char buf[PROXY_MAX_HEADER]
    cdef int received(self, Py_ssize_t nbytes) except -1
    cdef int done(self, ProxyHeader* h, const unsigned char* rest, Py_ssize_t n) except -1
    cdef int failed(self, str reason, str detail) except -1
    # Settled without a header (counted as `reason`, logged with `detail`),
    # the transport aborted when `abort`; eof_received and lost() call it
    # for a connection that ended first.
    cdef int end(self, str reason, str detail, bint abort) except -1
    cdef int lost(self, object exc) except -1     # connection_lost's part of it


cdef object forwarded_client(object headers)    # the client an HTTP proxy names, or None
