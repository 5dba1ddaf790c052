"""The PROXY protocol parser (netcore.proxy, C), trusted networks and the
Forwarded / X-Forwarded-For readers, against headers built from HAProxy's
spec and RFC 7239 (proxy_support.py), and a property test: whatever it is
given, the parser raises nothing but ProxyHeaderError, reads nothing past
what it was given (a buffer that ends at an unreadable page), and decides
only from the bytes it has (an answer for a prefix never changes when more
bytes come)."""
import ctypes
import ctypes.util
import ipaddress
import mmap
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcore.proxy import (
    MAX_HEADER, V1_MAX, NetworkSet, ProxyHeaderError, client_from_headers, forwarded_address,
    parse_header, x_forwarded_for_address,
)
from proxy_support import V2_SIG, tlv, v1, v2


def reason(data):
    with pytest.raises(ProxyHeaderError) as exc:
        parse_header(data)
    return exc.value.reason


# -- version 1 ----------------------------------------------------------------------------

def test_v1_tcp4_and_tcp6_name_the_client_and_end_at_the_crlf():
    head = v1("203.0.113.7", 4711, "192.0.2.1", 7777)
    assert parse_header(head + b"\x08\x00\xe8\x03more") == (
        1, len(head), ("203.0.113.7", 4711), ("192.0.2.1", 7777))
    head = v1("2001:db8::1", 65535, "2001:DB8:0:0:0:0:0:2", 0)
    assert parse_header(head) == (1, len(head), ("2001:db8::1", 65535, 0, 0),
                                  ("2001:db8::2", 0, 0, 0))
    # The spec's longest line: 107 bytes, CRLF included.
    worst = b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n"
    assert len(worst) == V1_MAX == 107
    assert parse_header(worst) == (1, 107, None, None)


def test_v1_unknown_keeps_the_connections_own_address():
    assert parse_header(b"PROXY UNKNOWN\r\n") == (1, 15, None, None)
    assert parse_header(b"PROXY UNKNOWN anything at all\r\nGET") == (1, 31, None, None)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 7777\n",           # LF without CR
    b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 7777\r\r\n",
    b"PROXY TCP4  203.0.113.7 192.0.2.1 4711 7777\r\n",        # two spaces
    b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 7777 \r\n",        # a trailing space
    b"PROXY TCP4 203.0.113.7 192.0.2.1 4711\r\n",              # a field missing
    b"PROXY TCP4 203.0.113.07 192.0.2.1 4711 7777\r\n",        # a leading zero
    b"PROXY TCP4 203.0.113.7 192.0.2.1 04711 7777\r\n",
    b"PROXY TCP4 203.0.113.256 192.0.2.1 4711 7777\r\n",
    b"PROXY TCP4 203.0.113 192.0.2.1 4711 7777\r\n",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 7777\r\n",
    b"PROXY TCP4 2001:db8::1 192.0.2.1 4711 7777\r\n",         # not the family announced
    b"PROXY TCP6 203.0.113.7 2001:db8::2 4711 7777\r\n",
    b"PROXY TCP6 2001:db8:::1 2001:db8::2 4711 7777\r\n",
    b"PROXY TCP6 2001:db8::1%eth0 2001:db8::2 4711 7777\r\n",
    b"PROXY TCP5 203.0.113.7 192.0.2.1 4711 7777\r\n",
    b"PROXY tcp4 203.0.113.7 192.0.2.1 4711 7777\r\n",
    b"PROXY UNKNOWNX\r\n",
    b"PROXY \r\n",
])
def test_v1_lines_that_do_not_exactly_match_are_malformed(line):
    assert reason(line) == "malformed"


def test_v1_without_a_crlf_in_107_bytes_is_oversized_and_needs_more_until_then():
    line = b"PROXY TCP6 " + b"f" * 200
    for n in range(V1_MAX):
        assert parse_header(line[:n]) is None
    assert reason(line[:V1_MAX]) == "oversized"
    assert reason(line) == "oversized"


# -- version 2 ----------------------------------------------------------------------------

