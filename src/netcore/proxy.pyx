# cython: language_level=3
"""Real client addresses behind proxies: the PROXY protocol header, trusted
networks, and the Forwarded / X-Forwarded-For headers (see proxy.pxd)."""
import ipaddress

from cpython.buffer cimport PyBUF_WRITE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.string cimport memcmp, memcpy, memset

cdef extern from *:
    """
    #ifdef _WIN32
    #include <winsock2.h>
    #include <ws2tcpip.h>
    #ifdef _MSC_VER
    #pragma comment(lib, "Ws2_32.lib")
    #endif
    #else
    #include <sys/socket.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #endif
    #include <string.h>
    static const unsigned char netcore_proxy_v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
    static const unsigned char netcore_proxy_v2_sig[12] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    /* text: NUL-terminated. 1 with the 16 bytes in out, else 0. */
    static int netcore_ip6_from_text(const char *text, unsigned char *out) {
        return inet_pton(AF_INET6, text, out) == 1;
    }
    /* family 4 or 6; out has room for 46 bytes. 1, or 0 on failure. */
    static int netcore_ip_to_text(int family, const unsigned char *addr, char *out) {
        return inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, out, 46) != NULL;
    }
    /* The IP of a socket address: 4 or 6 with its bytes in out, 0 for another family. */
    static int netcore_sockaddr_ip(const void *sa, unsigned char *out) {
        const struct sockaddr *a = (const struct sockaddr *)sa;
        if (a->sa_family == AF_INET) {
            memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
            return 4;
        }
        if (a->sa_family == AF_INET6) {
            memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
            return 6;
        }
        return 0;
    }
    """
    const unsigned char netcore_proxy_v1_sig[6]
    const unsigned char netcore_proxy_v2_sig[12]
    int netcore_ip6_from_text(const char* text, unsigned char* out) nogil
    int netcore_ip_to_text(int family, const unsigned char* addr, char* out) nogil
    int netcore_sockaddr_ip(const void* sa, unsigned char* out) nogil

from netcore.addresses import parse_networks

MAX_HEADER = PROXY_MAX_HEADER
"""The longest PROXY header accepted, in bytes (v2 with its TLVs)."""
V1_MAX = PROXY_V1_MAX
"""The longest v1 header line, CRLF included (the spec's bound)."""
HEADER_TIMEOUT = float(PROXY_HEADER_TIMEOUT_S)
"""Seconds a connection from a trusted proxy has to send its header, by default."""
REASONS = ("missing", "malformed", "oversized", "timeout", "closed")
"""Why a connection from a trusted proxy was closed before its header was
read (a counter each): not a PROXY header, not a valid one, longer than
MAX_HEADER, not complete in time, the connection ended first."""

cdef int MAX_IP_TEXT = 45       # the longest IPv6 text inet_pton takes (with IPv4 inside)


class ProxyHeaderError(ValueError):
    """A PROXY header that cannot be accepted. `reason` says which way:
    "missing", "malformed" or "oversized" (see REASONS)."""

    def __init__(self, str reason, str detail):
        super().__init__(detail)
        self.reason = reason


cdef inline bint _digit(unsigned char c) noexcept:
    return c >= c'0' and c <= c'9'


cdef int _ipv4(const unsigned char* p, Py_ssize_t n, unsigned char* out) noexcept:
    """1 when p[0:n] is exactly four decimal numbers 0..255 joined by single
    dots, without leading zeros (the spec's canonical form); out gets them."""
    cdef Py_ssize_t i = 0
    cdef int part, digits, value
    for part in range(4):
        if part:
            if i >= n or p[i] != c'.':
                return 0
            i += 1
        digits = value = 0
        while i < n and _digit(p[i]):
            if digits and value == 0:
                return 0                # a leading zero
            value = value * 10 + (p[i] - c'0')
            digits += 1
            i += 1
            if value > 255:
                return 0
        if not digits:
            return 0
        out[part] = <unsigned char>value
    return i == n


