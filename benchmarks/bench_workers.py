"""The cost of the cross-process path: netcore-server --workers 1 against --workers 2.

On this 2-core machine both configurations get the same core for the server
side (core 0: the supervisor, every worker and the private nats-server, by
affinity inherited from taskset), and netcore-dummy gets core 1. So --workers 2
cannot scale here; what it shows is what the broker path costs: two workers
on one core, each room owned by one of them, half of every room's members on
the other, every chat forwarded, streamed and relayed through NATS.

For each scenario and configuration, fresh processes and the same dummy run;
printed: deliveries/s, latency p50/p99, lost, and the server side's CPU
seconds (the whole process tree, nats-server included) per million
deliveries, the medians of --repeat runs, and the ratio of --workers 2 to
--workers 1 (target: at most 1.5). Then, per configuration, the largest one-room
load that passes (zero loss, p99 < 100 ms) as deliveries per second.

    python benchmarks/bench_workers.py               # ~6 min
    python benchmarks/bench_workers.py --quick       # one scenario, one run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = "0", "1"
P99_LIMIT_MS = 100.0


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of `root` and every descendant alive now."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total


class Server:
    def __init__(self, workers: int, port: int, workdir: str, loop: str):
        cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "netcore_game.cli",
               "--port", str(port), "--workers", str(workers), "--loop", loop,
               "--log-level", "WARNING", "--max-sessions", "30000",
               "--db", os.path.join(workdir, f"bench-{port}.db")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        banner = self.proc.stdout.readline()
        if "listening" not in banner:
            raise RuntimeError(f"--workers {workers} did not start: {banner!r}")

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dummy(port, clients, rooms, duration, loop):
    cmd = ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "netcore_dummy.cli",
           "--port", str(port), "--clients", str(clients), "--rooms", str(rooms),
           "--rate", "1", "--duration", str(duration), "--json", "--loop", loop,
           "--connect-rate", "2000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one(workers, clients, rooms, duration, loop):
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = Server(workers, port, workdir, loop)
        try:
            before = server.cpu()
            report = run_dummy(port, clients, rooms, duration, loop)
            cpu = server.cpu() - before
        finally:
            server.stop()
    received = report["received"]
    return {
        "deliveries_per_s": report["deliveries_per_s"],
        "p50": report["latency_ms"]["p50"], "p99": report["latency_ms"]["p99"],
        "lost": report["lost"] + report["duplicated"], "failed": report["failed"],
        "cpu_s_per_million": cpu / received * 1e6 if received else float("nan"),
        "passes": (report["lost"] == 0 and report["failed"] == 0
                   and report["latency_ms"]["p99"] < P99_LIMIT_MS),
    }


def median(runs, key):
    values = [r[key] for r in runs if r[key] == r[key]]     # NaN-free
    return statistics.median(values) if values else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenarios", default="500/1,1000/1,1500/1,2000/1,2000/20",
                    help="clients/rooms, comma-separated")
    args = ap.parse_args(argv)
    scenarios = [tuple(int(x) for x in part.split("/")) for part in args.scenarios.split(",")]
    if args.quick:
        scenarios, args.repeat = [(1000, 1)], 1
    print(f"server (and nats-server) on core {SERVER_CORE}, netcore-dummy on core {LOAD_CORE}, "
          f"{args.loop}, 1 chat/s per client for {args.duration:.0f} s, medians of {args.repeat}",
          flush=True)
    header = (f"{'clients/rooms':>14} {'workers':>7} {'deliveries/s':>13} {'p50 ms':>7} "
              f"{'p99 ms':>8} {'lost':>5} {'CPU s/M deliv':>14} {'ratio':>6}")
    print(header)
    best = {1: 0.0, 2: 0.0}
    for clients, rooms in scenarios:
        medians = {}
        for workers in (1, 2):
            runs = [one(workers, clients, rooms, args.duration, args.loop)
                    for _ in range(args.repeat)]
            m = {k: median(runs, k) for k in ("deliveries_per_s", "p50", "p99",
                                              "cpu_s_per_million")}
            m["lost"] = max(r["lost"] for r in runs)
            m["passes"] = all(r["passes"] for r in runs)
            medians[workers] = m
            if rooms == 1 and m["passes"]:
                best[workers] = max(best[workers], m["deliveries_per_s"])
            ratio = ("" if workers == 1 else
                     f"{m['cpu_s_per_million'] / medians[1]['cpu_s_per_million']:6.2f}")
            print(f"{clients:>8}/{rooms:<5} {workers:>7} {m['deliveries_per_s']:>13,.0f} "
                  f"{m['p50']:>7.1f} {m['p99']:>8.1f} {m['lost']:>5} "
                  f"{m['cpu_s_per_million']:>14.2f} {ratio:>6}", flush=True)
    print()
    for workers, rate in best.items():
        print(f"--workers {workers}: largest one-room load with zero loss and p99 < "
              f"{P99_LIMIT_MS:.0f} ms: " + (f"{rate:,.0f} deliveries/s" if rate else "none passed"))
    if best[1] and best[2]:
        print(f"ratio (--workers 2 / --workers 1): {best[2] / best[1]:.2f}")


if __name__ == "__main__":
    main()
