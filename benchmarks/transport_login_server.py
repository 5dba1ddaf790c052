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
from netcore.loop import tune_gc_for_serving
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.server_dispatch import PKT_C_LOGIN, PKT_S_ENTER_GAME, PKT_S_LOGIN

from netcore_game.server import ServerConfig     # its defaults only: no game code runs

LOGIN = make_packet(PKT_S_LOGIN, pb.S_LOGIN(success=True).SerializeToString())
ENTER = make_packet(PKT_S_ENTER_GAME,
                    pb.S_ENTER_GAME(success=True, playerId=1).SerializeToString())


class FixedAnswers(PacketSession):
    def on_recv_packet(self, pkt_id, payload):
        self.send(LOGIN if pkt_id == PKT_C_LOGIN else ENTER)


async def serve(port: int) -> None:
    # netcore-server's defaults for everything the service does per
    # connection and per packet (limits, per-address counts, rate, keepalive),
    # and the session bound bench_fanout gives it.
    c = ServerConfig()
    service = ServerService(
        FixedAnswers, port=port, max_sessions=30_000, max_packet_size=c.max_packet_size,
        max_pending_bytes=c.max_pending_bytes, packet_rate=c.packet_rate,
        packet_burst=c.packet_burst, login_timeout=c.login_timeout,
        idle_timeout=c.idle_timeout, max_packets_per_read=c.max_packets_per_read,
        max_pending_bytes_total=c.max_pending_bytes_total,
        max_sessions_per_address=c.max_sessions_per_address,
        exempt_networks=c.exempt_networks, keepalive_idle=c.keepalive_idle,
        keepalive_interval=c.keepalive_interval)
    async with service as server:
        tune_gc_for_serving()           # as netcore-server does once it serves
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