cdef int _ipv6(const unsigned char* p, Py_ssize_t n, unsigned char* out) noexcept:
    """1 when p[0:n] is an IPv6 address in text (hex digits, colons, an
    IPv4 tail); out gets its 16 bytes."""
    cdef char text[48]
    cdef Py_ssize_t i
    cdef unsigned char c
    if n < 2 or n > MAX_IP_TEXT:
        return 0
    for i in range(n):
        c = p[i]
        if not (_digit(c) or c == c':' or c == c'.' or (c >= c'a' and c <= c'f')
                or (c >= c'A' and c <= c'F')):
            return 0
        text[i] = <char>c
    text[n] = 0
    return netcore_ip6_from_text(text, out)


cdef int _port(const unsigned char* p, Py_ssize_t n, bint leading_zeros) noexcept:
    """The port p[0:n] spells in decimal (0..65535), or -1."""
    cdef Py_ssize_t i
    cdef int value = 0
    if n < 1 or n > 5 or (n > 1 and p[0] == c'0' and not leading_zeros):
        return -1
    for i in range(n):
        if not _digit(p[i]):
            return -1
        value = value * 10 + (p[i] - c'0')
    return value if value <= 65535 else -1


cdef Py_ssize_t _space(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end) noexcept:
    while pos < end:
        if p[pos] == c' ':
            return pos
        pos += 1
    return -1


cdef object _malformed(str detail):
    return ProxyHeaderError("malformed", detail)


cdef Py_ssize_t _parse_v1(const unsigned char* p, Py_ssize_t n, ProxyHeader* h) except -1:
    """The v1 line (p begins with "PROXY "); 0 until its CRLF has come."""
    cdef Py_ssize_t i, lf = -1, end, pos, sp
    cdef Py_ssize_t limit = n if n < PROXY_V1_MAX else PROXY_V1_MAX
    cdef int family, port
    for i in range(6, limit):
        if p[i] == c'\n':
            lf = i
            break
    if lf < 0:
        if n >= PROXY_V1_MAX:
            raise ProxyHeaderError("oversized", f"a v1 PROXY header without CRLF in its first "
                                                f"{PROXY_V1_MAX} bytes")
        return 0
    if p[lf - 1] != c'\r':
        raise _malformed("a v1 PROXY header ends with a lone LF")
    end = lf - 1                        # the CR: the fields are p[6:end]
    pos = 6
    h.version = 1
    h.size = lf + 1
    if end - pos >= 7 and memcmp(p + pos, b"UNKNOWN", 7) == 0:
        # Whatever follows is ignored (the spec), after a space.
        if end - pos > 7 and p[pos + 7] != c' ':
            raise _malformed("a v1 PROXY header's protocol is not TCP4, TCP6 or UNKNOWN")
        h.local = 1
        h.family = 0
        return h.size
    if end - pos >= 5 and memcmp(p + pos, b"TCP4 ", 5) == 0:
        family = 4
    elif end - pos >= 5 and memcmp(p + pos, b"TCP6 ", 5) == 0:
        family = 6
    else:
        raise _malformed("a v1 PROXY header's protocol is not TCP4, TCP6 or UNKNOWN")
    pos += 5
    # source address, destination address, source port, destination port
    sp = _space(p, pos, end)
    if sp < 0 or not (_ipv4(p + pos, sp - pos, h.src) if family == 4
                      else _ipv6(p + pos, sp - pos, h.src)):
        raise _malformed(f"a v1 PROXY header's source is not an IPv{family} address")
    pos = sp + 1
    sp = _space(p, pos, end)
    if sp < 0 or not (_ipv4(p + pos, sp - pos, h.dst) if family == 4
                      else _ipv6(p + pos, sp - pos, h.dst)):
        raise _malformed(f"a v1 PROXY header's destination is not an IPv{family} address")
    pos = sp + 1
    sp = _space(p, pos, end)
    port = _port(p + pos, sp - pos, False) if sp >= 0 else -1
    if port < 0:
        raise _malformed("a v1 PROXY header's source port is not 0..65535")
    h.src_port = port
    pos = sp + 1
    port = _port(p + pos, end - pos, False)
    if port < 0:
        raise _malformed("a v1 PROXY header's destination port is not 0..65535 (or more "
                         "follows it)")
    h.dst_port = port
    h.family = family
    h.local = 0
    return h.size


