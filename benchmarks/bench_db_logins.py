"""Named logins per second through PostgreSQL against SQLite, in one run (issue 13).

Two measurements per backend:

1. Through netcore-server (pinned to core 0 where taskset exists; the clients
   on core 1; PostgreSQL unpinned): `--accounts` clients, `--concurrency` at
   a time, each connects, sends C_LOGIN for an account of its own and waits
   for S_LOGIN: first as new accounts (hash + insert), then again as
   returning players (select + verify). This is what players see, with the
   real scrypt cost (n = 2**14), so it is mostly the hashing.
2. The database alone (Database.login in this process, scrypt n = 2**10, a
   tenth of a millisecond): what each backend's round trips cost, which the
   real hash hides.

The hashing cost is measured first and printed with the ceiling it sets:
Database.workers hashing threads per process, at most one hash per core at
a time, so about min(workers, cores) / hash time logins/s.

PostgreSQL is a private cluster started from the PostgreSQL installed here
(tests/pg_support.py), unless --pg-url names one (its database is used as is).

    python benchmarks/bench_db_logins.py                       # 2,000 logins each
    python benchmarks/bench_db_logins.py --accounts 200 --direct 500   # a smoke run
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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

from netcore_server.db import Database, SQLiteDatabase             # noqa: E402
from netcore_server.passwords import DEFAULT_N, hash_password, verify_password  # noqa: E402

C_LOGIN, S_LOGIN = PACKET_IDS["C_LOGIN"], PACKET_IDS["S_LOGIN"]
SERVER_CORE, LOAD_CORE = "0", "1"
CHEAP_N = 2 ** 10


def hashing_cost(samples: int = 20) -> dict:
    stored = hash_password("pw", DEFAULT_N)
    hashes, verifies = [], []
    for _ in range(samples):
        t = time.perf_counter()
        hash_password("pw", DEFAULT_N)
        hashes.append(time.perf_counter() - t)
        t = time.perf_counter()
        verify_password("pw", stored)
        verifies.append(time.perf_counter() - t)
    return {"n": DEFAULT_N, "hash_ms": statistics.median(hashes) * 1000,
            "verify_ms": statistics.median(verifies) * 1000}


def pinned(core: str) -> list[str]:
    return ["taskset", "-c", core] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def start_server(db: str) -> tuple[subprocess.Popen, int]:
    cmd = [*pinned(SERVER_CORE), sys.executable, "-m", "netcore_game.cli", "--port", "0",
           "--db", db, "--log-level", "WARNING", "--max-logins-in-flight", "100000",
           "--log-summary-seconds", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    banner = proc.stdout.readline()
    if "listening on" not in banner:
        proc.kill()
        raise RuntimeError(f"server did not start: {banner!r}")
    return proc, int(banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)
    proc.stdout.close()


def frame(pkt_id: int, payload: bytes) -> bytes:
    return (len(payload) + 4).to_bytes(2, "little") + pkt_id.to_bytes(2, "little") + payload


async def login(port: int, account: str) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame(C_LOGIN, pb.C_LOGIN(account=account, password="pw")
                           .SerializeToString()))
        while True:
            header = await reader.readexactly(4)
            size, pkt_id = int.from_bytes(header[:2], "little"), int.from_bytes(header[2:], "little")
            payload = await reader.readexactly(size - 4)
            if pkt_id == S_LOGIN:
                return pb.S_LOGIN.FromString(payload).success
    finally:
        writer.close()


async def through_server(port: int, accounts: int, concurrency: int, tag: str) -> dict:
    sem = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(i):
        nonlocal failed
        async with sem:
            if not await login(port, f"{tag}{i}"):
                failed += 1

    out = {}
    for phase in ("new", "returning"):
        failed = 0
        started = time.monotonic()
        await asyncio.gather(*[one(i) for i in range(accounts)])
        elapsed = time.monotonic() - started
        out[phase] = {"logins_per_s": accounts / elapsed, "failed": failed}
    return out


async def direct(db: Database, logins: int, tag: str) -> dict:
    """Database.login with a cheap hash, db.workers at a time (as the server hands them)."""
    await db.open()
    sem = asyncio.Semaphore(db.workers)
    out = {}
    try:
        for phase in ("new", "returning"):
            async def one(i):
                async with sem:
                    assert (await db.login(f"{tag}{i}", "pw")).ok
            started = time.monotonic()
            await asyncio.gather(*[one(i) for i in range(logins)])
            out[phase] = {"logins_per_s": logins / (time.monotonic() - started)}
    finally:
        await db.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=2000, help="logins through the server, per phase")
    ap.add_argument("--concurrency", type=int, default=64, help="clients logging in at once")
    ap.add_argument("--direct", type=int, default=5000,
                    help="logins straight to the database (cheap hash), per phase; 0: skip")
    ap.add_argument("--pg-url", default=None, help="an existing PostgreSQL database to use")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    if pinned(LOAD_CORE):
        os.sched_setaffinity(0, {int(LOAD_CORE)})

    cluster = None
    if args.pg_url is None:
        from pg_support import start_cluster
        cluster = start_cluster()
        if cluster is None:
            print("PostgreSQL is not installed here (apt-get install postgresql), "
                  "and no --pg-url was given", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-db-"))
    results = {"hashing": hashing_cost(), "cores": os.cpu_count(), "workers": Database.workers,
               "server_pinned": bool(pinned(SERVER_CORE))}
    try:
        backends = {"sqlite": str(tmp / "game.db"),
                    "postgres": args.pg_url or cluster.url(cluster.create_database())}
        run_tag = f"b{os.getpid()}-"
        for name, db_arg in backends.items():
            proc, port = start_server(db_arg)
            try:
                results[name] = {"server": asyncio.run(
                    through_server(port, args.accounts, args.concurrency, run_tag + "s"))}
            finally:
                stop_server(proc)
            if args.direct:
                if name == "sqlite":
                    db = SQLiteDatabase(tmp / "direct.db", scrypt_n=CHEAP_N)
                else:
                    from netcore_server.db_postgres import PostgresDatabase
                    db = PostgresDatabase(db_arg, scrypt_n=CHEAP_N)
                results[name]["direct"] = asyncio.run(direct(db, args.direct, run_tag + "d"))
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(results))
        return 0
    h = results["hashing"]
    server_cores = 1 if results["server_pinned"] else results["cores"]
    ceiling = min(results["workers"], server_cores) / (h["hash_ms"] / 1000)
    print(f"scrypt n={h['n']}: hash {h['hash_ms']:.1f} ms, verify {h['verify_ms']:.1f} ms "
          f"(median); {results['workers']} hashing threads per process, server on "
          f"{server_cores} core(s): at most ~{ceiling:.0f} named logins/s from hashing alone")
    for name in backends:
        s = results[name]["server"]
        line = (f"{name:8} through netcore-server: new {s['new']['logins_per_s']:.0f}/s, "
                f"returning {s['returning']['logins_per_s']:.0f}/s "
                f"(failed {s['new']['failed'] + s['returning']['failed']})")
        if "direct" in results[name]:
            d = results[name]["direct"]
            line += (f"; database alone (scrypt n={CHEAP_N}): new {d['new']['logins_per_s']:.0f}/s, "
                     f"returning {d['returning']['logins_per_s']:.0f}/s")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
