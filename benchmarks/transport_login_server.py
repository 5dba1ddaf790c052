"""netcore's transport alone, answering the login storm: the floor under netcore-server.

A PacketSession that answers C_LOGIN with a fixed S_LOGIN and C_ENTER_GAME
with a fixed S_ENTER_GAME, on a ServerService with netcore-server's session
bound: everything netcore does per connection (accept, transport, session,
framing, send queue, flush) and nothing of the game (no handlers, ids,
rooms or jobs). bench_login_storm.py --layers runs it beside netcore-server
and the C server, so the gap between the two netcore figures is the game
layer's and the gap to the C server the transport's.

    python benchmarks/transport_login_server.py [--port 7777] [--loop uvloop|asyncio]
"""
import argparse
import asyncio

import netcore
from netcore import PacketSession, ServerService, make_packet
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.server_dispatch import PKT_C_LOGIN, PKT_S_ENTER_GAME, PKT_S_LOGIN

LOGIN = make_packet(PKT_S_LOGIN, pb.S_LOGIN(success=True).SerializeToString())
ENTER = make_packet(PKT_S_ENTER_GAME,
                    pb.S_ENTER_GAME(success=True, playerId=1).SerializeToString())


class FixedAnswers(PacketSession):
    def on_recv_packet(self, pkt_id, payload):
        self.send(LOGIN if pkt_id == PKT_C_LOGIN else ENTER)


async def serve(port: int) -> None:
    async with ServerService(FixedAnswers, port=port, max_sessions=30_000) as server:
        print(f"listening on 127.0.0.1:{server.port}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=7777)
    ap.add_argument("--loop", choices=netcore.loop.LOOP_KINDS, default=None)
    args = ap.parse_args()
    netcore.run(serve(args.port), netcore.resolve_loop_kind(args.loop))


if __name__ == "__main__":
    main()
