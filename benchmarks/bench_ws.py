"""WebSocket fan-out: netcore over WebSocket against netcore over TCP, and
against a typical `websockets` server (baseline_ws_server.py), in one run.

One room, every client chatting --rate times a second (1 by default), driven
by netcore-dummy (over TCP, or `--transport ws`), the server pinned to core 0
and the dummy to core 1 as in bench_fanout.py; each server process is fresh
per scenario. Printed per scenario: deliveries per second, latency p50/p99/max,
late or lost, clients that failed to get in, the server's peak CPU (busiest
1 s) and RSS. Then the targets:

  1. netcore over WebSocket at --clients (1,000): zero loss, and p99 at most
     1.5x the p99 of netcore over TCP in the same run;
  2. netcore over WebSocket passes (everyone in, nothing lost, p99 < 100 ms)
     at least 5x the baseline's largest passing client count, both climbing
     the --ladder until they fail.

    python benchmarks/bench_ws.py                           # ~10 min
    python benchmarks/bench_ws.py --clients 100 --duration 3 --ladder 50,100 --repeat 1
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fanout import (  # noqa: E402  (benchmarks/ is not a package)
    SERVER_CORE, Server, dummy, pinned, summarize,
)
from netcore.loop import LOOP_KINDS, resolve_loop_kind  # noqa: E402

P99_RATIO_TARGET = 1.5
LADDER_RATIO_TARGET = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchServer(Server):
    """bench_fanout's sampled server process, started from any command line."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        banner = self.proc.stdout.readline()
        if "listening" not in banner:
            raise RuntimeError(f"server did not start: {cmd} {banner!r}")
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()


def start(kind: str, workdir: str, loop: str):
    """(server, port the dummy dials, the dummy's transport) for one kind:
    netcore-tcp, netcore-ws or baseline-ws."""
    port = free_port()
    if kind == "baseline-ws":
        cmd = pinned(SERVER_CORE, str(HERE / "baseline_ws_server.py"), "--port", str(port),
                     "--loop", loop)
        return BenchServer(cmd), port, "ws"
    ws_port = free_port()
    cmd = pinned(SERVER_CORE, "-m", "netcore_game.cli", "--port", str(port), "--ws-port",
                 str(ws_port), "--log-level", "WARNING", "--max-sessions", "30000",
                 "--db", os.path.join(workdir, f"bench-{port}.db"), "--loop", loop)
    return BenchServer(cmd), (ws_port if kind == "netcore-ws" else port), (
        "ws" if kind == "netcore-ws" else "tcp")


def scenario(kind: str, clients: int, args) -> dict:
    runs = []
    for _ in range(args.repeat):
        server, port, transport = start(kind, args.workdir, args.loop)
        try:
            r = dummy(port, clients, 1, args.rate, args.duration, "--transport", transport,
                      "--loop", args.loop)
            r["cpu"], r["rss"] = server.peak_cpu(), server.peak_rss()
        finally:
            server.stop()
        runs.append(r)
    return summarize(runs)


def show(kind: str, clients: int, m: dict) -> None:
    def f(v, spec):
        return "-" if v is None else format(v, spec)
    print(f"  {kind:12s} {clients:>6,} clients  {f(m['deliveries'], ',.0f'):>10} deliv/s  "
          f"p50 {f(m['p50'], '.2f'):>7}  p99 {f(m['p99'], '.2f'):>7}  max {f(m['max'], '.2f'):>8} ms"
          f"  lost {f(m['late_or_lost'], ',.0f'):>7}  failed {f(m['failed'], ',.0f'):>5}"
          f"  cpu {f(m['cpu'], '.1f'):>5}%  rss {m['rss'] / 2**20:6.1f} MiB"
          f"  {'PASS' if m['pass'] else 'FAIL'}", flush=True)


def largest_passing(kind: str, ladder: list[int], args) -> int:
    best = 0
    for clients in ladder:
        m = scenario(kind, clients, args)
        show(kind, clients, m)
        if not m["pass"]:
            break
        best = clients
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ladder", default="250,500,1000,2000,4000,8000",
                    help="client counts each server climbs until one fails")
    ap.add_argument("--loop", choices=LOOP_KINDS, default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    args.loop = resolve_loop_kind(args.loop)
    ladder = [int(n) for n in args.ladder.split(",") if n.strip()]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or tmp
        print(f"one room, {args.rate:g} chat/s per client, {args.duration:g} s, median of "
              f"{args.repeat}, {args.loop}; server on core {SERVER_CORE}", flush=True)
        print(f"\n{args.clients:,} clients, TCP against WebSocket:")
        tcp = scenario("netcore-tcp", args.clients, args)
        show("netcore-tcp", args.clients, tcp)
        ws = scenario("netcore-ws", args.clients, args)
        show("netcore-ws", args.clients, ws)
        print(f"\nlargest passing client count (ladder {ladder}):")
        ws_best = largest_passing("netcore-ws", ladder, args)
        base_best = largest_passing("baseline-ws", ladder, args)

    ok1 = (ws["late_or_lost"] == 0 and ws["failed"] == 0 and ws["p99"] is not None
           and tcp["p99"] is not None and ws["p99"] <= P99_RATIO_TARGET * tcp["p99"])
    ratio = ws["p99"] / tcp["p99"] if ws["p99"] and tcp["p99"] else None
    ok2 = base_best > 0 and ws_best >= LADDER_RATIO_TARGET * base_best
    print(f"\ntarget 1: WebSocket at {args.clients:,}: lost {ws['late_or_lost']}, p99 "
          f"{'-' if ratio is None else f'{ratio:.2f}x'} TCP's (at most {P99_RATIO_TARGET}x): "
          f"{'MET' if ok1 else 'MISSED'}")
    print(f"target 2: netcore WebSocket passes at {ws_best:,} clients, the websockets baseline "
          f"at {base_best:,} (at least {LADDER_RATIO_TARGET}x): "
          f"{'MET' if ok2 else 'MISSED' if base_best else 'UNDECIDED (the baseline passed none)'}"
          + (" (the ladder's top: climb further with --ladder)"
             if ws_best == ladder[-1] else ""))
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
