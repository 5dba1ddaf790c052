"""Echo demo: a ServerService and N ClientService sessions in one process.

    python -m netcore.demo [--clients 200] [--packets 100] [--loop uvloop|asyncio]

Every client sends --packets numbered packets and checks it gets each back in
order; exits non-zero if anything was lost.
"""
import argparse
import asyncio
import sys
import time

import netcore
from netcore import ClientService, PacketSession, ServerService, make_packet


class EchoSession(PacketSession):
    def on_recv_packet(self, pkt_id, payload):
        self.send(make_packet(pkt_id, payload))


class CountingClient(PacketSession):
    expected = 0

    def __init__(self):
        self.received = 0
        self.in_order = True
        self.done = asyncio.get_running_loop().create_future()

    def on_recv_packet(self, pkt_id, payload):
        self.in_order &= int(payload) == self.received
        self.received += 1
        if self.received == self.expected and not self.done.done():
            self.done.set_result(None)


async def demo(clients: int, packets: int) -> int:
    CountingClient.expected = packets
    async with ServerService(EchoSession) as server:
        service = ClientService(CountingClient, port=server.port, count=clients)
        sessions = await service.start()
        start = time.perf_counter()
        for s in sessions:
            for i in range(packets):
                s.send(make_packet(1004, b"%d" % i))
        await asyncio.wait([s.done for s in sessions], timeout=30)
        elapsed = time.perf_counter() - start
        got = sum(s.received for s in sessions)
        ok = len(sessions) == clients and got == clients * packets and all(s.in_order for s in sessions)
        print(f"{len(sessions)}/{clients} clients, {got}/{clients * packets} packets echoed "
              f"in order={all(s.in_order for s in sessions)} in {elapsed:.2f}s "
              f"({got / elapsed:,.0f} round trips/s)")
        await service.close()
        return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--packets", type=int, default=100)
    ap.add_argument("--loop", choices=netcore.loop.LOOP_KINDS)
    args = ap.parse_args(argv)
    kind = netcore.resolve_loop_kind(args.loop)
    print(f"netcore {netcore.__version__} echo demo on {kind}")
    return netcore.run(demo(args.clients, args.packets), kind)


if __name__ == "__main__":
    sys.exit(main())
