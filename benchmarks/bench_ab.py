"""A/B: the same netcore-dummy load against two server commands, in one run.

For a change that should cost nothing (say, `--workers 1` after the cluster
layer landed), build the old commit into a venv of its own and compare:

    git worktree add /tmp/old <commit> && python -m venv /tmp/old/.venv \\
        && /tmp/old/.venv/bin/pip install /tmp/old
    python benchmarks/bench_ab.py \\
        --a "/tmp/old/.venv/bin/python -m game.cli" \\
        --b "python -m netcore_game.cli" --clients 1000 --rooms 1

Each server runs on core 0 and the dummy (this environment's) on core 1;
A and B alternate, --repeat times each, fresh processes every run. Printed:
deliveries/s, p50/p99, lost, the server's CPU seconds per million deliveries,
medians, and B's ratio to A.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile

from bench_fanout import LOAD_CORE, SERVER_CORE
from bench_workers import free_port, tree_cpu_seconds


def run_one(command, clients, rooms, duration, loop, dummy_args=()):
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *shlex.split(command), "--port", str(port),
             "--log-level", "WARNING", "--db", f"{tmp}/ab.db", "--loop", loop],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            if "listening" not in server.stdout.readline():
                raise RuntimeError(f"{command} did not start")
            before = tree_cpu_seconds(server.pid)
            dummy = subprocess.run(
                ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "netcore_dummy.cli",
                 "--port", str(port), "--clients", str(clients), "--rooms", str(rooms),
                 "--duration", str(duration), "--json", "--loop", loop, *dummy_args],
                capture_output=True, text=True, timeout=duration + 120)
            cpu = tree_cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait(30)
    report = json.loads(dummy.stdout.strip().splitlines()[-1])
    received = report["received"]
    return {"rate": report["deliveries_per_s"], "p50": report["latency_ms"]["p50"],
            "p99": report["latency_ms"]["p99"], "lost": report["lost"],
            "cpu": cpu / received * 1e6 if received else float("nan")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="server command A (without --port)")
    ap.add_argument("--b", required=True, help="server command B")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=1)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    args = ap.parse_args(argv)
    runs = {"A": [], "B": []}
    for _ in range(args.repeat):
        for name, command in (("A", args.a), ("B", args.b)):
            runs[name].append(run_one(command, args.clients, args.rooms, args.duration, args.loop))
    print_table(args, runs)


def print_table(args, runs, note="", target=""):
    """The A/B table of run_one()'s figures, medians, and B's ratios to A."""
    print(f"{args.clients} clients in {args.rooms} rooms, 1 chat/s for {args.duration:.0f} s, "
          f"{args.loop}, server on core {SERVER_CORE}, dummy on core {LOAD_CORE}, "
          f"medians of {args.repeat}{note}")
    print(f"{'':3} {'deliveries/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'lost':>5} {'CPU s/M':>8}")
    med = {}
    for name in ("A", "B"):
        med[name] = {k: statistics.median(r[k] for r in runs[name]) for k in ("rate", "p50",
                                                                              "p99", "cpu")}
        lost = max(r["lost"] for r in runs[name])
        m = med[name]
        print(f"{name:3} {m['rate']:>13,.0f} {m['p50']:>7.1f} {m['p99']:>7.1f} {lost:>5} "
              f"{m['cpu']:>8.3f}")
    print(f"B/A: p99 {med['B']['p99'] / med['A']['p99']:.2f}, "
          f"CPU per delivery {med['B']['cpu'] / med['A']['cpu']:.2f}{target}")


if __name__ == "__main__":
    main()