def test_v2_tcp4_and_tcp6_name_the_client_and_skip_tlvs():
    head = v2("203.0.113.7", 4711, "192.0.2.1", 7777)
    assert len(head) == 28
    assert parse_header(head + b"\x08\x00") == (2, 28, ("203.0.113.7", 4711),
                                                ("192.0.2.1", 7777))
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"play.example.com") + tlv(0x04, b"\x00" * 40)
    head = v2("2001:db8::1", 1, "2001:db8::2", 2, tlvs=tlvs)
    assert parse_header(head + b"PROXY") == (2, 52 + len(tlvs), ("2001:db8::1", 1, 0, 0),
                                             ("2001:db8::2", 2, 0, 0))


@pytest.mark.parametrize("head", [
    v2(),                                               # LOCAL, no addresses
    v2("203.0.113.7", 4711, command=0),                 # LOCAL: the block is skipped
    v2(command=0, fam=0x77, tlvs=b"\xff" * 9),          # LOCAL ignores the family
    v2(command=1, fam=0x00),                            # PROXY AF_UNSPEC
    v2(command=1, fam=0x00, tlvs=b"junk"),
    v2("203.0.113.7", 53, fam=0x12),                    # UDP over IPv4: not ours to serve
    v2("2001:db8::1", 53, fam=0x22),
    v2(command=1, fam=0x31, tlvs=b"\x00" * 216),        # UNIX stream
    v2(command=1, fam=0x32),                            # UNIX datagram
])
def test_v2_local_unspec_and_other_families_keep_the_connections_own_address(head):
    version, size, source, destination = parse_header(head + b"after")
    assert (version, size, source, destination) == (2, len(head), None, None)


@pytest.mark.parametrize("head", [
    v2("203.0.113.7", 1, version=1),
    v2("203.0.113.7", 1, version=3),
    v2("203.0.113.7", 1, command=2),
    v2("203.0.113.7", 1, command=0xF),
    v2("203.0.113.7", 1, fam=0x13),
    v2("203.0.113.7", 1, fam=0x41),
    v2("203.0.113.7", 1, fam=0x10),
    v2("203.0.113.7", 1, length=11),                    # too short for two IPv4 addresses
    v2("2001:db8::1", 1, length=35),
    v2(command=1, fam=0x21),                            # TCP6 with no addresses at all
])
def test_v2_headers_the_spec_says_to_drop_are_malformed(head):
    assert reason(head) == "malformed"


def test_v2_longer_than_the_bound_is_oversized_once_its_length_is_read():
    ok = v2("203.0.113.7", 1, tlvs=tlv(0xE0, b"x" * (MAX_HEADER - 28 - 3)))
    assert len(ok) == MAX_HEADER and parse_header(ok)[1] == MAX_HEADER
    big = v2("203.0.113.7", 1, tlvs=tlv(0xE0, b"x" * (MAX_HEADER - 28 - 2)))
    assert reason(big[:16]) == "oversized"          # said by its length field alone
    assert reason(v2(length=65535)[:16]) == "oversized"


def test_a_header_needs_more_until_it_is_whole():
    for head in (v1("203.0.113.7", 1), v2("2001:db8::1", 1, tlvs=tlv(1, b"h2"))):
        for n in range(len(head)):
            assert parse_header(head[:n]) is None
        assert parse_header(head)[1] == len(head)


@pytest.mark.parametrize("data", [
    b"\x08\x00\xe8\x03abcd",            # a game packet
    b"GET / HTTP/1.1\r\n",
    b"PROXX",
    b"\r\n\r\n\x00\r\nQUIX",
    b"\x16\x03\x01\x02\x00",            # a TLS ClientHello
    b" PROXY TCP4",
])
def test_anything_else_is_a_missing_header_as_soon_as_it_can_be_told(data):
    assert reason(data) == "missing"


# -- the property test --------------------------------------------------------------------