cdef Py_ssize_t _parse_v2(const unsigned char* p, Py_ssize_t n, ProxyHeader* h) except -1:
    """The binary header (p begins with the 12-byte signature); 0 until all
    of it has come. Each check is made as soon as its bytes are there."""
    cdef int command, fam
    cdef Py_ssize_t length, total
    if n <= PROXY_V2_SIG:
        return 0
    if p[12] >> 4 != 2:
        raise _malformed(f"a v2 PROXY header of version {p[12] >> 4}")
    command = p[12] & 0x0F
    if command > 1:
        raise _malformed(f"a v2 PROXY header with command {command} (not LOCAL or PROXY)")
    if n < 14:
        return 0
    fam = p[13]
    # The seven family/protocol bytes the spec lists; LOCAL ignores it.
    if command == 1 and fam not in (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32):
        raise _malformed(f"a v2 PROXY header with family/protocol byte 0x{fam:02x}")
    if n < PROXY_V2_FIXED:
        return 0
    length = (<Py_ssize_t>p[14] << 8) | p[15]
    total = PROXY_V2_FIXED + length
    if total > PROXY_MAX_HEADER:
        raise ProxyHeaderError("oversized", f"a v2 PROXY header of {total} bytes (at most "
                                            f"{PROXY_MAX_HEADER})")
    if command == 1 and ((fam == 0x11 and length < 12) or (fam == 0x21 and length < 36)):
        raise _malformed(f"a v2 PROXY header's length {length} is too short for its addresses")
    if n < total:
        return 0
    h.version = 2
    h.size = total
    h.local = command == 0
    h.family = 0
    if command == 1 and fam == 0x11:
        memcpy(h.src, p + 16, 4)
        memcpy(h.dst, p + 20, 4)
        h.src_port = (<unsigned int>p[24] << 8) | p[25]
        h.dst_port = (<unsigned int>p[26] << 8) | p[27]
        h.family = 4
    elif command == 1 and fam == 0x21:
        memcpy(h.src, p + 16, 16)
        memcpy(h.dst, p + 32, 16)
        h.src_port = (<unsigned int>p[48] << 8) | p[49]
        h.dst_port = (<unsigned int>p[50] << 8) | p[51]
        h.family = 6
    # Else (LOCAL, AF_UNSPEC, UDP, UNIX): the connection's own address, as
    # the spec's fallback to UNSPEC. TLVs, past the addresses: skipped.
    return total


cdef Py_ssize_t parse_proxy_header(const unsigned char* p, Py_ssize_t n,
                                   ProxyHeader* h) except -1:
    cdef Py_ssize_t i
    cdef bint v1 = True, v2 = True
    for i in range(n if n < 6 else 6):
        if p[i] != netcore_proxy_v1_sig[i]:
            v1 = False
            break
    for i in range(n if n < PROXY_V2_SIG else PROXY_V2_SIG):
        if p[i] != netcore_proxy_v2_sig[i]:
            v2 = False
            break
    if v1 and n >= 6:
        return _parse_v1(p, n, h)
    if v2 and n >= PROXY_V2_SIG:
        return _parse_v2(p, n, h)
    if v1 or v2:
        return 0                        # too short to tell yet
    raise ProxyHeaderError("missing", f"no PROXY header: the connection begins with "
                                      f"{bytes(p[:n if n < 8 else 8])!r}")


cdef object _ip_text(int family, const unsigned char* addr):
    cdef char text[48]
    if not netcore_ip_to_text(family, addr, text):
        raise ValueError("an address that cannot be written")
    return text.decode("ascii")


