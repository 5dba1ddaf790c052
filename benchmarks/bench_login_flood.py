"""Login flood: how long a returning player waits while one address floods
named logins (issue 9 §3; target: success within 1 s).

A netcore-server (pinned to core 0, per-address limits applied to loopback
with --exempt-networks "") gets `--flood` short-lived connections from
127.0.0.1 (the attacker, on core 1), each sending one C_LOGIN for a fresh
account and closing at once, `--concurrency` at a time, `--rounds` times.
Meanwhile a returning player logs in from 127.0.0.2 every `--every` seconds
and a guest from 127.0.0.1 does the same; the script prints their waits
(p50, max, any refusal), the flood's duration, and how many accounts the
flood managed to create.

    python benchmarks/bench_login_flood.py                   # 3 rounds of 1,000
    python benchmarks/bench_login_flood.py --unbounded       # the login bounds lifted

--unbounded lifts the bounds on logins in flight and new accounts; the
database workers still take turns by address, so it shows what the bounds
add on top of the turns (refusing at once, accounts not created, work not
queued). The state before both (a FIFO of every login, measured at 5974b3b:
a returning player waited past the 10 s login timeout) is that commit.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from netcore_packets import Protocol_pb2 as pb                    # noqa: E402
from netcore_packets.client_dispatch import PACKET_IDS            # noqa: E402

import netcore                                                    # noqa: E402
from game_support import connect_from                             # noqa: E402

C_LOGIN = PACKET_IDS["C_LOGIN"]
SERVER_CORE, LOAD_CORE = "0", "1"
UNBOUNDED = ("--max-logins-in-flight", "1000000", "--max-logins-in-flight-per-address",
             "1000000", "--max-new-accounts-per-address", "0",
             "--max-failed-logins-per-address", "0")


def start_server(port: int, db: str, unbounded: bool) -> subprocess.Popen:
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "netcore_game.cli",
           "--port", str(port), "--db", db, "--log-level", "WARNING", "--exempt-networks", "",
           "--max-sessions-per-address", "100000", *(UNBOUNDED if unbounded else ())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    banner = proc.stdout.readline()
    if "listening" not in banner:
        raise RuntimeError(f"server did not start: {banner!r}")
    return proc


def frame(pkt_id: int, payload: bytes) -> bytes:
    return (len(payload) + 4).to_bytes(2, "little") + pkt_id.to_bytes(2, "little") + payload


async def flood(port: int, n: int, concurrency: int, tag: str) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
            writer.write(frame(C_LOGIN, pb.C_LOGIN(account=f"{tag}{i}",
                                                   password="pw").SerializeToString()))
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    started = time.monotonic()
    await asyncio.gather(*[one(i) for i in range(n)])
    return time.monotonic() - started


async def timed_login(port: int, host: str, account: str, timeout: float) -> float | None:
    """Seconds to S_LOGIN success; None when refused or past the timeout.
    An empty account is a guest."""
    c = await connect_from(port, host)
    started = time.monotonic()
    try:
        reply = await asyncio.wait_for(c.login(account, "secret" if account else ""), timeout)
        return time.monotonic() - started if reply.success else None
    except (asyncio.TimeoutError, AssertionError):
        return None
    finally:
        c.disconnect()


async def run(args, port: int) -> dict:
    await timed_login(port, "127.0.0.2", "returning", 30)      # the account exists
    returning, guests, floods = [], [], []
    for r in range(args.rounds):
        task = asyncio.ensure_future(flood(port, args.flood, args.concurrency, f"r{r}-"))
        # During the flood and for --after seconds more: the server works off
        # what it admitted after the attacker's last connection is gone.
        end = None
        while end is None or time.monotonic() < end:
            returning.append(await timed_login(port, "127.0.0.2", "returning", 15))
            guests.append(await timed_login(port, "127.0.0.1", "", 15))
            await asyncio.sleep(args.every)
            if end is None and task.done():
                end = time.monotonic() + args.after
        floods.append(task.result())
    return {"returning": returning, "guests": guests, "floods": floods}


def describe(name: str, waits: list) -> str:
    ok = [w for w in waits if w is not None]
    refused = len(waits) - len(ok)
    if not ok:
        return f"{name}: {len(waits)} logins, all refused or timed out"
    return (f"{name}: {len(waits)} logins, p50 {statistics.median(ok) * 1000:.0f} ms, "
            f"max {max(ok) * 1000:.0f} ms, refused or timed out {refused}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flood", type=int, default=1000, help="connections per round")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--every", type=float, default=0.1,
                    help="seconds between the returning player's logins")
    ap.add_argument("--after", type=float, default=2.0,
                    help="seconds to keep measuring after each flood")
    ap.add_argument("--port", type=int, default=7950)
    ap.add_argument("--unbounded", action="store_true", help="lift every login bound")
    ap.add_argument("--loop", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        db = os.path.join(workdir, "flood.db")
        server = start_server(args.port, db, args.unbounded)
        try:
            os.sched_setaffinity(0, {int(LOAD_CORE)})
        except (AttributeError, OSError):
            pass
        try:
            result = netcore.run(run(args, args.port), args.loop)
        finally:
            server.terminate()
            server.wait(30)
        conn = sqlite3.connect(db)
        created = conn.execute("SELECT count(*) FROM accounts WHERE name != 'returning'"
                               ).fetchone()[0]
        conn.close()
    print(f"login flood: {args.rounds} x {args.flood} connections from 127.0.0.1 "
          f"({args.concurrency} at a time), {'UNBOUNDED' if args.unbounded else 'bounded'}")
    print(f"  each flood took {', '.join(f'{t:.2f} s' for t in result['floods'])}; "
          f"accounts created by it: {created}")
    print("  " + describe("returning player from 127.0.0.2", result["returning"]))
    print("  " + describe("guest from 127.0.0.1", result["guests"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
