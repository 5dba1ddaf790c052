"""Fuzz the receive path a million times: the property of
tests/test_core_framing.py, on far more inputs than CI can afford.

Every input is a byte stream, a way to cut it into reads and a maximum
packet size. It is fed to a real PacketSession (the tests' Recorder over
their FakeTransport, by their feed()) exactly as a transport feeds it:
get_buffer() then buffer_updated(n), read by read. The property, the tests' own:
  - the packets delivered are exactly those of the independent pure-Python
    reference parser (reference_split), in order, up to the first bad header;
  - a bad header closes the session as a protocol error, and nothing else
    ever closes it;
  - netcore.split_frames (the same C framing, no session) agrees too;
  - a session fed only whole valid packets keeps no receive memory after;
  - nothing crashes and nothing hangs: a watchdog, re-armed every 100
    inputs, dumps every thread's stack and kills the run if those 100 take
    more than --hang-seconds (10 s; they take about 5 ms), and the slowest
    single input is reported.

Inputs mix four kinds, so that most of them reach deep into the parser
rather than dying on a random first header:
  valid     0-12 well-formed packets (payloads 0-3000 bytes, sizes skewed
            small), any ids
  corrupt   a valid prefix, then a header whose size is < 4 or > the maximum,
            then more bytes
  mutated   a valid stream with bytes flipped, inserted, dropped or cut short
  random    arbitrary bytes
each cut at 0-30 random points (or a byte at a time when short), with a
maximum packet size drawn from 4 to 65535. A third of the inputs go to a
session with max_packets_per_read 1-16, mostly small, and mostly in 0-3
reads (netcore-server runs with 64): it
handles that many packets of a read, pauses reading and handles the rest a
cap per loop iteration, so those are fed like a transport would, a read
only while reading, and the loop runs until it reads again.

    python benchmarks/fuzz_recv.py [--inputs 1000000] [--seed N] [--hang-seconds 10]

Needs the test dependencies (it imports tests/support.py and the reference
parser of tests/test_core_framing.py). Exit
status 1 if any input broke the property; the first few are printed with
their seed and index so that they can be replayed (--only INDEX).
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import random
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import netcore  # noqa: E402
from netcore import DisconnectReason, split_frames  # noqa: E402
from support import FakeTransport, Recorder, feed, feed_capped, packet  # noqa: E402
from test_core_framing import reference_split  # noqa: E402

KINDS = ("valid", "corrupt", "mutated", "random")
MAX_FAILURES_SHOWN = 5
CAPPED_SHARE = 1 / 3        # inputs fed to a session with a max_packets_per_read
CAPS = (1, 1, 2, 2, 3, 4, 8, 16)
HANG_SECONDS = 10.0
STATS = {"deferred": 0}      # capped inputs whose session left packets for a later iteration


def payload_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.5:
        return rng.randrange(0, 16)
    if r < 0.85:
        return rng.randrange(16, 600)
    return rng.randrange(600, 3001)


def max_size_for(rng: random.Random, data_hint: int) -> int:
    r = rng.random()
    if r < 0.6:
        return 65535                         # what the sessions default to
    if r < 0.8:
        return rng.randrange(4, 70) if rng.random() < 0.3 else rng.randrange(4, 3100)
    return max(4, min(65535, data_hint + rng.randrange(-8, 9)))   # around a packet's size


def valid_packets(rng: random.Random, max_size: int):
    pkts = []
    for _ in range(rng.randrange(0, 13)):
        size = min(payload_size(rng), max_size - 4)
        pkts.append((rng.randrange(0, 0x10000), rng.randbytes(size)))
    return pkts


def make_input(rng: random.Random):
    """(kind, data, cuts, max_size, expect_clean, cap) for one input."""
    kind = KINDS[rng.randrange(4)]
    max_size = max_size_for(rng, payload_size(rng) + 4)
    if kind == "random":
        data = rng.randbytes(rng.randrange(0, 2001))
    else:
        stream = b"".join(packet(i, p) for i, p in valid_packets(rng, max_size))
        if kind == "valid":
            data = stream
        elif kind == "corrupt":
            bad = rng.randrange(0, 4) if (max_size == 65535 or rng.random() < 0.5) \
                else rng.randrange(max_size + 1, 65536)
            data = stream + struct.pack("<HH", bad, rng.randrange(0, 0x10000)) \
                + rng.randbytes(rng.randrange(0, 64))
        else:
            b = bytearray(stream or rng.randbytes(rng.randrange(1, 64)))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(4)
                pos = rng.randrange(0, len(b) + 1)
                if op == 0 and pos < len(b):
                    b[pos] ^= 1 << rng.randrange(8)
                elif op == 1:
                    b[pos:pos] = rng.randbytes(rng.randrange(1, 5))
                elif op == 2:
                    del b[pos:pos + rng.randrange(1, 5)]
                else:
                    del b[pos:]
            data = bytes(b)
    cap = rng.choice(CAPS) if rng.random() < CAPPED_SHARE else 0
    if len(data) <= 64 and rng.random() < 0.2:
        cuts = list(range(1, len(data)))     # a byte at a time
    else:
        # A capped session defers only when a read holds more packets than
        # its cap: mostly few reads for those.
        most = 4 if cap and rng.random() < 0.7 else 31
        cuts = [rng.randrange(0, len(data) + 1) for _ in range(rng.randrange(0, most))]
    return kind, data, cuts, max_size, kind == "valid", cap


async def check(data: bytes, cuts, max_size: int, expect_clean: bool, cap: int) -> str | None:
    """None when the property holds, else what broke."""
    ref_packets, ref_consumed, ref_error = reference_split(data, max_size)
    packets, consumed, error = split_frames(data, max_size)
    if (packets, consumed, error is not None) != (ref_packets, ref_consumed, ref_error):
        return (f"split_frames: {len(packets)} packets, consumed {consumed}, error {error!r}; "
                f"reference: {len(ref_packets)}, {ref_consumed}, {ref_error}")
    s = Recorder()
    s.set_limits(max_packet_size=max_size, max_packets_per_read=cap)
    t = FakeTransport()
    s.connection_made(t)
    if cap:
        STATS["deferred"] += await asyncio.wait_for(feed_capped(s, t, data, cuts), HANG_SECONDS)
    else:
        feed(s, data, cuts)
    if s.packets != ref_packets:
        return f"session delivered {len(s.packets)} packets, reference {len(ref_packets)}"
    if ref_error:
        if s.close_reason is None or s.close_reason.kind is not DisconnectReason.PROTOCOL_ERROR:
            return f"bad header: session close reason {s.close_reason}"
    elif s.close_reason is not None:
        return f"closed without a bad header: {s.close_reason}"
    if expect_clean and s.recv_buffer_size != 0:
        return f"{s.recv_buffer_size} bytes of receive memory kept after whole packets"
    return None


async def fuzz(args) -> int:
    rng = random.Random(args.seed)
    by_kind = dict.fromkeys(KINDS, 0)
    closed = delivered = total_bytes = capped = 0
    failures = []
    slowest = 0.0
    t0 = time.perf_counter()
    last_report = t0
    for index in range(args.inputs):
        kind, data, cuts, max_size, clean, cap = make_input(rng)
        if args.only is not None and index != args.only:
            if index > args.only:
                break
            continue
        if index % 100 == 0:
            faulthandler.dump_traceback_later(args.hang_seconds, exit=True)
        t = time.perf_counter()
        try:
            why = await check(data, cuts, max_size, clean, cap)
        except asyncio.TimeoutError:
            why = f"capped feed did not finish in {HANG_SECONDS} s"
        except Exception as exc:                    # a crash of the property itself
            why = f"raised {exc!r}"
        slowest = max(slowest, time.perf_counter() - t)
        by_kind[kind] += 1
        capped += bool(cap)
        total_bytes += len(data)
        ref_packets, _, ref_error = reference_split(data, max_size) if args.stats else ([], 0, 0)
        delivered += len(ref_packets)
        closed += bool(ref_error)
        if why is not None:
            failures.append((index, kind, len(data), len(cuts), max_size, cap, why))
            if args.only is not None:
                print(f"data={data!r}\ncuts={sorted(set(cuts))}\nmax_size={max_size}\ncap={cap}")
        now = time.perf_counter()
        if args.progress and now - last_report > 10:
            last_report = now
            print(f"  {index + 1:,} inputs, {now - t0:.0f} s, failures={len(failures)}",
                  file=sys.stderr, flush=True)
    faulthandler.cancel_dump_traceback_later()
    elapsed = time.perf_counter() - t0
    n = sum(by_kind.values())
    print(f"fuzz_recv: {n:,} inputs in {elapsed:.1f} s ({n / elapsed:,.0f}/s), seed {args.seed}, "
          f"failures={len(failures)}")
    print("  kinds: " + ", ".join(f"{k} {v:,}" for k, v in by_kind.items())
          + f"; {capped:,} with max_packets_per_read 1-16 ({STATS['deferred']:,} of them "
          f"deferring packets); {total_bytes / 1e6:,.1f} MB fed; "
          f"slowest input {slowest * 1000:.1f} ms")
    if args.stats:
        print(f"  reference: {delivered:,} packets delivered, {closed:,} inputs end in a bad header")
    for index, kind, size, ncuts, max_size, cap, why in failures[:MAX_FAILURES_SHOWN]:
        print(f"  FAILED input {index} ({kind}, {size} bytes, {ncuts} cuts, max {max_size}, "
              f"cap {cap}): {why}"
              f"  -- replay: --seed {args.seed} --only {index}")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=None, help="default: random, printed")
    ap.add_argument("--only", type=int, default=None, help="replay one input by index")
    ap.add_argument("--hang-seconds", type=float, default=10.0)
    ap.add_argument("--stats", action="store_true",
                    help="also count what the reference parser made of the inputs")
    ap.add_argument("--progress", action="store_true", help="a line on stderr every 10 s")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    faulthandler.enable()
    # One loop for the whole run: a session needs a running loop for its flusher.
    return netcore.run(fuzz(args), "asyncio")


if __name__ == "__main__":
    sys.exit(main())
