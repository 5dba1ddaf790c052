"""Guest login + enter per second, netcore-server against the C reference
server, driven by a load generator in C (login_storm.c) so that the client
side is not the bound (issue 12: login + enter >= 30,000/s).

netcore-dummy spends about 60 us of Python per client and reaches about
10,000 logins a second against either server (bench_fanout's storm);
login_storm.c, compiled here with gcc, spends a few. Each run starts a fresh
server pinned to core 0 and the generator on core 1: --clients guests, at
most --concurrency between connect and S_ENTER_GAME at once, spread over
--rooms rooms, held open until all are in. Printed: the median of --repeat
runs of logins + enters per second, clients that failed, the server's CPU
seconds per thousand logins, and netcore's ratio to the C server's figure of
the same invocation. With --layers, netcore's transport alone
(transport_login_server.py: fixed answers, no game) runs beside them: the
gap between the two netcore figures is the game layer's. With --loop-tcp,
netcore-server on the event loop's TCP transports (--tcp-transport loop, a
group of 16 listening sockets under uvloop: before netcore.tcp) runs beside
it too; with --single-socket, also on those with one listening socket
(--listen-sockets 1: before the group).

    gcc -O2 -o /tmp/refserver ../shared/reference/refserver.c
    python benchmarks/bench_login_storm.py --reference-cmd /tmp/refserver
    python benchmarks/bench_login_storm.py --reference-cmd /tmp/refserver --layers
    python benchmarks/bench_login_storm.py --clients 500 --repeat 1     # a smoke run
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fanout import LOAD_CORE, Server, median  # noqa: E402  (benchmarks/ is not a package)
from netcore.loop import LOOP_KINDS, resolve_loop_kind  # noqa: E402

TARGET = 30_000


def build_generator(workdir: str) -> str:
    exe = str(Path(workdir) / "login_storm")
    subprocess.run(["gcc", "-O2", "-o", exe, str(HERE / "login_storm.c")], check=True)
    return exe


def one_run(kind: str, port: int, args, exe: str) -> dict:
    server = Server(kind, port, args.workdir, args.loop, args.reference_cmd)
    try:
        cpu_before = server.read()[1]
        out = subprocess.run(
            ["taskset", "-c", LOAD_CORE, exe, str(port), str(args.clients),
             str(args.concurrency), str(args.rooms)],
            capture_output=True, text=True, timeout=300)
        cpu = server.read()[1] - cpu_before
    finally:
        server.stop()
    if not out.stdout.strip():
        raise RuntimeError(f"login_storm printed nothing: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["cpu_per_k"] = cpu / r["in_game"] * 1e3 if r["in_game"] else None
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=256,
                    help="clients between connect and S_ENTER_GAME at once")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--port", type=int, default=7950)
    ap.add_argument("--loop", choices=LOOP_KINDS, default=None)
    ap.add_argument("--reference-cmd", default=None,
                    help="the C reference server's command (e.g. /tmp/refserver), run alternately")
    ap.add_argument("--generator", default=None,
                    help="a login_storm built beforehand (default: built here with gcc)")
    ap.add_argument("--layers", action="store_true",
                    help="also run netcore's transport alone (fixed answers, no game layer)")
    ap.add_argument("--loop-tcp", action="store_true",
                    help="also run netcore-server on the event loop's TCP transports "
                         "(--tcp-transport loop)")
    ap.add_argument("--single-socket", action="store_true",
                    help="also run netcore-server with --tcp-transport loop --listen-sockets 1 "
                         "(the loop's transports, one listening socket: as before the group)")
    args = ap.parse_args()
    args.loop = resolve_loop_kind(args.loop)
    kinds = (["netcore"] + (["loop tcp"] if args.loop_tcp else [])
             + (["1 socket"] if args.single_socket else [])
             + (["transport"] if args.layers else [])
             + (["C ref"] if args.reference_cmd else []))
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        exe = args.generator or build_generator(workdir)
        print(f"{args.clients:,} guests, {args.concurrency} in flight, {args.rooms} rooms; "
              f"server on core 0 ({args.loop} for netcore), login_storm.c on core {LOAD_CORE}; "
              f"median of {args.repeat}", flush=True)
        port = args.port
        for i in range(args.repeat):
            for kind in kinds:
                r = one_run(kind, port, args, exe)
                port += 1
                runs[kind].append(r)
                print(f"  run {i + 1} {kind:9s}: {r['logins_per_s']:>9,.0f} logins + enters/s, "
                      f"{r['failed']} failed", flush=True)
    result = {}
    for kind in kinds:
        result[kind] = {
            "rate": median(r["logins_per_s"] for r in runs[kind]),
            "failed": median(r["failed"] for r in runs[kind]),
            "cpu_per_k": median(r["cpu_per_k"] for r in runs[kind]),
        }
    for kind in kinds:
        m = result[kind]
        ratio = (f"  {m['rate'] / result['C ref']['rate']:.2f}x the C server"
                 if kind != "C ref" and "C ref" in result else "")
        cpu = f"{m['cpu_per_k']:.3f}" if m["cpu_per_k"] is not None else "-"
        print(f"  {kind:9s} login + enter {m['rate']:>9,.0f}/s  failed {m['failed']:,.0f}  "
              f"server cpu {cpu} s per 1,000 logins{ratio}", flush=True)
    if "transport" in result and None not in (result["netcore"]["cpu_per_k"],
                                              result["transport"]["cpu_per_k"]):
        game = result["netcore"]["cpu_per_k"] - result["transport"]["cpu_per_k"]
        print(f"  the game layer: {game * 1e3:.0f} us of server CPU per login "
              f"(netcore-server's less the transport's alone)", flush=True)
    met = result["netcore"]["rate"] >= TARGET and result["netcore"]["failed"] == 0
    print(f"target: netcore >= {TARGET:,} logins + enters/s, none failed: "
          f"{'MET' if met else 'MISSED'}", flush=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
