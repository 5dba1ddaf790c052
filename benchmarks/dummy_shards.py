"""One netcore-dummy run split over several processes (shards), for loads
that one load core cannot read (benchmarks/README.md: the dummy's ceiling).

Shard I of K runs clients I, I+K, ... of the run, pinned to a load core in
turn; all get one epoch for their send stamps and chat only once every shard
says its clients are in game (netcore-dummy --shard/--epoch-us/--go-on-stdin).
The merged report sums the counts and rates; its latency figures are the
largest of the shards' (an upper bound of the run's: if no shard has more
than 1% of its deliveries above x, neither has the whole run).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

READY_TIMEOUT = 120.0       # seconds for every shard's clients to get in game
SUMMED = ("clients", "connected", "in_game", "failed", "sent", "expected", "received",
          "unique", "lost", "duplicated", "out_of_order", "wrong_sender", "malformed",
          "foreign", "deliveries_per_s", "logins_per_s")


def cpu_list(spec: str) -> list[str]:
    """'8-11,14' -> ['8', '9', '10', '11', '14']"""
    cores = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cores += [str(c) for c in range(int(low), int(high or low) + 1)]
    return cores


def dummy_command(core: str, port: int, clients: int, rooms: int, rate: float,
                  duration: float, *extra: str) -> list[str]:
    return ["taskset", "-c", core, sys.executable, "-m", "netcore_dummy.cli",
            "--port", str(port), "--clients", str(clients), "--rooms", str(rooms),
            "--rate", str(rate), "--duration", str(duration), "--json", *extra]


def last_json(text: str, stderr: str = "") -> dict:
    lines = text.strip().splitlines()
    if not lines:
        raise RuntimeError(f"dummy printed nothing: {stderr[-2000:]}")
    return json.loads(lines[-1])


def run_dummies(port: int, clients: int, rooms: int, rate: float, duration: float, *,
                load_cores: str, dummies: int = 1, extra: tuple = ()) -> dict:
    """The run's report: one dummy's as it printed it, or the K shards' merged."""
    cores = cpu_list(load_cores)
    if dummies == 1:
        out = subprocess.run(dummy_command(cores[0], port, clients, rooms, rate, duration,
                                           *extra),
                             capture_output=True, text=True, timeout=duration + 600)
        return last_json(out.stdout, out.stderr)
    epoch = time.monotonic_ns() // 1000         # the dummies' clock: CLOCK_MONOTONIC
    procs = [subprocess.Popen(
        dummy_command(cores[i % len(cores)], port, clients, rooms, rate, duration, *extra,
                      "--shard", f"{i}/{dummies}", "--epoch-us", str(epoch), "--go-on-stdin"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(dummies)]
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        for p in procs:                         # each says ready, or ends with its report
            line = p.stdout.readline()
            if '"ready"' not in line or time.monotonic() > deadline:
                raise RuntimeError(f"a dummy shard did not get ready: {line!r}")
        for p in procs:                         # the go: everyone is in game
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = [last_json(p.communicate(timeout=duration + 600)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    merged = {k: sum(r[k] for r in reports) for k in SUMMED}
    merged["ok"] = all(r["ok"] for r in reports)
    merged["latency_ms"] = {q: max(r["latency_ms"][q] for r in reports)
                            for q in reports[0]["latency_ms"]}
    return merged
