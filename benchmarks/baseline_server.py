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


def login_reply():
    return frame(S_LOGIN, pb.S_LOGIN(success=True, players=[
        Player(name="Knight1", playerType=PLAYER_TYPE_KNIGHT),
        Player(name="Knight2", playerType=PLAYER_TYPE_KNIGHT)]))


def enter(body):
    """C_ENTER_GAME: (the new player's id, its room's member set, the reply)."""
    player_id = next(player_ids)
    room = rooms.setdefault(pb.C_ENTER_GAME.FromString(body).roomId, set())
    return player_id, room, frame(S_ENTER_GAME, pb.S_ENTER_GAME(success=True,
                                                               playerId=player_id))


def chat_packet(player_id, body):
    return frame(S_CHAT, pb.S_CHAT(playerId=player_id, msg=pb.C_CHAT.FromString(body).msg))


async def handle(reader, writer):
    player_id = room = None
    try:
        while True:
            size, pkt_id = struct.unpack("<HH", await reader.readexactly(4))
            body = await reader.readexactly(size - 4)
            if pkt_id == C_LOGIN:
                writer.write(login_reply())
            elif pkt_id == C_ENTER_GAME:
                player_id, room, reply = enter(body)
                writer.write(reply)
                room.add(writer)
            elif pkt_id == C_CHAT and room is not None:
                data = chat_packet(player_id, body)
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


def cli(main, default_port):
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=default_port)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    try:
        asyncio.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    cli(main, 7778)