class GuardedBuffer:
    """Bytes placed to end exactly where an unreadable page begins: a parser
    that reads one byte past what it was given dies of SIGSEGV there."""

    def __init__(self, size):
        self.page = mmap.PAGESIZE
        self.room = -(-size // self.page) * self.page
        self.map = mmap.mmap(-1, self.room + self.page)
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        anchor = ctypes.c_char.from_buffer(self.map)
        guard = ctypes.addressof(anchor) + self.room
        del anchor
        prot_none = 0
        assert libc.mprotect(ctypes.c_void_p(guard), ctypes.c_size_t(self.page), prot_none) == 0

    def view(self, data):
        self.map[self.room - len(data):self.room] = data
        return memoryview(self.map)[self.room - len(data):self.room]


GUARD = GuardedBuffer(8192) if sys.platform.startswith("linux") else None


def outcome(data):
    try:
        return parse_header(data)
    except ProxyHeaderError as exc:
        assert exc.reason in ("missing", "malformed", "oversized")
        return ("error", exc.reason)


def addresses():
    return st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


@st.composite
def headers(draw):
    """Valid headers of both versions, then maybe changed: a byte replaced,
    cut short, bytes inserted; with or without bytes after them."""
    src, dst = draw(addresses()), draw(addresses())
    if ":" in src:
        dst = dst if ":" in dst else "2001:db8::1"
    else:
        dst = dst if ":" not in dst else "192.0.2.1"
    ports = draw(st.tuples(st.integers(0, 65535), st.integers(0, 65535)))
    kind = draw(st.sampled_from(["v1", "v2", "v2tlv", "local", "unknown"]))
    if kind == "v1":
        data = v1(src, ports[0], dst, ports[1])
    elif kind == "unknown":
        data = b"PROXY UNKNOWN" + draw(st.binary(max_size=100)).replace(b"\n", b"") + b"\r\n"
    elif kind == "local":
        data = v2(command=0, tlvs=draw(st.binary(max_size=64)))
    else:
        data = v2(src, ports[0], dst, ports[1],
                  tlvs=draw(st.binary(max_size=300)) if kind == "v2tlv" else b"")
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["replace", "cut", "insert"]))
        at = draw(st.integers(0, len(data)))
        if change == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif change == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data) + draw(st.binary(max_size=40))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(headers(), st.binary(max_size=200),
                 st.binary(max_size=200).map(lambda b: V2_SIG + b),
                 st.binary(max_size=120).map(lambda b: b"PROXY " + b)),
       st.data())
def test_the_parser_raises_only_its_own_error_reads_only_what_it_is_given_and_never_changes_its_mind(
        data, draw):
    full = outcome(data)
    if isinstance(full, tuple) and full[0] != "error":
        version, size, source, destination = full
        assert version in (1, 2) and 0 < size <= min(len(data), MAX_HEADER)
        assert (source is None) == (destination is None)
    if GUARD is not None:
        assert outcome(GUARD.view(data)) == full
    # Any prefix: undecided, or the very answer the whole gives.
    for n in sorted(set(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))):
        part = outcome(data[:n])
        if part is None:
            assert not (isinstance(full, tuple) and full[0] != "error" and full[1] <= n)
        else:
            assert part == full
        if GUARD is not None:
            assert outcome(GUARD.view(data[:n])) == part


@settings(max_examples=500, deadline=None)
@given(addresses(), st.integers(0, 65535), st.binary(max_size=64))
def test_every_valid_header_gives_its_client(src, port, after):
    for head in (v1(src, port), v2(src, port), v2(src, port, tlvs=tlv(0x05, b"id"))):
        version, size, source, _ = parse_header(head + after)
        assert size == len(head)
        assert ipaddress.ip_address(source[0]) == ipaddress.ip_address(src)
        assert source[1] == port and len(source) == (4 if ":" in src else 2)


# -- trusted networks ---------------------------------------------------------------------

def test_a_network_set_holds_addresses_of_its_networks_only():
    nets = NetworkSet("10.0.0.0/8, 192.0.2.128/25,2001:db8::/32,127.0.0.2")
    assert len(nets) == 4
    assert "10.255.0.1" in nets and "192.0.2.200" in nets and "127.0.0.2" in nets
    assert "11.0.0.1" not in nets and "192.0.2.127" not in nets and "127.0.0.1" not in nets
    assert "2001:db8:ffff::1" in nets and "2001:db9::1" not in nets
    assert "::ffff:10.1.2.3" in nets                    # IPv4-mapped: the IPv4 it is
    assert "::ffff:10.1.2.3" in NetworkSet("::ffff:0:0/96")
    assert "fe80::1%eth0" not in nets and "2001:db8::1%2" in nets
    assert "not an address" not in nets and None not in nets and 10 not in nets
    assert len(NetworkSet("")) == 0 and "10.0.0.1" not in NetworkSet("")
    assert "10.0.0.1" in NetworkSet(["10.0.0.0/8"])
    with pytest.raises(ValueError, match="'nonsense' is not an IP address or network"):
        NetworkSet("10.0.0.0/8,nonsense")