cdef object _peername(int family, const unsigned char* addr, unsigned int port):
    """An address as the socket module gives a peer's: (host, port), and
    (host, port, flowinfo, scope_id) for IPv6."""
    if family == 4:
        return (_ip_text(4, addr), port)
    return (_ip_text(6, addr), port, 0, 0)


cdef object header_source(ProxyHeader* h):
    if h.family == 0:
        return None
    return _peername(h.family, h.src, h.src_port)


def parse_header(const unsigned char[::1] data not None):
    """The PROXY header `data` begins with: None while it is a valid
    beginning that needs more bytes; else (version, size, source,
    destination), source and destination as the socket module writes
    peers' addresses, both None where the header keeps the connection's own
    (LOCAL, UNKNOWN, a family we do not serve). A header that cannot be
    accepted raises ProxyHeaderError (its reason: missing, malformed,
    oversized). Reads data[:len(data)] only."""
    cdef ProxyHeader h
    cdef Py_ssize_t size
    cdef unsigned char empty = 0
    memset(&h, 0, sizeof(h))
    size = parse_proxy_header(&data[0] if data.shape[0] else &empty, data.shape[0], &h)
    if not size:
        return None
    if h.family == 0:
        return (h.version, size, None, None)
    return (h.version, size, _peername(h.family, h.src, h.src_port),
            _peername(h.family, h.dst, h.dst_port))


# -- trusted networks ------------------------------------------------------------------

cdef inline bint _in_network(const Network* net, const unsigned char* addr) noexcept:
    cdef int whole = net.prefix >> 3, rest = net.prefix & 7
    cdef unsigned char mask
    if whole and memcmp(net.addr, addr, whole) != 0:
        return False
    if rest:
        mask = <unsigned char>(0xFF << (8 - rest))
        return (net.addr[whole] & mask) == (addr[whole] & mask)
    return True


cdef inline bint _v4_mapped(const unsigned char* a) noexcept:
    cdef int i
    for i in range(10):
        if a[i]:
            return False
    return a[10] == 0xFF and a[11] == 0xFF


cdef class NetworkSet:
    """Networks, checked in C: whether an address is in any of them (see
    proxy.pxd). An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is also in the
    IPv4 networks that hold the IPv4 address it is."""

    def __cinit__(self):
        self.nets = NULL

    def __init__(self, networks):
        """networks: "10.0.0.0/8,2001:db8::/32" as --exempt-networks reads
        it, or an iterable of networks or their texts (ValueError for a bad one)."""
        cdef Network* net
        cdef Py_ssize_t i
        if isinstance(networks, str):
            parsed = parse_networks(networks)
        else:
            parsed = parse_networks([str(item) for item in networks])
        self.networks = parsed
        self.count = len(parsed)
        if self.count:
            self.nets = <Network*>PyMem_Malloc(self.count * sizeof(Network))
            if self.nets == NULL:
                raise MemoryError()
        for i, item in enumerate(parsed):
            net = &self.nets[i]
            memset(net, 0, sizeof(Network))
            packed = item.network_address.packed
            net.family = item.version
            net.prefix = item.prefixlen
            memcpy(net.addr, <const unsigned char*>packed, len(packed))

    def __dealloc__(self):
        PyMem_Free(self.nets)

    def __len__(self):
        return self.count

    def __repr__(self):
        return f"NetworkSet({','.join(str(n) for n in self.networks)!r})"

    def __contains__(self, host):
        return self.contains_host(host)

    cdef bint contains_ip(self, int family, const unsigned char* addr) noexcept:
        cdef Py_ssize_t i
        cdef bint mapped = family == 6 and _v4_mapped(addr)
        for i in range(self.count):
            if self.nets[i].family == family and _in_network(&self.nets[i], addr):
                return True
            if mapped and self.nets[i].family == 4 and _in_network(&self.nets[i], addr + 12):
                return True
        return False

    cdef bint contains_sockaddr(self, const void* sa) noexcept:
        cdef unsigned char addr[16]
        cdef int family = netcore_sockaddr_ip(sa, addr)
        return family != 0 and self.contains_ip(family, addr)

    cpdef bint contains_host(self, object host) except -1:
        """Whether `host` (an address as a string, as a peername has it; an
        IPv6 zone is ignored) is in one of the networks; False for anything
        that is not an IP address."""
        cdef unsigned char addr[16]
        cdef bytes text
        cdef const unsigned char* p
        cdef Py_ssize_t n
        if not isinstance(host, str) or not self.count:
            return False
        try:
            text = (<str>host).partition("%")[0].encode("ascii")
        except UnicodeEncodeError:
            return False
        p = <const unsigned char*>text
        n = len(text)
        if _ipv4(p, n, addr):
            return self.contains_ip(4, addr)
        if _ipv6(p, n, addr):
            return self.contains_ip(6, addr)
        return False


