"""The baseline: the chat server a typical Python developer would write.

asyncio streams, the protobuf package, and for each chat one `writer.write`
per member of the room. Same protocol as netcore-server (guest login, enter
with roomId, S_CHAT to the room), so the same netcore-dummy drives both.

    python benchmarks/baseline_server.py [--port 7778] [--loop asyncio|uvloop]
"""
import argparse
import asyncio
import itertools
import struct
import sys

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.Enum_pb2 import PLAYER_TYPE_KNIGHT
from netcore_packets.Struct_pb2 import Player

C_LOGIN, S_LOGIN, C_ENTER_GAME, S_ENTER_GAME, C_CHAT, S_CHAT = range(1000, 1006)
player_ids = itertools.count(1)
rooms = {}


def frame(pkt_id, msg):
    body = msg.SerializeToString()
    return struct.pack("<HH", len(body) + 4, pkt_id) + body


async def handle(reader, writer):
    player_id = room = None
    try:
        while True:
            size, pkt_id = struct.unpack("<HH", await reader.readexactly(4))
            body = await reader.readexactly(size - 4)
            if pkt_id == C_LOGIN:
                writer.write(frame(S_LOGIN, pb.S_LOGIN(success=True, players=[
                    Player(name="Knight1", playerType=PLAYER_TYPE_KNIGHT),
                    Player(name="Knight2", playerType=PLAYER_TYPE_KNIGHT)])))
            elif pkt_id == C_ENTER_GAME:
                enter = pb.C_ENTER_GAME.FromString(body)
                player_id = next(player_ids)
                room = rooms.setdefault(enter.roomId, set())
                writer.write(frame(S_ENTER_GAME, pb.S_ENTER_GAME(success=True, playerId=player_id)))
                room.add(writer)
            elif pkt_id == C_CHAT and room is not None:
                chat = pb.C_CHAT.FromString(body)
                data = frame(S_CHAT, pb.S_CHAT(playerId=player_id, msg=chat.msg))
                for member in room:
                    member.write(data)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        if room is not None:
            room.discard(writer)
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print(f"baseline listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7778)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    try:
        asyncio.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
