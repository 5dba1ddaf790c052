"""Soak: a real netcore-server under a steady chatting crowd with churn, its
memory sampled for the whole run; flat after warm-up, or not.

The server runs pinned to core 0 (its default flags, log level WARNING);
this script, pinned to core 1, keeps --clients players online: each logs in
(a guest, or one time in --account-every (20) a named account from a pool
of 20, so the database path and its scrypt hashing are exercised too), enters one of --rooms rooms and chats
--rate times a second (--size bytes). --churn players a second leave (a
random one, a graceful close) and as many new ones join, so over ten
minutes thousands of sessions, players and room memberships come and go
while the population stays the same.

Every chat carries its sender, a per-sender sequence number and its send
time. Each client checks what it hears: a sender's chats must arrive in
sequence (after the first one it hears from that sender, since it may have
joined late), so a jump is a lost chat and a repeat a duplicate; and no
client may be disconnected by the server. Every --sample seconds the
server's VmRSS, descriptors and threads are read from /proc; every
--print-every seconds one line is printed. The verdict compares the RSS at
the end with the RSS at minute 2 (after warm-up): FLAT when it grew by less
than --flat-mib (default 4 MiB), with the least-squares slope over the same
span for the record.

    python benchmarks/soak.py [--minutes 10] [--clients 1000] [--rooms 20] [--rate 1]
                              [--churn 10] [--loop uvloop|asyncio]

After the run every client leaves; the server must then be back to the
sockets it had before the crowd came. Exit status 0 when the memory was
flat, nothing was lost, duplicated or cut off, no descriptor was left
behind and the server stopped cleanly (exit 0); 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import netcore
from netcore import PacketSession, make_packet
from netcore.loop import tune_gc_for_serving
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

C_LOGIN, C_ENTER_GAME, C_CHAT = (PACKET_IDS[n] for n in ("C_LOGIN", "C_ENTER_GAME", "C_CHAT"))
S_LOGIN, S_ENTER_GAME, S_CHAT = (PACKET_IDS[n] for n in ("S_LOGIN", "S_ENTER_GAME", "S_CHAT"))
TICK = 0.01
HIST_BUCKET_NS = 100_000
HIST_BUCKETS = 100_000                  # up to 10 s
ACCOUNTS = 20
WARM_UP_S = 120


# -- the server ------------------------------------------------------------------------

def proc_status(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    fds = sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:           # closed in between
            pass
    return {"rss_kib": rss, "threads": threads, "fds": fds, "sockets": sockets}


def start_server(tmp: Path, loop: str, core: int | None):
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    with open(tmp / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netcore_game.cli", "--port", "0", "--db", str(tmp / "soak.db"),
             "--loop", loop, "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=pin)
    banner = proc.stdout.readline()
    if "listening on" not in banner:
        proc.wait(20)
        raise SystemExit(f"server did not start: {banner!r}\n{(tmp / 'server.log').read_text()}")
    port = int(banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    return proc, port, banner.strip()


# -- the crowd -------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.joined = self.left = self.sent = self.delivered = 0
        self.lost = self.duplicated = self.malformed = 0
        self.refused = 0
        self.unexpected: list[str] = []
        self.latency_hist = [0] * HIST_BUCKETS  # since the last printed line, 0.1 ms buckets

    def p99_ms(self) -> float:
        """The 99th percentile of the latencies counted since the last call."""
        hist, self.latency_hist = self.latency_hist, [0] * HIST_BUCKETS
        total = sum(hist)
        if not total:
            return 0.0
        rank, seen = 0.99 * total, 0
        for i, count in enumerate(hist):
            seen += count
            if seen >= rank:
                return (i + 1) * HIST_BUCKET_NS / 1e6
        return HIST_BUCKETS * HIST_BUCKET_NS / 1e6


class Player(PacketSession):
    def __init__(self, crowd: "Crowd", uid: int):
        self.crowd = crowd
        self.uid = uid
        self.room = uid % crowd.args.rooms
        self.in_game = False
        self.leaving = False
        self.seq = 0
        self.heard: dict[int, int] = {}         # sender uid -> last seq heard

    def on_connected(self):
        every = self.crowd.args.account_every
        if every and self.uid % every == 0:
            account = f"soak{self.uid // every % ACCOUNTS}"
            login = pb.C_LOGIN(account=account, password="pw " + account)
        else:
            login = pb.C_LOGIN()
        self.send(make_packet(C_LOGIN, login.SerializeToString()))

    def on_recv_packet(self, pkt_id, payload):
        st = self.crowd.stats
        if pkt_id == S_CHAT:
            now = time.monotonic_ns()
            m = pb.S_CHAT.FromString(payload)
            try:
                sender, seq, sent_ns, _ = m.msg.split(":", 3)
                sender, seq, sent_ns = int(sender), int(seq), int(sent_ns)
            except ValueError:
                st.malformed += 1
                return
            last = self.heard.get(sender)
            if last is not None:
                if seq <= last:
                    st.duplicated += 1
                    return
                st.lost += seq - last - 1
            self.heard[sender] = seq
            st.delivered += 1
            st.latency_hist[min((now - sent_ns) // HIST_BUCKET_NS, HIST_BUCKETS - 1)] += 1
        elif pkt_id == S_LOGIN:
            if pb.S_LOGIN.FromString(payload).success:
                self.send(make_packet(C_ENTER_GAME, pb.C_ENTER_GAME(
                    playerIndex=0, roomId=self.room).SerializeToString()))
            else:
                st.refused += 1
                self.leave()
        elif pkt_id == S_ENTER_GAME:
            if pb.S_ENTER_GAME.FromString(payload).success:
                self.in_game = True
                self.crowd.online.append(self)
            else:
                st.refused += 1
                self.leave()
        else:
            st.malformed += 1

    def on_disconnected(self, reason):
        crowd = self.crowd
        if not self.leaving and not crowd.closing:
            crowd.stats.unexpected.append(f"player {self.uid}: {reason}")
            if self.in_game:
                crowd.online.remove(self)
        crowd.present.discard(self)

    def chat(self):
        head = f"{self.uid}:{self.seq}:{time.monotonic_ns()}:"
        msg = head + "." * max(0, self.crowd.args.size - len(head))
        self.send(make_packet(C_CHAT, pb.C_CHAT(msg=msg).SerializeToString()))
        self.seq += 1
        self.crowd.stats.sent += 1

    def leave(self):
        self.leaving = True
        self.disconnect()


class Crowd:
    def __init__(self, args, port):
        self.args = args
        self.port = port
        self.stats = Stats()
        self.uids = itertools.count()
        self.online: list[Player] = []          # in game, chatting
        self.present: set[Player] = set()       # connected (online or getting there)
        self.closing = False
        self.rng = random.Random(args.seed)

    async def join(self):
        loop = asyncio.get_running_loop()
        uid = next(self.uids)
        try:
            _, p = await loop.create_connection(lambda: Player(self, uid), "127.0.0.1", self.port)
        except OSError as exc:
            self.stats.unexpected.append(f"connect: {exc}")
            return
        self.present.add(p)
        self.stats.joined += 1

    def leave_one(self):
        if not self.online:
            return
        i = self.rng.randrange(len(self.online))
        p = self.online[i]
        self.online[i] = self.online[-1]
        self.online.pop()
        p.leave()
        self.stats.left += 1

    async def run(self, seconds, on_tick):
        """Chat and churn at their rates until `seconds` have passed."""
        loop = asyncio.get_running_loop()
        args = self.args
        t0 = last = loop.time()
        churn_done = 0
        credit = 0.0                    # chats due: `rate` per online player per second
        k = 0
        pending = set()
        while (now := loop.time()) - t0 < seconds:
            n = len(self.online)
            credit += (now - last) * args.rate * n
            last = now
            while credit >= 1 and n:
                self.online[k % n].chat()
                k += 1
                credit -= 1
            churn_due = int((now - t0) * args.churn)
            for _ in range(churn_due - churn_done):
                self.leave_one()
            churn_done = churn_due
            for _ in range(args.clients - len(self.present) - len(pending)):
                t = asyncio.ensure_future(self.join())
                pending.add(t)
                t.add_done_callback(pending.discard)
            on_tick(now - t0)
            await asyncio.sleep(TICK)

    async def close(self):
        self.closing = True
        players = list(self.present)
        for p in players:
            p.disconnect()
        for p in players:
            await p.wait_closed()


# -- the run ---------------------------------------------------------------------------

def slope_mib_per_min(samples):
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    xs = [t / 60 for t, _ in samples]
    ys = [rss / 1024 for _, rss in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


async def soak(args, server, port) -> int:
    tune_gc_for_serving()
    crowd = Crowd(args, port)
    st = crowd.stats
    samples = []                        # (seconds, rss KiB)
    state = {"next_sample": 0.0, "next_print": 0.0, "last_delivered": 0, "last_t": 0.0}

    def on_tick(t):
        if t < state["next_sample"]:
            return
        state["next_sample"] += args.sample
        s = proc_status(server.pid)
        samples.append((t, s["rss_kib"]))
        if t + 1e-9 < state["next_print"]:
            return
        state["next_print"] += args.print_every
        rate = (st.delivered - state["last_delivered"]) / max(t - state["last_t"], 1e-9)
        state["last_delivered"], state["last_t"] = st.delivered, t
        p99 = st.p99_ms()
        print(f"{t / 60:5.1f} min  rss {s['rss_kib'] / 1024:6.1f} MiB  fds {s['fds']:5}  "
              f"threads {s['threads']:2}  online {len(crowd.online):5,}  joined {st.joined:6,}  "
              f"left {st.left:6,}  chats {st.sent:9,}  deliveries/s {rate:8,.0f}  "
              f"p99 {p99:7.1f} ms  lost {st.lost}  dup {st.duplicated}  "
              f"cut off {len(st.unexpected)}", flush=True)

    first = proc_status(server.pid)
    print(f"soak: {args.clients:,} clients in {args.rooms} rooms, {args.rate:g} chat/s each "
          f"({args.size} B), churn {args.churn:g} leave+join/s, {args.minutes:g} min, "
          f"server pinned to core {args.server_core}, clients to core {args.client_core}",
          flush=True)
    await crowd.run(args.minutes * 60, on_tick)
    end = proc_status(server.pid)
    samples.append((args.minutes * 60, end["rss_kib"]))
    await crowd.close()
    # Once everyone has gone the server should hold no socket of theirs.
    deadline = time.monotonic() + 10
    while (after := proc_status(server.pid))["sockets"] > first["sockets"] \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    warm = [s for s in samples if s[0] >= min(WARM_UP_S, args.minutes * 60 / 2)]
    base = warm[0]
    growth = (end["rss_kib"] - base[1]) / 1024
    peak = max(r for _, r in warm) / 1024
    slope = slope_mib_per_min(warm)
    flat = growth < args.flat_mib
    print(f"sessions: {st.joined:,} joined, {st.left:,} left by churn; chats {st.sent:,}, "
          f"deliveries {st.delivered:,}; lost {st.lost}, duplicated {st.duplicated}, "
          f"malformed {st.malformed}, refused {st.refused}, cut off by the server "
          f"{len(st.unexpected)}{': ' + '; '.join(st.unexpected[:5]) if st.unexpected else ''}")
    print(f"latency: p99 per {args.print_every:g} s above, 0.1 ms buckets")
    print(f"rss: {samples[0][1] / 1024:.1f} MiB at start, {base[1] / 1024:.1f} MiB at "
          f"{base[0] / 60:.1f} min, {end['rss_kib'] / 1024:.1f} MiB at the end (peak after "
          f"warm-up {peak:.1f} MiB); growth from {base[0] / 60:.1f} min to the end "
          f"{growth:+.1f} MiB, slope {slope:+.2f} MiB/min over that span")
    print(f"after the crowd left: rss {after['rss_kib'] / 1024:.1f} MiB, sockets "
          f"{after['sockets']} (before it came {first['sockets']}), fds {after['fds']} "
          f"(before {first['fds']}; the difference is the database's worker connections), "
          f"threads {after['threads']}")
    print(f"verdict: memory {'FLAT' if flat else 'GROWING'} after warm-up "
          f"(growth {growth:+.1f} MiB, limit < {args.flat_mib:g} MiB)")
    ok = flat and after["sockets"] <= first["sockets"] and not (
        st.lost or st.duplicated or st.malformed or st.refused or st.unexpected)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--rate", type=float, default=1.0, help="chats per client per second")
    ap.add_argument("--size", type=int, default=32, help="chat length in bytes")
    ap.add_argument("--churn", type=float, default=10.0, help="players leaving (and as many "
                    "joining) per second")
    ap.add_argument("--account-every", type=int, default=20, help="one join in this many logs "
                    "in with a named account (scrypt, the database), the rest as guests; 0: none")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--print-every", type=float, default=30.0)
    ap.add_argument("--flat-mib", type=float, default=4.0)
    ap.add_argument("--loop", default=None, help="the server's and the clients' event loop")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.loop = netcore.resolve_loop_kind(args.loop)
    cores = os.sched_getaffinity(0)
    if {args.server_core, args.client_core} <= cores:
        os.sched_setaffinity(0, {args.client_core})
    else:
        args.server_core = args.client_core = None
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        server, port, banner = start_server(Path(tmp), args.loop, args.server_core)
        print(banner)
        try:
            code = netcore.run(soak(args, server, port), args.loop)
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
            exit_code = server.wait(30)
            log = (Path(tmp) / "server.log").read_text()
        print(f"server exit {exit_code}; its log: {len(log.splitlines())} lines at WARNING"
              f"{', with a traceback' if 'Traceback' in log else ''}")
        if log.strip():
            print("  " + "\n  ".join(log.splitlines()[-5:]))
        return code if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