# -- the header reader -------------------------------------------------------------------

cdef class HeaderReader:
    """A connection's protocol until its PROXY header is read: the transport
    reads into this object's own buffer; done() or failed() follows, once."""

    def __init__(self):
        raise TypeError("a HeaderReader is made by the service that reads the header")

    def get_buffer(self, Py_ssize_t sizehint):
        if self.finished or self.have >= PROXY_MAX_HEADER:
            raise RuntimeError("a read after the PROXY header was settled")
        return PyMemoryView_FromMemory(<char*>self.buf + self.have, PROXY_MAX_HEADER - self.have,
                                       PyBUF_WRITE)

    def buffer_updated(self, Py_ssize_t nbytes):
        self.received(nbytes)

    cdef int received(self, Py_ssize_t nbytes) except -1:
        cdef ProxyHeader h
        cdef Py_ssize_t size
        if self.finished:
            return 0
        if nbytes < 0 or nbytes > PROXY_MAX_HEADER - self.have:
            raise RuntimeError("a read overran the PROXY header's buffer")
        self.have += nbytes
        memset(&h, 0, sizeof(h))
        try:
            size = parse_proxy_header(self.buf, self.have, &h)
        except ProxyHeaderError as exc:
            self.finished = True
            self.failed(exc.reason, str(exc))
            return 0
        if size:
            self.finished = True
            self.done(&h, self.buf + size, self.have - size)
        return 0

    cdef int done(self, ProxyHeader* h, const unsigned char* rest, Py_ssize_t n) except -1:
        raise NotImplementedError

    cdef int failed(self, str reason, str detail) except -1:
        raise NotImplementedError

    cdef int end(self, str reason, str detail, bint abort) except -1:
        raise NotImplementedError

    def eof_received(self):
        if not self.finished:
            self.end("closed", "the connection ended before its PROXY header was complete",
                     False)
        return False

    cdef int lost(self, object exc) except -1:
        if not self.finished:
            self.end("closed", "the connection ended before its PROXY header was complete"
                     + (f" ({exc})" if exc else ""), False)
        return 0


# -- Forwarded and X-Forwarded-For --------------------------------------------------------

