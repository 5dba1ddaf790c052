"""WebSocket test helpers: a raw RFC 6455 client, written from the RFC (not
netcore's code), for what no well-behaved library will send."""
import asyncio
import base64
import os
import struct

from netcore import ServerService
from netcore.websocket import WebSocketListener

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin=True, mask=True) -> bytes:
    """One client frame (masked unless told not to)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def raw_ws(port, *, origin=None, host=None, path="/ws", local_addr=None, sock=None,
                 headers=(), before=b""):
    """(reader, writer) after a successful upgrade; AssertionError with the status line if not.
    local_addr: connect from that address; sock: a connected socket to speak on instead;
    headers: more header lines; before: bytes sent ahead of the request (a PROXY header)."""
    if sock is not None:
        reader, writer = await asyncio.open_connection(sock=sock)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local_addr)
    return await upgrade(reader, writer, port, origin=origin, host=host, path=path,
                         headers=headers, before=before)


def upgrade_request(port, *, origin=None, host=None, path="/ws", headers=()):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
             "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
             "Sec-WebSocket-Version: 13", *headers]
    if origin:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def upgrade(reader, writer, port, *, origin=None, host=None, path="/ws", headers=(),
                  before=b""):
    """The HTTP upgrade on a connection already open; (reader, writer) once it is done."""
    writer.write(before + upgrade_request(port, origin=origin, host=host, path=path,
                                          headers=headers))
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    assert b" 101 " in status, status
    return reader, writer


async def http_get(port, path="/", headers=()):
    """(status code, headers dict, body) of one plain HTTP request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields, body


async def read_frame(reader):
    """(fin, opcode, payload) of one server frame (servers never mask)."""
    b0, b1 = await reader.readexactly(2)
    assert not b1 & 0x80, "a server frame must not be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return bool(b0 & 0x80), b0 & 0x0F, await reader.readexactly(n)


async def read_close(reader, timeout=10.0):
    """(code, reason) of the server's close frame; binary messages before it are skipped."""
    async def go():
        while True:
            _, opcode, payload = await read_frame(reader)
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode()
    return await asyncio.wait_for(go(), timeout)


async def ws_service(factory, **limits):
    """A started ServerService and a WebSocketListener on it (both on free ports)."""
    ws_options = {k: limits.pop(k) for k in ("origins", "max_message_size", "pages",
                                             "handshake_timeout", "max_upgrades",
                                             "max_upgrades_per_address", "listen_sockets")
                  if k in limits}
    service = await ServerService(factory, "127.0.0.1", 0, **limits).start()
    listener = await WebSocketListener(service, "127.0.0.1", 0, **ws_options).start()
    return service, listener

