"""Fan-out benchmark: netcore-server against the baseline, driven by netcore-dummy.

The server runs pinned to core 0, the dummy to core 1 (taskset). For each
scenario both servers get a fresh process, on the same event loop (--loop,
netcore's default unless given), and the same dummy run; the script prints
deliveries per second, latency p50/p99/max, deliveries late or lost (not in
by the end of the dummy's drain: the dummy cannot tell the two apart),
clients that failed to get in game, the server's peak CPU (busiest 1 s) and
peak RSS, the medians of --repeat runs, and netcore's ratio to the baseline.
It then reports the largest client count that passes (every client in, zero
late or lost, p99 < 100 ms) for each server, the idle hold (server RSS per
in-game client, --hold-clients idle in rooms of 100) and the login storm
(logins + enters per second; beside the C server's with --reference-cmd).

    python benchmarks/bench_fanout.py                  # the full set, ~25 min
    python benchmarks/bench_fanout.py --quick          # 100 and 1,000 clients only
    python benchmarks/bench_fanout.py --clients 100 --repeat 1 --skip hold storm
    python benchmarks/bench_fanout.py --reference-cmd /tmp/refserver --skip sweep hold storm baseline
    python benchmarks/bench_fanout.py --reference-cmd /tmp/refserver --skip sweep rooms baseline

With --reference-cmd (the C server of ../shared/reference, built with
`gcc -O2 -o /tmp/refserver refserver.c`), the shapes of --shapes (one room and
many rooms) run the C server beside netcore, same core, same dummy, and print
netcore's p99 and CPU per delivery as ratios to it. Every row also gives the
server's CPU seconds per million deliveries and per thousand inbound chats.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_workers import tree_stat  # noqa: E402  (benchmarks/ is not a package)
from dummy_shards import run_dummies  # noqa: E402
from netcore.loop import LOOP_KINDS, resolve_loop_kind  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SERVER_CORE, LOAD_CORE = "0", "1"
# The chat scenarios' load: netcore-dummy processes (shards of one run) on
# these cores in turn (--dummies, --load-cores).
LOAD = {"cores": LOAD_CORE, "dummies": 1}


def pinned(core, *cmd):
    return ["taskset", "-c", core, sys.executable, *cmd]


class Server:
    """A server process on SERVER_CORE, with its CPU and RSS sampled."""

    def __init__(self, kind: str, port: int, workdir: str, loop: str, reference_cmd=None,
                 workers: int = 1):
        banner_on = "stdout"
        self.workers = workers
        if kind in ("netcore", "loop tcp", "1 socket"):
            cmd = pinned(SERVER_CORE, "-m", "netcore_game.cli", "--port", str(port), "--log-level",
                         "WARNING", "--db", os.path.join(workdir, f"bench-{port}.db"),
                         "--max-sessions", "30000", "--loop", loop)
            if kind != "netcore":       # the loop's TCP transports, as before netcore.tcp
                cmd += ["--tcp-transport", "loop"]
            if kind == "1 socket":      # ... and one listening socket, as before the group
                cmd += ["--listen-sockets", "1"]
            if workers > 1:             # a supervisor, its workers and a private nats-server
                cmd += ["--workers", str(workers)]
        elif kind == "C ref":
            # The C reference server (../shared/reference): a floor, not a competitor.
            cmd = ["taskset", "-c", SERVER_CORE, *shlex.split(reference_cmd), "--port", str(port)]
            banner_on = "stderr"
        else:
            # A Python server of benchmarks/: the baseline, or netcore's transport alone.
            script = "transport_login_server.py" if kind == "transport" else "baseline_server.py"
            cmd = pinned(SERVER_CORE, str(HERE / script), "--port", str(port), "--loop", loop)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE if banner_on == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE if banner_on == "stderr" else subprocess.DEVNULL, text=True)
        banner = getattr(self.proc, banner_on).readline()
        if "listening" not in banner:
            raise RuntimeError(f"{kind} server did not start: {banner!r}")
        self.samples: list[tuple[float, float, int]] = []   # (time, cpu seconds, rss bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def read(self):
        """(time, CPU seconds, RSS bytes): of the process, or with workers of
        its whole tree (supervisor, workers, nats-server)."""
        if self.workers > 1:
            cpu, rss = tree_stat(self.proc.pid)
            return time.monotonic(), cpu, rss
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = int(fields[21]) * PAGE
        return time.monotonic(), cpu, rss

    def _sample(self):
        while not self._stop.wait(0.25):
            try:
                self.samples.append(self.read())
            except (OSError, IndexError):
                return

    def rss(self) -> int:
        return self.read()[2]

    def peak_cpu(self) -> float:
        """CPU percent of the busiest 1-second window."""
        best, s = 0.0, self.samples
        j = 0
        for i in range(len(s)):
            while j < len(s) and s[j][0] - s[i][0] < 1.0:
                j += 1
            if j < len(s):
                best = max(best, (s[j][1] - s[i][1]) / (s[j][0] - s[i][0]) * 100)
        return best

    def peak_rss(self) -> int:
        return max((r for _, _, r in self.samples), default=0)

    def stop(self):
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def dummy(port, clients, rooms, rate, duration, *extra, dummies=1) -> dict:
    connect = str(max(5000 // dummies, 250))
    return run_dummies(port, clients, rooms, rate, duration, load_cores=LOAD["cores"],
                       dummies=dummies, extra=("--connect-rate", connect, *extra))


def latency(r: dict, name: str):
    """A run's latency figure, or None when it measured none (no chat got
    through: the dummy reports 0 then, which is not a latency)."""
    return r["latency_ms"].get(name) if r.get("unique") else None


def passes(r: dict) -> bool:
    p99 = latency(r, "p99")
    return (r["ok"] and r["failed"] == 0 and r["lost"] == 0
            and p99 is not None and p99 < 100)


def median(values):
    """The median of the runs that have the figure; None when none has it
    (never a median over NaN, which is no number at all)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else None


