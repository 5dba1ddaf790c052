"""What resumable sessions cost, and how fast a resume is (issue 25).

    python benchmarks/bench_resume.py [--clients 1000 --rooms 1 --repeat 3]

1. The cost of being resumable: the same netcore-dummy chat load against
   netcore-server, the clients entering plain (A) or resumable (B: every
   packet sent to each is numbered and kept, netcore.sentlog), alternating,
   fresh processes each run; the server on core 0, the dummy on core 1.
   Printed as bench_ab.py prints it: deliveries/s, p50/p99, lost, the
   server's CPU seconds per million deliveries, and B's ratios (target: CPU
   per delivery at most 1.10x).
2. Memory per idle client: --idle clients in game doing nothing (the dummy's
   --hold), plain then resumable: the server's resident size over its size
   before they came, per client (target: at most 1 KB more when resumable).
3. Reconnect to live: --resumes clients, each in a room where one chatter
   talks 100 chats/s, is cut with an RST, waits until the server holds it,
   and resumes on a new connection: the time from the connect call to its
   S_RESUME, and to the first live chat after the replay (p50, p99), and
   the chats each missed, checked exactly once and in order.
4. A rolling restart under load (--rolling, on by default; --no-rolling to
   skip it): `netcore-server --workers N` (--rolling-workers, 4) on core 0
   (the supervisor, its workers and its nats-server share it), and one
   netcore-dummy on core 1 with --rolling-clients (2,000) resumable clients
   in --rolling-rooms rooms at 1 chat/s for --rolling-duration s; halfway
   through the dummy sends the server SIGHUP (--rolling-restart), every
   worker is replaced in turn, and every client a worker closes resumes.
   Printed: chats sent, lost, duplicated, out of order, clients closed by
   the server, resumed, resumes that failed, chats replayed (received after
   a resume, sent before its S_RESUME came), the gap each saw (from the
   connection's loss to its S_RESUME: p50, p99, max), the restart's
   duration and workers handed over (the supervisor's "rolling restart
   done" log line) and the run's chat latency p99 (targets: lost 0, failed
   resumes 0). One run, no medians. Only this row:

       python benchmarks/bench_resume.py --only rolling
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_ab import print_table, run_one  # noqa: E402
from bench_fanout import LOAD_CORE, SERVER_CORE  # noqa: E402
from bench_workers import free_port  # noqa: E402
from netcore_dummy.session import reset  # noqa: E402

SERVER = f"{sys.executable} -m netcore_game.cli"


def cost(args):
    runs = {"A": [], "B": []}
    for i in range(args.repeat):
        for name, extra in (("A", ()), ("B", ("--resumable",))):
            r = run_one(SERVER, args.clients, args.rooms, args.duration, args.loop, extra)
            runs[name].append(r)
            print(f"  run {i + 1}/{args.repeat} {name}: {r['rate']:,.0f} deliveries/s, "
                  f"p99 {r['p99']:.1f} ms, CPU {r['cpu']:.3f} s/M", flush=True)
    print_table(args, runs, "; A plain, B resumable", " (target <= 1.10)")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def server_on_core(args):
    """netcore-server on SERVER_CORE, on a free port, until the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *SERVER.split(), "--port", str(port),
             "--log-level", "WARNING", "--db", f"{tmp}/r.db", "--loop", args.loop],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            if "listening" not in server.stdout.readline():
                raise RuntimeError("the server did not start")
            yield server, port
        finally:
            server.terminate()
            server.wait(30)


