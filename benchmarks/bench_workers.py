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

On a machine with more cores, the scaling table: give the server side and
the load their own cores and split the load over several netcore-dummy
processes (shards of one run, started together, see netcore_dummy.client):

    python benchmarks/bench_workers.py --workers 1,2,4,8 --server-cores 0-7 \
        --load-cores 8-15 --dummies 8 --scenarios 2000/1,3000/1,4000/1,5000/1

With several dummies, deliveries/s and lost are the sums over the shards and
p50/p99 the largest of the shards' (an upper bound of the run's: no more than
1% of any shard's deliveries, so of all of them, are above the largest p99).
With --stop-at-first-fail a configuration that fails a one-room scenario
skips the larger one-room scenarios after it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dummy_shards import run_dummies  # noqa: E402  (benchmarks/ is not a package)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
P99_LIMIT_MS = 100.0


def tree_stat(root: int) -> tuple[float, int]:
    """utime + stime (seconds) and RSS (bytes) of `root` and every
    descendant alive now (a supervisor, its workers, its nats-server)."""
    parent, cpu, rss = {}, {}, {}
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
        rss[pid] = int(fields[21]) * PAGE
    total_cpu, total_rss, todo = 0.0, 0, [root]
    while todo:
        pid = todo.pop()
        total_cpu += cpu.get(pid, 0.0)
        total_rss += rss.get(pid, 0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total_cpu, total_rss


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of `root` and every descendant alive now."""
    return tree_stat(root)[0]


class Server:
    def __init__(self, workers: int, port: int, workdir: str, loop: str, cores: str):
        cmd = ["taskset", "-c", cores, sys.executable, "-m", "netcore_game.cli",
               "--port", str(port), "--workers", str(workers), "--loop", loop,
               "--log-level", "WARNING", "--max-sessions", "30000",
               "--max-room-players", "65535",
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


def one(workers, clients, rooms, duration, loop, cores):
    server_cores, load_cores, dummies = cores
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = Server(workers, port, workdir, loop, server_cores)
        try:
            before = server.cpu()
            report = run_dummies(port, clients, rooms, 1, duration, load_cores=load_cores,
                                 dummies=dummies,
                                 extra=("--loop", loop, "--enter-timeout", "60",
                                        "--connect-rate", str(max(4000 // dummies, 250))))
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
    ap.add_argument("--workers", default="1,2",
                    help="worker counts to compare, comma-separated; the first is the baseline")
    ap.add_argument("--server-cores", default="0",
                    help="taskset list for the server side (supervisor, workers, nats-server)")
    ap.add_argument("--load-cores", default="1", help="taskset list for the dummies")
    ap.add_argument("--dummies", type=int, default=1,
                    help="netcore-dummy processes per run (shards), one per load core in turn")
    ap.add_argument("--stop-at-first-fail", action="store_true",
                    help="a configuration that fails a one-room scenario skips the larger ones")
    args = ap.parse_args(argv)
    scenarios = [tuple(int(x) for x in part.split("/")) for part in args.scenarios.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    cores = (args.server_cores, args.load_cores, args.dummies)
    if args.quick:
        scenarios, args.repeat = [(1000, 1)], 1
    print(f"server (and nats-server) on cores {args.server_cores}, {args.dummies} "
          f"netcore-dummy on cores {args.load_cores}, {args.loop}, 1 chat/s per client for "
          f"{args.duration:g} s, medians of {args.repeat}, {os.cpu_count()} cores here",
          flush=True)
    header = (f"{'clients/rooms':>14} {'workers':>7} {'deliveries/s':>13} {'p50 ms':>7} "
              f"{'p99 ms':>8} {'lost':>5} {'failed':>6} {'CPU s/M deliv':>14} {'ratio':>6} "
              f"{'runs':>4} result")
    print(header)
    best = {w: 0.0 for w in worker_counts}
    failed_one_room = set()
    base = worker_counts[0]
    for clients, rooms in scenarios:
        medians = {}
        for workers in worker_counts:
            if rooms == 1 and workers in failed_one_room:
                print(f"{clients:>8}/{rooms:<5} {workers:>7} {'skipped: failed a smaller one':>30}")
                continue
            runs = []
            for _ in range(args.repeat):
                runs.append(one(workers, clients, rooms, args.duration, args.loop, cores))
                if args.stop_at_first_fail and not runs[-1]["passes"]:
                    break                       # one failed run fails the scenario
            m = {k: median(runs, k) for k in ("deliveries_per_s", "p50", "p99",
                                              "cpu_s_per_million")}
            m["lost"] = max(r["lost"] for r in runs)
            m["failed"] = max(r["failed"] for r in runs)
            m["passes"] = all(r["passes"] for r in runs)
            medians[workers] = m
            if rooms == 1 and m["passes"]:
                best[workers] = max(best[workers], m["deliveries_per_s"])
            elif rooms == 1 and args.stop_at_first_fail:
                failed_one_room.add(workers)
            ratio = ("" if workers == base or base not in medians else
                     f"{m['cpu_s_per_million'] / medians[base]['cpu_s_per_million']:6.2f}")
            print(f"{clients:>8}/{rooms:<5} {workers:>7} {m['deliveries_per_s']:>13,.0f} "
                  f"{m['p50']:>7.1f} {m['p99']:>8.1f} {m['lost']:>5} {m['failed']:>6} "
                  f"{m['cpu_s_per_million']:>14.2f} {ratio:>6} {len(runs):>4} "
                  f"{'pass' if m['passes'] else 'FAIL'}", flush=True)
    print()
    for workers, rate in best.items():
        print(f"--workers {workers}: largest one-room load with zero loss and p99 < "
              f"{P99_LIMIT_MS:.0f} ms: " + (f"{rate:,.0f} deliveries/s" if rate else "none passed"))
    for workers in worker_counts[1:]:
        if best[base] and best[workers]:
            print(f"ratio (--workers {workers} / --workers {base}): "
                  f"{best[workers] / best[base]:.2f}")


if __name__ == "__main__":
    main()