def summarize(runs: list[dict]) -> dict:
    """One scenario's figures: the medians over its runs (of the runs that
    have each figure), and PASS where most runs passed."""
    out = {
        "deliveries": median(r["deliveries_per_s"] for r in runs),
        "p50": median(latency(r, "p50") for r in runs),
        "p99": median(latency(r, "p99") for r in runs),
        "max": median(latency(r, "max") for r in runs),
        "late_or_lost": median(r["lost"] for r in runs),
        "failed": median(r["failed"] for r in runs),
        "cpu": median(r["cpu"] for r in runs),
        "rss": median(r["rss"] for r in runs),
        "pass": sum(passes(r) for r in runs) * 2 > len(runs),
    }
    for key in ("cpu_per_m", "cpu_per_k_in"):
        out[key] = median(r.get(key) for r in runs)
    return out


def scenario(kind, clients, rooms, args, port):
    runs = []
    for _ in range(args.repeat):
        server = Server(kind, port, args.workdir, args.loop, args.reference_cmd)
        try:
            cpu_before = server.read()[1]
            r = dummy(port, clients, rooms, args.rate, args.duration, dummies=LOAD["dummies"])
            cpu = server.read()[1] - cpu_before
            r["cpu"], r["rss"] = server.peak_cpu(), server.peak_rss()
            # Server CPU (logins included) per million deliveries and per
            # thousand inbound chats: the per-delivery and per-packet cost.
            r["cpu_per_m"] = cpu / r["received"] * 1e6 if r["received"] else None
            r["cpu_per_k_in"] = cpu / r["sent"] * 1e3 if r["sent"] else None
        finally:
            server.stop()
        runs.append(r)
        port += 1
    return summarize(runs), port


def fmt(value, spec, width):
    return f"{'-':>{width}}" if value is None else f"{value:{width}{spec}}"


def row(kind, clients, rooms, m, base=None, ref=None):
    ratio = (f"x{m['deliveries'] / base['deliveries']:.2f}"
             if base and base["deliveries"] and m["deliveries"] is not None else "")
    vs_ref = (f"  p99/C {m['p99'] / ref['p99']:.2f}x cpu/C {m['cpu_per_m'] / ref['cpu_per_m']:.2f}x"
              if ref and ref["p99"] and m["p99"] is not None and ref["cpu_per_m"]
              and m["cpu_per_m"] is not None else "")
    print(f"  {kind:8s} {clients:>6,} cl {rooms:>3} rm  {fmt(m['deliveries'], ',.0f', 11)} deliv/s"
          f" {ratio:>7s}  p50 {fmt(m['p50'], '.2f', 8)}  p99 {fmt(m['p99'], '.2f', 8)}"
          f"  max {fmt(m['max'], '.2f', 8)} ms  late or lost {fmt(m['late_or_lost'], ',.0f', 9)}"
          f"  failed to get in {fmt(m['failed'], ',.0f', 5)}  cpu {fmt(m['cpu'], '.1f', 5)}%"
          f"  {fmt(m['cpu_per_m'], '.3f', 6)} s/M deliv {fmt(m['cpu_per_k_in'], '.2f', 6)} s/k in"
          f"  rss {m['rss'] / 2**20:7.1f} MiB  {'PASS' if m['pass'] else 'FAIL'}{vs_ref}",
          flush=True)