@settings(max_examples=500, deadline=None)
@given(addresses(), st.data())
def test_network_membership_is_the_ipaddress_modules(host, draw):
    ip = ipaddress.ip_address(host)
    prefix = draw.draw(st.integers(0, ip.max_prefixlen))
    other = draw.draw(addresses())
    net = ipaddress.ip_network(f"{other}/{prefix if ':' in other else min(prefix, 32)}",
                               strict=False)
    mapped = ip.ipv4_mapped if ip.version == 6 else None
    expected = ((ip.version == net.version and ip in net)
                or (mapped is not None and net.version == 4 and mapped in net))
    assert (host in NetworkSet([str(net)])) == expected


# -- Forwarded and X-Forwarded-For --------------------------------------------------------

@pytest.mark.parametrize("value, client", [
    ("for=192.0.2.60;proto=http;by=203.0.113.43", ("192.0.2.60", 0)),
    ('for="[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", 4711, 0, 0)),
    ('For="[2001:DB8::1]"', ("2001:db8::1", 0, 0, 0)),
    ("for=192.0.2.43, for=198.51.100.17", ("198.51.100.17", 0)),    # the right-most
    ("for=192.0.2.43,for=198.51.100.17;proto=https,", ("198.51.100.17", 0)),
    ('for="192.0.2.43:4711"', ("192.0.2.43", 4711)),
    ('for="192.0.2.43:_port9"', ("192.0.2.43", 0)),              # obfuscated port
    ('proto=https;for="198.51.100.17";by=_proxy', ("198.51.100.17", 0)),
    ('for="\\[2001:db8::1\\]:80"', ("2001:db8::1", 80, 0, 0)),      # quoted-pairs undone
    ("for=198.51.100.17, for=unknown", None),                       # the last says unknown
    ('for="_gazonk"', None),                                        # obfuscated node
    ("for=2001:db8::1", None),                                      # IPv6 must be bracketed
    ('for="[2001:db8::1"', None),
    ("proto=https", None),                                          # no for= at all
    ("for=192.0.2.1;for=192.0.2.2", None),                          # which one?
    ('for="192.0.2.1', None),                                       # unterminated quote
    ("for 192.0.2.1", None),
    ("for=192.0.2.01", None),
    ("", None),
])
def test_forwarded_gives_the_last_elements_for(value, client):
    assert forwarded_address(value) == client


@pytest.mark.parametrize("value, client", [
    ("203.0.113.9", ("203.0.113.9", 0)),
    ("198.51.100.1, 203.0.113.9", ("203.0.113.9", 0)),              # the right-most
    ("198.51.100.1,203.0.113.9 , ", ("203.0.113.9", 0)),
    ("2001:db8::1", ("2001:db8::1", 0, 0, 0)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443, 0, 0)),
    ("203.0.113.9:80", ("203.0.113.9", 80)),
    ("203.0.113.9, unknown", None),
    ("203.0.113.9, 300.1.1.1", None),
    ("", None),
])
def test_x_forwarded_for_gives_its_last_entry(value, client):
    assert x_forwarded_for_address(value) == client


def test_forwarded_wins_over_x_forwarded_for_and_every_line_counts():
    from multidict import CIMultiDict
    both = CIMultiDict([("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=192.0.2.1"),
                        ("forwarded", "for=192.0.2.2")])
    assert client_from_headers(both) == ("192.0.2.2", 0)
    # A proxy that speaks Forwarded is not second-guessed from X-Forwarded-For.
    hidden = CIMultiDict([("Forwarded", "for=_hidden"), ("X-Forwarded-For", "203.0.113.9")])
    assert client_from_headers(hidden) is None
    lines = CIMultiDict([("X-Forwarded-For", "198.51.100.1"),
                         ("X-Forwarded-For", "198.51.100.2, 198.51.100.3")])
    assert client_from_headers(lines) == ("198.51.100.3", 0)
    assert client_from_headers(CIMultiDict()) is None


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=80))
def test_the_header_readers_take_any_text(value):
    for read in (forwarded_address, x_forwarded_for_address):
        client = read(value)
        assert client is None or ipaddress.ip_address(client[0])
