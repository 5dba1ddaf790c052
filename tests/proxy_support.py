"""PROXY protocol headers as a proxy writes them, built from HAProxy's
proxy-protocol.txt with struct and ipaddress (not with netcore's code), and
clients that arrive through a "proxy": a loopback address of their own
(127.0.0.2, ...) that the server under test trusts."""
import asyncio
import ipaddress
import struct

from game_support import GameClient

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_HOST = "127.0.0.2"            # the trusted proxy's address in these tests
OTHER_HOST = "127.0.0.3"            # a peer nobody trusts


def v1(src, sport, dst=None, dport=7777):
    """A v1 line for TCP over the family of `src`."""
    family = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("2001:db8::ffff" if ":" in src else "192.0.2.1")
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src=None, sport=0, dst=None, dport=7777, *, command=1, fam=None, tlvs=b"",
       version=2, length=None):
    """A v2 header: PROXY (command 1) for TCP over the family of `src`, or
    LOCAL (command 0) with no addresses; `fam` forces the family/protocol
    byte, `length` the length field, `tlvs` follows the addresses."""
    if src is None:
        block = b""
        fam = 0x00 if fam is None else fam
    else:
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(
            dst or ("192.0.2.1" if ":" not in src else "2001:db8::ffff"))
        block = s.packed + d.packed + struct.pack("!HH", sport, dport)
        if fam is None:
            fam = 0x11 if s.version == 4 else 0x21
    body = block + tlvs
    return (V2_SIG + bytes([(version << 4) | command, fam])
            + struct.pack("!H", len(body) if length is None else length) + body)


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


class ProxiedClient(GameClient):
    """A GameClient whose connection begins with `header`, as a proxy's does."""

    def __init__(self, header):
        super().__init__()
        self.header = header

    def on_connected(self):
        self.transport.write(self.header)       # before any packet: nothing is flushed yet


async def via_proxy(port, header, proxy=PROXY_HOST, factory=ProxiedClient):
    """A client connected from `proxy` whose stream begins with `header`."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: factory(header), "127.0.0.1", port,
                                             local_addr=(proxy, 0))
    return client


async def raw_from(port, host):
    """(reader, writer) of a raw connection from `host`."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