def hold(args, port):
    """Idle in-game clients, 100 to a room: the server's RSS per client.

    With --hold-workers N the server is netcore-server --workers N and its RSS
    that of the whole process tree (each worker holds its share of the
    clients under its own open-files limit), and the clients come from as
    many dummy processes, for the same reason."""
    clients, workers = args.hold_clients, args.hold_workers
    server = Server("netcore", port, args.workdir, args.loop, workers=workers)
    try:
        before = server.rss()
        r = dummy(port, clients, max(clients // 100, 1), args.rate, 1, "--hold",
                  dummies=workers)
        after = server.peak_rss()
    finally:
        server.stop()
    per = (after - before) / max(r["in_game"], 1)
    on = f"{workers} workers" if workers > 1 else "one process"
    print(f"  hold: {r['in_game']:,} in game idle in {max(clients // 100, 1)} rooms "
          f"({r['failed']:,} failed to get in), server ({on}) RSS {before / 2**20:.1f} -> "
          f"{after / 2**20:.1f} MiB: {per / 1000:.2f} kB per client (target <= 3 kB)", flush=True)


def storm(args, port, clients=5_000):
    """Logins plus enters per second for a burst of clients, netcore and (with
    --reference-cmd) the C reference server, alternating, fresh servers."""
    kinds = ["netcore"] + (["C ref"] if args.reference_cmd else [])
    rates = {kind: [] for kind in kinds}
    failed = {kind: [] for kind in kinds}
    for _ in range(args.repeat):
        for kind in kinds:
            server = Server(kind, port, args.workdir, args.loop, args.reference_cmd)
            try:
                r = dummy(port, clients, 10, args.rate, 1, "--hold", "--connect-rate", "1000000")
            finally:
                server.stop()
            rates[kind].append(r["logins_per_s"])
            failed[kind].append(r["failed"])
            port += 1
    for kind in kinds:
        ratio = (f", {median(rates[kind]) / median(rates['C ref']):.2f}x the C server"
                 if kind != "C ref" and "C ref" in rates else "")
        print(f"  login storm {kind:8s}: {clients:,} clients, login + enter "
              f"{median(rates[kind]):,.0f}/s, {median(failed[kind]):,.0f} failed to get in "
              f"(median of {len(rates[kind])}; target >= 30,000/s{ratio})", flush=True)


def main():
    global SERVER_CORE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--loop", choices=LOOP_KINDS, default=None,
                    help="event loop of both servers (default: netcore's default)")
    ap.add_argument("--clients", type=int, nargs="+", help="client counts of the one-room sweep")
    ap.add_argument("--port", type=int, default=7900)
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["sweep", "rooms", "hold", "storm", "baseline"])
    ap.add_argument("--reference-cmd", default=None,
                    help="a C reference server command (e.g. /tmp/refserver); run beside netcore "
                         "in every scenario, and netcore's p99 and CPU per delivery printed as "
                         "ratios to it")
    ap.add_argument("--shapes", default="1000/1,2500/1,5000/50,10000/100",
                    help="clients/rooms of the many-rooms (and reference) scenarios")
    ap.add_argument("--server-core", default=SERVER_CORE, help="taskset core of the server")
    ap.add_argument("--load-cores", default=LOAD_CORE,
                    help="taskset list of the chat scenarios' dummies (hold and storm: the first)")
    ap.add_argument("--dummies", type=int, default=1,
                    help="netcore-dummy processes (shards of one run) per chat scenario, "
                         "on --load-cores in turn")
    ap.add_argument("--hold-workers", type=int, default=1,
                    help="netcore-server --workers for the hold, and as many dummies (20,000 "
                         "clients need 2 where the open-files hard limit is 20,000)")
    ap.add_argument("--hold-clients", type=int, default=19_000,
                    help="idle clients of the hold, 100 to a room (one process holds fewer "
                         "than its open-files limit: 20,000 need --hold-workers 2 where the "
                         "hard limit is 20,000)")
    args = ap.parse_args()
    args.loop = resolve_loop_kind(args.loop)
    SERVER_CORE = args.server_core
    LOAD.update(cores=args.load_cores, dummies=args.dummies)
    counts = args.clients or ([100, 1000] if args.quick else [100, 500, 1000, 1500, 2000, 2500])
    port = args.port
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        print(f"server on core {SERVER_CORE}, {args.dummies} dummy process(es) on cores "
              f"{args.load_cores}; rate {args.rate}/s, "
              f"{args.duration:g} s per run, median of {args.repeat}; both servers on "
              f"{args.loop}", flush=True)
        largest = {"netcore": 0, "baseline": 0}
        if "sweep" not in args.skip:
            for clients in counts:
                base, port = scenario("baseline", clients, 1, args, port)
                mine, port = scenario("netcore", clients, 1, args, port)
                row("baseline", clients, 1, base)
                row("netcore", clients, 1, mine, base)
                for kind, m in (("baseline", base), ("netcore", mine)):
                    if m["pass"]:
                        largest[kind] = max(largest[kind], clients)
            print(f"  largest passing client count (one room): netcore {largest['netcore']:,}, "
                  f"baseline {largest['baseline']:,}", flush=True)
        if "rooms" not in args.skip and not args.quick and not args.clients:
            # The shapes the C reference is measured in (one room and many), each
            # server with a fresh process and the same dummy run.
            for part in args.shapes.split(","):
                clients, rooms = (int(x) for x in part.split("/"))
                base = ref = None
                if "baseline" not in args.skip:
                    base, port = scenario("baseline", clients, rooms, args, port)
                    row("baseline", clients, rooms, base)
                if args.reference_cmd:
                    ref, port = scenario("C ref", clients, rooms, args, port)
                    row("C ref", clients, rooms, ref)
                mine, port = scenario("netcore", clients, rooms, args, port)
                row("netcore", clients, rooms, mine, base, ref)
        if "hold" not in args.skip:
            hold(args, port)
            port += 1
        if "storm" not in args.skip:
            storm(args, port)


if __name__ == "__main__":
    main()
