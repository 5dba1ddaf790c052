"""Echo demo: a ServerService and N ClientService sessions in one process.

    python -m netcore.demo [--clients 200] [--packets 100] [--loop uvloop|asyncio] [--version]

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


async def demo(clients: int, packets: int, kind: str = "") -> int:
    # Printed once running: a Ctrl-C from here on unwinds the demo (netcore.run).
    print(f"netcore {netcore.__version__} echo demo on {kind}", flush=True)
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m netcore.demo",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200,
                    help="client sessions (default: %(default)s)")
    ap.add_argument("--packets", type=int, default=100,
                    help="packets each client sends (default: %(default)s)")
    ap.add_argument("--loop", choices=netcore.loop.LOOP_KINDS,
                    help="event loop (default: NETCORE_LOOP, else uvloop when installed)")
    ap.add_argument("--version", action="version", version=f"netcore {netcore.__version__}")
    return ap


def main(argv=None) -> int:
    """Exit status: 0 when every packet came back in order, 1 otherwise, 2 for
    bad arguments, 130 on Ctrl-C (the sessions are closed first)."""
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        if args.clients < 1 or args.packets < 1:
            ap.error("--clients and --packets must be >= 1")
        try:
            kind = netcore.resolve_loop_kind(args.loop)
        except (ValueError, RuntimeError) as exc:
            ap.error(str(exc))
        return netcore.run(demo(args.clients, args.packets, kind), kind)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
