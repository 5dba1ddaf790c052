"""The field: netcore-server against its C reference (field_ref.c), driven by
netcore-dummy --scenario field.

Each shape runs netcore-server (its field on; uvloop) and the C reference
server built from benchmarks/field_ref.c by this script with gcc, in turn,
each on core 0 in a fresh process, with the same dummy run on core 1. The
dummy walks every client at --move-rate moves a second, one move in flight
each, and checks every field packet (violations must be 0). Printed per
server: moves/s, field deliveries/s (moves seen, entities spawned and
despawned, answers), latency p50/p99 from a move to its answer and to its
observers, violations, the server's CPU seconds per million deliveries, the
medians of --repeat runs, and netcore's ratios to C (p99 to observers, CPU
per delivery). Then, unless skipped, the largest walker count in one field
with p99 to observers under 100 ms, for each server.

    python benchmarks/bench_field.py                          # the shapes and the sweep
    python benchmarks/bench_field.py --shapes 2000/1 --repeat 1 --skip sweep

Shapes, CLIENTS/FIELDS[+MONSTERS]: 2000/1 (2,000 walkers in one 1000 x 1000
field, radius 50), 10000/10, 1000/1+200 (one field, 200 monsters at 10 Hz).
One dummy process reads everything on one core: where it cannot send every
walker's move at the rate (a move still unanswered), it skips it (counted
"late"), the same for both servers, so the ratios stay fair while the moves/s
show the bound.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fanout import LOAD_CORE, SERVER_CORE, pinned  # noqa: E402
from bench_workers import free_port, tree_cpu_seconds  # noqa: E402

FIELD = ["--field-size", "1000", "--view-radius", "50", "--max-step", "10"]
SHAPES = ["2000/1", "10000/10", "1000/1+200"]


def parse_shape(text: str) -> tuple[int, int, int]:
    clients, rest = text.split("/")
    fields, _, monsters = rest.partition("+")
    return int(clients), int(fields), int(monsters or 0)


def build_reference(out: Path) -> str:
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(HERE / "field_ref.c"), "-lm"],
                   check=True)
    return str(out)


def start(kind: str, port: int, monsters: int, workdir: str, reference: str):
    extra = FIELD + ["--npcs", str(monsters), "--tick-rate", "10"]
    if kind == "netcore":
        cmd = pinned(SERVER_CORE, "-m", "netcore_game.cli", "--port", str(port), "--log-level",
                     "WARNING", "--db", os.path.join(workdir, f"field-{port}.db"),
                     "--max-sessions", "30000", *extra)
    else:
        cmd = ["taskset", "-c", SERVER_CORE, reference, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if "listening" not in proc.stdout.readline():
        raise RuntimeError(f"{kind} did not start")
    return proc


def run_once(kind, clients, fields, monsters, args, reference):
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start(kind, port, monsters, tmp, reference)
        try:
            before = tree_cpu_seconds(server.pid)
            dummy = subprocess.run(
                ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "netcore_dummy.cli",
                 "--port", str(port), "--scenario", "field", "--clients", str(clients),
                 "--rooms", str(fields), "--move-rate", str(args.move_rate), "--duration",
                 str(args.duration), "--connect-rate", "5000", "--enter-timeout", "60",
                 "--json", *FIELD],
                capture_output=True, text=True, timeout=args.duration + 300)
            cpu = tree_cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait(30)
    report = json.loads(dummy.stdout.strip().splitlines()[-1])
    f = report["field"]
    deliveries = sum(f["seen"].values()) + f["moves"]["acked"] + f["moves"]["corrected"]
    return {"moves": f["moves_per_s"], "deliveries": f["deliveries_per_s"],
            "ack_p50": f["ack_ms"]["p50"], "ack_p99": f["ack_ms"]["p99"],
            "obs_p50": f["observers_ms"]["p50"], "obs_p99": f["observers_ms"]["p99"],
            "late": f["moves"]["late"], "violations": sum(f["violations"].values()),
            "failed": report["failed"], "cpu": cpu / deliveries * 1e6 if deliveries else 0.0}


def medians(runs):
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["violations"] = max(r["violations"] for r in runs)
    out["failed"] = max(r["failed"] for r in runs)
    return out


def row(kind, shape, m, ratio=""):
    return (f"  {kind:<8} {shape:>11}  {m['moves']:>8,.0f} moves/s {m['deliveries']:>10,.0f} "
            f"deliv/s  ack p50 {m['ack_p50']:6.2f} p99 {m['ack_p99']:7.2f}  observers p50 "
            f"{m['obs_p50']:6.2f} p99 {m['obs_p99']:7.2f} ms  late {m['late']:>7,.0f}  "
            f"violations {m['violations']}  failed {m['failed']}  cpu {m['cpu']:6.3f} s/M{ratio}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=SHAPES)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--move-rate", type=float, default=10.0)
    ap.add_argument("--sweep", nargs="+", type=int, default=[1000, 2000, 3000, 4000, 6000])
    ap.add_argument("--skip", nargs="*", default=[], choices=["shapes", "sweep"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        reference = build_reference(Path(tmp) / "field_ref")
        print(f"server on core {SERVER_CORE}, netcore-dummy --scenario field on core {LOAD_CORE}; "
              f"{args.move_rate:g} moves/s per walker, {args.duration:g} s per run, median of "
              f"{args.repeat}; field 1000 x 1000, radius 50, max step 10")
        if "shapes" not in args.skip:
            for shape in args.shapes:
                clients, fields, monsters = parse_shape(shape)
                runs = {"C ref": [], "netcore": []}
                for _ in range(args.repeat):
                    for kind in runs:
                        runs[kind].append(run_once(kind, clients, fields, monsters, args,
                                                   reference))
                c, n = medians(runs["C ref"]), medians(runs["netcore"])
                print(row("C ref", shape, c), flush=True)
                print(row("netcore", shape, n, f"  p99/C {n['obs_p99'] / c['obs_p99']:.2f}x "
                                                f"cpu/C {n['cpu'] / c['cpu']:.2f}x"), flush=True)
        if "sweep" not in args.skip:
            for kind in ("C ref", "netcore"):
                best = 0
                for clients in args.sweep:
                    m = medians([run_once(kind, clients, 1, 0, args, reference)
                                 for _ in range(args.repeat)])
                    ok = m["obs_p99"] < 100 and not m["violations"] and not m["failed"]
                    print(row(kind, f"{clients}/1", m) + ("  PASS" if ok else "  FAIL"),
                          flush=True)
                    if not ok:
                        break
                    best = clients
                print(f"  {kind}: largest one-field walker count with p99 < 100 ms: {best:,}",
                      flush=True)


if __name__ == "__main__":
    main()