cdef object _host_port(str node, bint brackets_only):
    """A peername from "192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]",
    "[2001:db8::1]:4711" (and, unless brackets_only, a bare IPv6 address);
    None for anything else ("unknown", an obfuscated identifier, garbage).
    An obfuscated port ("_a1") is port 0, as is a missing one."""
    cdef unsigned char addr[16]
    cdef int family, port = 0
    cdef bytes host, port_text = b""
    try:
        text = node.encode("ascii")
    except UnicodeEncodeError:
        return None
    if text.startswith(b"["):
        host, sep, rest = text[1:].partition(b"]")
        if not sep:
            return None
        if rest:
            if not rest.startswith(b":"):
                return None
            port_text = rest[1:]
        family = 6 if _ipv6(<const unsigned char*>host, len(host), addr) else 0
    elif text.count(b":") == 1:
        host, _, port_text = text.partition(b":")
        family = 4 if _ipv4(<const unsigned char*>host, len(host), addr) else 0
    elif b":" in text:
        if brackets_only:
            return None
        host = text
        family = 6 if _ipv6(<const unsigned char*>host, len(host), addr) else 0
    else:
        host = text
        family = 4 if _ipv4(<const unsigned char*>host, len(host), addr) else 0
    if not family:
        return None
    if port_text:
        if port_text.startswith(b"_"):
            port = 0                    # obfuscated (RFC 7239 6.3): the address stands
        else:
            port = _port(<const unsigned char*>port_text, len(port_text), True)
            if port < 0:
                return None
    return _peername(family, addr, port)


cdef inline bint _ows(Py_UCS4 c) noexcept:
    return c == u' ' or c == u'\t'


cdef list _split_top(str value, Py_UCS4 sep):
    """value split at `sep` outside quoted strings (None: an unterminated
    quote); the parts stripped of spaces and tabs."""
    cdef list parts = []
    cdef Py_ssize_t i = 0, start = 0, n = len(value)
    cdef bint quoted = False
    cdef Py_UCS4 c
    while i < n:
        c = value[i]
        if quoted:
            if c == u'\\':
                i += 1
            elif c == u'"':
                quoted = False
        elif c == u'"':
            quoted = True
        elif c == sep:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if quoted:
        return None
    parts.append(value[start:].strip(" \t"))
    return parts


cdef object _unquote(str value):
    """A token or a quoted-string's content (backslash escapes undone); None if neither."""
    cdef Py_ssize_t i, n = len(value)
    cdef list out
    cdef Py_UCS4 c
    if n >= 2 and value[0] == u'"' and value[n - 1] == u'"':
        out = []
        i = 1
        while i < n - 1:
            c = value[i]
            if c == u'\\':
                i += 1
                if i >= n - 1:
                    return None
                c = value[i]
            out.append(c)
            i += 1
        return "".join(out)
    for c in value:
        if c == u'"' or c == u'\\' or _ows(c) or c < 0x21 or c > 0x7E:
            return None
    return value


def forwarded_address(str value not None):
    """The client the last element of a Forwarded value (RFC 7239; every
    line of the header joined with commas) names in its for= parameter, as
    a peername; None where there is none to believe: no for=, "unknown", an
    obfuscated identifier, anything malformed."""
    parts = _split_top(value, u',')
    if parts is None:
        return None
    element = None
    for part in reversed(parts):
        if part:
            element = part
            break
    if element is None:
        return None
    pairs = _split_top(element, u';')
    if pairs is None:
        return None
    node = None
    for pair in pairs:
        if not pair:
            continue
        name, sep, raw = pair.partition("=")
        if not sep or not name or _unquote(name) is None:
            return None
        if name.lower() == "for":
            if node is not None:
                return None             # two for= in one element: which one?
            node = _unquote(raw)
            if node is None:
                return None
    if node is None:
        return None
    return _host_port(node, True)


def x_forwarded_for_address(str value not None):
    """The client the last entry of an X-Forwarded-For value (every line
    joined with commas) names, as a peername; None if it is not an address."""
    for entry in reversed(value.split(",")):
        entry = entry.strip(" \t")
        if entry:
            return _host_port(entry, False)
    return None


cdef object forwarded_client(object headers):
    values = headers.getall("Forwarded", None)
    if values:
        return forwarded_address(",".join(values))
    values = headers.getall("X-Forwarded-For", None)
    if values:
        return x_forwarded_for_address(",".join(values))
    return None


def client_from_headers(headers):
    """The client an HTTP proxy names in `headers` (a multidict: getall):
    Forwarded's if there is one, else X-Forwarded-For's (see proxy.pxd);
    None keeps the connection's own address."""
    return forwarded_client(headers)
