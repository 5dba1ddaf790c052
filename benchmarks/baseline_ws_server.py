"""The WebSocket baseline: the chat server a typical Python developer would
write with the `websockets` library.

Same protocol as netcore-server's --ws-port (guest login, enter with roomId,
S_CHAT to the room; each binary message carries whole packets), so
`netcore-dummy --transport ws` drives both. For each chat, one
`await member.send(...)` per member of the room, as the library's examples do.

    python benchmarks/baseline_ws_server.py [--port 7779] [--loop asyncio|uvloop]
"""
import argparse
import asyncio
import itertools
import struct
import sys

import websockets
from websockets.asyncio.server import serve

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.Enum_pb2 import PLAYER_TYPE_KNIGHT
from netcore_packets.Struct_pb2 import Player

C_LOGIN, S_LOGIN, C_ENTER_GAME, S_ENTER_GAME, C_CHAT, S_CHAT = range(1000, 1006)
player_ids = itertools.count(1)
rooms = {}


def frame(pkt_id, msg):
    body = msg.SerializeToString()
    return struct.pack("<HH", len(body) + 4, pkt_id) + body


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
                    await ws.send(frame(S_LOGIN, pb.S_LOGIN(success=True, players=[
                        Player(name="Knight1", playerType=PLAYER_TYPE_KNIGHT),
                        Player(name="Knight2", playerType=PLAYER_TYPE_KNIGHT)])))
                elif pkt_id == C_ENTER_GAME:
                    enter = pb.C_ENTER_GAME.FromString(body)
                    player_id = next(player_ids)
                    room = rooms.setdefault(enter.roomId, set())
                    await ws.send(frame(S_ENTER_GAME, pb.S_ENTER_GAME(success=True,
                                                                      playerId=player_id)))
                    room.add(ws)
                elif pkt_id == C_CHAT and room is not None:
                    chat = pb.C_CHAT.FromString(body)
                    data = frame(S_CHAT, pb.S_CHAT(playerId=player_id, msg=chat.msg))
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7779)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    try:
        asyncio.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
