"""How a session's queue should leave: one joined write, writelines, or a
write per packet (the naive baseline).

A sender process (pinned to core 0) holds CONNS loopback connections to a sink
process (pinned to core 1) that only counts bytes. Each event-loop iteration
the sender queues PER_ITER packets to every connection and flushes them with
the strategy under test. Prints packets/s per strategy and loop, the median of
REPEAT runs, and the ratio against the per-packet baseline.

    python benchmarks/bench_flush.py [--conns 100] [--packets 2000000]
"""
import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import netcore
from netcore import make_packet

PAYLOAD = b"x" * 40          # an S_CHAT-sized packet


class Sink(asyncio.Protocol):
    def data_received(self, data):
        pass


async def sink_main(port_file):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0, backlog=4096)
    with open(port_file, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    await asyncio.Event().wait()


class Sender(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.paused = None

    def pause_writing(self):
        self.paused = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self.paused:
            self.paused.set_result(None)
            self.paused = None


def flush_joined(t, bufs):
    t.write(b"".join(bufs))


def flush_writelines(t, bufs):
    t.writelines([memoryview(b) for b in bufs])


def flush_per_packet(t, bufs):
    for b in bufs:
        t.write(memoryview(b))


STRATEGIES = {"per-packet": flush_per_packet, "joined": flush_joined, "writelines": flush_writelines}


async def send_run(port, conns, total, per_iter, flush):
    loop = asyncio.get_running_loop()
    senders = [(await loop.create_connection(Sender, "127.0.0.1", port))[1] for _ in range(conns)]
    rounds = total // (conns * per_iter)
    start = time.perf_counter()
    for _ in range(rounds):
        buf = make_packet(1005, PAYLOAD)
        bufs = [buf] * per_iter
        for s in senders:
            flush(s.transport, bufs)
        waits = [s.paused for s in senders if s.paused]
        if waits:
            await asyncio.gather(*waits)
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    for s in senders:
        s.transport.close()
    return rounds * conns * per_iter / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--per-iter", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sink", metavar="PORT_FILE")
    args = ap.parse_args()
    if args.sink:
        netcore.run(sink_main(args.sink), "uvloop" if netcore.loop.uvloop_available() else "asyncio")
        return
    port_file = f"/tmp/bench_flush_{os.getpid()}.port"
    sink = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--sink", port_file])
    try:
        while not os.path.exists(port_file) or not open(port_file).read():
            time.sleep(0.05)        # process start-up, outside any measurement
        port = int(open(port_file).read())
        os.sched_setaffinity(0, {0})
        print(f"{args.conns} connections, {args.per_iter} packets of {len(PAYLOAD) + 4} B "
              f"per connection per iteration, {args.packets:,} packets per run, "
              f"median of {args.repeat}")
        kinds = ["asyncio"] + (["uvloop"] if netcore.loop.uvloop_available() else [])
        for kind in kinds:
            results = {}
            for name, flush in STRATEGIES.items():
                runs = [netcore.run(send_run(port, args.conns, args.packets, args.per_iter, flush), kind)
                        for _ in range(args.repeat)]
                results[name] = statistics.median(runs)
            base = results["per-packet"]
            for name, rate in results.items():
                print(f"  {kind:8s} {name:11s} {rate:>12,.0f} packets/s  x{rate / base:.2f}")
    finally:
        sink.kill()
        os.unlink(port_file)


if __name__ == "__main__":
    main()