def idle_rss(args, resumable):
    with server_on_core(args) as (server, port):
        before = rss_kb(server.pid)
        dummy = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "netcore_dummy.cli",
             "--port", str(port), "--clients", str(args.idle), "--hold", "--duration", "4",
             "--go-on-stdin", "--json", "--loop", args.loop,
             *(["--resumable"] if resumable else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = dummy.stdout.readline()           # every client in game
        if '"ready"' not in ready:
            raise RuntimeError(f"the dummy did not get in game: {ready!r}")
        during = rss_kb(server.pid)
        dummy.stdin.write("go\n")
        dummy.stdin.close()
        dummy.wait(60)
    return (during - before) * 1024 / args.idle


def memory(args):
    plain = statistics.median(idle_rss(args, False) for _ in range(args.repeat))
    kept = statistics.median(idle_rss(args, True) for _ in range(args.repeat))
    print(f"{args.idle} idle clients in game, server RSS growth per client, medians of "
          f"{args.repeat}: plain {plain:,.0f} B, resumable {kept:,.0f} B, "
          f"difference {kept - plain:+,.0f} B (target <= +1,024 B)")


class Client(asyncio.BufferedProtocol):
    """A bare packet reader: counts packets after S_ENTER_GAME, times S_RESUME."""

    def __init__(self, received=0, counting=False):
        self.buf = bytearray(1 << 16)
        self.data = bytearray()
        self.received = received
        self.counting = counting
        self.chats = []
        self.events = {}
        self.changed = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, hint):
        return self.buf

    def buffer_updated(self, n):
        from netcore_packets import Protocol_pb2 as pb
        self.data += self.buf[:n]
        while len(self.data) >= 4:
            size = int.from_bytes(self.data[:2], "little")
            if len(self.data) < size:
                break
            pkt_id = int.from_bytes(self.data[2:4], "little")
            payload = bytes(self.data[4:size])
            del self.data[:size]
            if pkt_id == 1011:
                self.events["resume"] = (time.perf_counter(), pb.S_RESUME.FromString(payload))
            else:
                if self.counting:
                    self.received += 1
                if pkt_id == 1003:
                    self.counting = True
                    self.events["enter"] = pb.S_ENTER_GAME.FromString(payload)
                elif pkt_id == 1005:
                    self.chats.append(pb.S_CHAT.FromString(payload).msg)
        self.changed.set()

    def connection_lost(self, exc):
        self.events["lost"] = exc
        self.changed.set()

    def send(self, pkt_id, msg):
        payload = msg.SerializeToString()
        self.transport.write(struct.pack("<HH", 4 + len(payload), pkt_id) + payload)

    async def until(self, predicate, timeout=10.0):
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def resumes(args, port):
    from netcore_packets import Protocol_pb2 as pb
    loop = asyncio.get_running_loop()
    _, chatter = await loop.create_connection(Client, "127.0.0.1", port)
    chatter.send(1000, pb.C_LOGIN())
    chatter.send(1002, pb.C_ENTER_GAME(playerIndex=0, roomId=7))
    await chatter.until(lambda: "enter" in chatter.events)
    seq = 0
    stop = False

    async def talk():
        nonlocal seq
        while not stop:
            chatter.send(1004, pb.C_CHAT(msg=str(seq)))
            seq += 1
            await asyncio.sleep(0.01)

    talker = loop.create_task(talk())
    to_resume, to_live, missed = [], [], []
    try:
        for _ in range(args.resumes):
            _, a = await loop.create_connection(Client, "127.0.0.1", port)
            a.send(1000, pb.C_LOGIN())
            a.send(1002, pb.C_ENTER_GAME(playerIndex=0, roomId=7, resumable=True))
            await a.until(lambda: "enter" in a.events and len(a.chats) >= 3)
            token = a.events["enter"].resumeToken
            reset(a.transport)
            await asyncio.sleep(0.05)            # the server sees the reset: a hold
            start = time.perf_counter()
            _, b = await loop.create_connection(lambda: Client(a.received, True),
                                                "127.0.0.1", port)
            b.send(1010, pb.C_RESUME(token=token, received=a.received))
            await b.until(lambda: "resume" in b.events)
            at, answer = b.events["resume"]
            assert answer.success, "a resume failed"
            mark = seq
            await b.until(lambda: any(int(m) >= mark for m in b.chats))
            live = time.perf_counter()
            got = [int(m) for m in a.chats + b.chats]
            assert got == list(range(got[0], got[-1] + 1)), "a chat lost or repeated"
            to_resume.append((at - start) * 1e3)
            to_live.append((live - start) * 1e3)
            missed.append(len([m for m in b.chats if int(m) < mark]))
            b.send(1012, pb.C_LEAVE())
            b.transport.close()
    finally:
        stop = True
        await talker
        chatter.transport.close()
    return to_resume, to_live, missed


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def latency(args):
    with server_on_core(args) as (_, port):
        os.sched_setaffinity(0, {int(LOAD_CORE)})
        to_resume, to_live, missed = asyncio.run(resumes(args, port))
    print(f"{args.resumes} resumes, a chatter at 100 chats/s in the room, each client cut "
          f"with an RST and back 50 ms later: connect to S_RESUME p50 "
          f"{quantile(to_resume, 0.5):.2f} ms p99 {quantile(to_resume, 0.99):.2f} ms; "
          f"to the first live chat p50 {quantile(to_live, 0.5):.2f} ms p99 "
          f"{quantile(to_live, 0.99):.2f} ms; chats replayed per resume median "
          f"{statistics.median(missed):.0f}; every chat exactly once, in order")


ROLLING_DONE = re.compile(
    r"rolling restart done in ([\d.]+) s: (\d+) of (\d+) workers handed over")


