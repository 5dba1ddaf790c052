"""The WebSocket baseline: the chat server a typical Python developer would
write with the `websockets` library.

Same protocol as netcore-server's --ws-port (guest login, enter with roomId,
S_CHAT to the room; each binary message carries whole packets), so
`netcore-dummy --transport ws` drives both. For each chat, one
`await member.send(...)` per member of the room, as the library's examples do.
The protocol's few lines are baseline_server.py's (same folder).

    python benchmarks/baseline_ws_server.py [--port 7779] [--loop asyncio|uvloop]
"""
import struct

import websockets
from websockets.asyncio.server import serve

from baseline_server import C_CHAT, C_ENTER_GAME, C_LOGIN, chat_packet, cli, enter, login_reply


def packets(data):
    pos = 0
    while pos + 4 <= len(data):
        size, pkt_id = struct.unpack_from("<HH", data, pos)
        yield pkt_id, data[pos + 4:pos + size]
        pos += size


async def handle(ws):
    player_id = room = None
    try:
        async for message in ws:
            for pkt_id, body in packets(message):
                if pkt_id == C_LOGIN:
                    await ws.send(login_reply())
                elif pkt_id == C_ENTER_GAME:
                    player_id, room, reply = enter(body)
                    await ws.send(reply)
                    room.add(ws)
                elif pkt_id == C_CHAT and room is not None:
                    data = chat_packet(player_id, body)
                    for member in list(room):
                        try:
                            await member.send(data)
                        except websockets.ConnectionClosed:
                            room.discard(member)
    except websockets.ConnectionClosed:
        pass
    finally:
        if room is not None:
            room.discard(ws)


async def main(port):
    async with serve(handle, "127.0.0.1", port, backlog=4096, max_size=1 << 20,
                     compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"baseline websocket listening on 127.0.0.1:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    cli(main, 7779)