def rolling(args):
    """Section 4 of the module docstring: one run."""
    workers, clients, rooms = args.rolling_workers, args.rolling_clients, args.rolling_rooms
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            # Every client comes from 127.0.0.1: no per-address cap, as if
            # from many players (a handover moves a worker's clients onto
            # the others, more than 1,000 each with the default).
            server = subprocess.Popen(
                ["taskset", "-c", SERVER_CORE, *SERVER.split(), "--port", "0",
                 "--workers", str(workers), "--log-level", "INFO", "--db", f"{tmp}/r.db",
                 "--loop", args.loop, "--max-sessions-per-address", "0"],
                stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            banner = server.stdout.readline()
            if "listening on " not in banner:
                raise RuntimeError(f"--workers {workers} did not start: {banner!r}\n"
                                   f"{log_path.read_text()[-4000:]}")
            port = int(banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
            dummy = subprocess.run(
                ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "netcore_dummy.cli",
                 "--port", str(port), "--clients", str(clients), "--rooms", str(rooms),
                 "--rate", "1", "--duration", str(args.rolling_duration), "--json",
                 "--loop", args.loop, "--enter-timeout", "60", "--drain-timeout", "30",
                 "--resumable", "--rolling-restart", str(server.pid)],
                capture_output=True, text=True, timeout=args.rolling_duration + 240, check=False)
            try:
                report = json.loads(dummy.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                raise RuntimeError(f"the dummy gave no report (exit {dummy.returncode}): "
                                   f"{dummy.stdout[-2000:]!r} {dummy.stderr[-2000:]!r}") from None
            # The restart may outlast the chat: wait for the supervisor's line.
            deadline = time.monotonic() + (120 if report["resumes"]["restart_signalled"] else 0)
            done = ROLLING_DONE.search(log_path.read_text())
            while done is None and time.monotonic() < deadline and server.poll() is None:
                time.sleep(0.2)
                done = ROLLING_DONE.search(log_path.read_text())
        finally:
            server.terminate()
            server.wait(60)
    r = report["resumes"]
    gap = r["gap_ms"]
    took, handed = ((f"{float(done[1]):.1f}", f"{done[2]} of {done[3]}") if done
                    else ("-", "not done"))
    print(f"rolling restart of {workers} workers under {clients} resumable clients in {rooms} "
          f"rooms, 1 chat/s for {args.rolling_duration:.0f} s, SIGHUP at "
          f"{args.rolling_duration / 2:.0f} s, {args.loop}, server on core {SERVER_CORE}, "
          f"dummy on core {LOAD_CORE}, one run (no medians)"
          + ("" if r["restart_signalled"] else "; the SIGHUP was NOT sent"))
    print(f"{'workers':>7} {'clients':>7} {'chats sent':>10} {'lost':>5} {'duplicated':>10} "
          f"{'out of order':>12} {'closed':>7} {'resumed':>7} {'failed':>6} {'replayed':>8} "
          f"{'gap p50':>7} "
          f"{'gap p99':>7} {'gap max':>7} {'restart s':>9} {'handed over':>11} "
          f"{'chat p99':>8}  (gaps and latency in ms; closed: by the server)")
    print(f"{workers:>7} {clients:>7} {report['sent']:>10,} {report['lost']:>5,} "
          f"{report['duplicated']:>10,} {report['out_of_order']:>12,} "
          f"{r['server_closed']:>7,} {r['resumed']:>7,} {r['failed']:>6,} "
          f"{r['replayed']:>8,} {gap['p50']:>7.1f} "
          f"{gap['p99']:>7.1f} {gap['max']:>7.1f} {took:>9} {handed:>11} "
          f"{report['latency_ms']['p99']:>8.1f}")
    met = report["lost"] == 0 and r["failed"] == 0
    extra = "" if not report.get("errors") else f"; dummy errors: {report['errors'][:3]}"
    if report["failed"]:
        extra += f"; {report['failed']} clients failed"
    print(f"chats lost {report['lost']} (target 0), resumes failed {r['failed']} (target 0): "
          f"{'PASS' if met else 'FAIL'}; every chat exactly once and in order: "
          f"{'yes' if not (report['duplicated'] or report['out_of_order']) else 'NO'}{extra}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=1)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--resumes", type=int, default=200)
    ap.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    ap.add_argument("--rolling", action=argparse.BooleanOptionalAction, default=True,
                    help="the rolling-restart row (section 4)")
    ap.add_argument("--rolling-workers", type=int, default=4)
    ap.add_argument("--rolling-clients", type=int, default=2000)
    ap.add_argument("--rolling-rooms", type=int, default=20)
    ap.add_argument("--rolling-duration", type=float, default=20.0)
    ap.add_argument("--only", choices=["cost", "memory", "latency", "rolling"])
    args = ap.parse_args(argv)
    for part in (cost, memory, latency, rolling):
        if args.only == part.__name__ or (args.only is None and (part is not rolling
                                                                  or args.rolling)):
            part(args)


if __name__ == "__main__":
    main()
