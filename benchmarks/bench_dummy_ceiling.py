"""netcore-dummy's receive ceiling: how many S_CHAT deliveries per second one
core of dummy can read and check, so that a dummy run is known to measure the
server and not itself.

A blaster process (pinned to core 1) pre-builds one valid S_CHAT stream, as a
room of CONNS chatting players would produce it for each of its members
(every sender in turn, seqs counting up), and writes it down every
connection as fast as the sockets take it. The receiver process (pinned to
core 0) is the real dummy receive path: DummySession over real loopback
sockets, every chat decoded and checked by the C tally. Its rate is unique
deliveries over the time between the first and the last read that counted
one. Prints the median of RUNS runs on each loop, plus the same stream read
by a plain-Python receiver (protobuf parse and checks in on_recv_packet) as
the baseline the C path replaces.

    python benchmarks/bench_dummy_ceiling.py [--conns 100] [--rounds 1000] [--runs 3]
    python benchmarks/bench_dummy_ceiling.py --conns 10000 --rooms 100 --rounds 20 \
        --blaster c --send-chunk 100      # the many-rooms shape, a chat or two per read
"""
import argparse
import asyncio
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import netcore
from netcore_dummy import DummySession, Tally
from netcore_dummy.tally import format_chat
from netcore import PacketSession
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PKT_S_CHAT

SEND_CHUNK = 1 << 18
FIRST_PLAYER_ID = 1000


# -- blaster (core 1) ----------------------------------------------------------

def build_stream(conns, rounds, size):
    """What each member of a room of `conns` receives over `rounds` rounds of
    everyone chatting once; identical for every member."""
    parts = []
    for seq in range(rounds):
        for sender in range(conns):
            body = pb.S_CHAT(playerId=FIRST_PLAYER_ID + sender,
                             msg=format_chat(sender, seq, 0, size)).SerializeToString()
            parts.append((len(body) + 4).to_bytes(2, "little")
                         + PKT_S_CHAT.to_bytes(2, "little") + body)
    return b"".join(parts)


def blaster(conns, rounds, size, chunk):
    stream = memoryview(build_stream(conns, rounds, size))
    listener = socket.create_server(("127.0.0.1", 0), backlog=conns)
    print(listener.getsockname()[1], flush=True)
    socks = [listener.accept()[0] for _ in range(conns)]
    for s in socks:
        s.setblocking(False)
    pos = {s.fileno(): 0 for s in socks}
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    while pos:
        for fd, _ in poller.poll(1000):
            sent = by_fd[fd].send(stream[pos[fd]:pos[fd] + chunk])
            pos[fd] += sent
            if pos[fd] == len(stream):
                poller.unregister(fd)
                del pos[fd]
    for s in socks:
        s.shutdown(socket.SHUT_WR)
    # Stay until the receiver hangs up, so no unread byte is ever reset.
    for s in socks:
        s.setblocking(True)
        while s.recv(65536):
            pass
        s.close()


# -- receivers (core 0) ----------------------------------------------------------

class PythonReceiver(PacketSession):
    """The baseline: what the tally does, written the obvious Python way."""

    def __init__(self, state):
        self.state = state
        self.next_seq = {}

    def on_recv_packet(self, pkt_id, payload):
        st = self.state
        msg = pb.S_CHAT.FromString(payload)
        sender, seq, _ = msg.msg.split(" ", 3)[:3]
        sender, seq = int(sender), int(seq)
        if msg.playerId != FIRST_PLAYER_ID + sender:
            st["wrong"] += 1
        if seq >= self.next_seq.get(sender, 0):
            self.next_seq[sender] = seq + 1
            st["unique"] += 1
            now = time.monotonic()
            st["first"] = st["first"] or now
            st["last"] = now
            if st["unique"] == st["target"]:
                st["done"].set_result(None)


async def receive(port, conns, rounds, path, rooms=1):
    loop = asyncio.get_running_loop()
    m = conns // rooms      # members per room; client i is in room i % rooms, as the dummy has it
    expected = conns * m * rounds
    done = loop.create_future()
    if path == "c":
        tally = Tally(conns)
        for i in range(conns):
            tally.set_member(i, i % rooms, i // rooms, FIRST_PLAYER_ID + i)
        tally.expect(expected, lambda: done.set_result(None))
        indices = iter(range(conns))

        def factory():
            i = next(indices)
            s = DummySession(tally, i, rooms)
            s.arm(m)                # armed before a byte can arrive
            return s
    else:
        state = {"unique": 0, "wrong": 0, "first": 0.0, "last": 0.0,
                 "target": expected, "done": done}

        def factory():
            return PythonReceiver(state)
    sessions = [(await loop.create_connection(factory, "127.0.0.1", port))[1]
                for _ in range(conns)]
    # The blaster starts once it has every connection, i.e. about now. A
    # receiver busy ~100% of the time from here is the bottleneck, not it.
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.wait_for(done, 600)
    busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    if path == "c":
        counts = tally.counts()
        unique, errors = counts["unique"], counts["wrong_sender"] + counts["malformed"]
        seconds = (tally.last_us - tally.first_us) / 1e6
    else:
        unique, errors = state["unique"], state["wrong"]
        seconds = state["last"] - state["first"]
    for s in sessions:
        if s.transport is not None:     # else already closed by the blaster's FIN
            s.transport.close()
    return {"unique": unique, "errors": errors, "seconds": seconds,
            "rate": unique / seconds, "busy": busy}


# -- orchestration -------------------------------------------------------------

def one_run(kind, path, args, rounds):
    me = [sys.executable, os.path.abspath(__file__), "--conns", str(args.conns),
          "--rounds", str(rounds), "--size", str(args.size), "--send-chunk", str(args.send_chunk),
          "--rooms", str(args.rooms)]
    if args.blaster_exe:
        blaster_cmd = [args.blaster_exe, str(args.conns), str(args.rooms), str(rounds),
                       str(args.size), str(args.send_chunk)]
    else:
        blaster_cmd = [*me, "--role", "blaster"]
    blast = subprocess.Popen(["taskset", "-c", "1", *blaster_cmd],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = blast.stdout.readline().strip()
        out = subprocess.run(["taskset", "-c", "0", *me, "--role", "receiver", "--port", port,
                              "--loop", kind, "--path", path],
                             stdout=subprocess.PIPE, text=True, check=True, timeout=900).stdout
        blast.wait(60)
    finally:
        if blast.poll() is None:
            blast.kill()
    result = json.loads(out)
    if result["unique"] != args.conns * (args.conns // args.rooms) * rounds or result["errors"]:
        raise SystemExit(f"receiver miscounted: {result}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1000, help="chats per sender, C path")
    ap.add_argument("--python-rounds", type=int, default=100, help="the same, Python baseline")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--send-chunk", type=int, default=SEND_CHUNK,
                    help="bytes per blaster send(); small ones mean small reads")
    ap.add_argument("--role", choices=["blaster", "receiver"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--loop", choices=netcore.loop.LOOP_KINDS)
    ap.add_argument("--path", choices=["c", "python"], default="c")
    ap.add_argument("--rooms", type=int, default=1,
                    help="rooms of conns / rooms members each (the many-rooms shape); "
                         "more than one needs --blaster c")
    ap.add_argument("--blaster", choices=["python", "c"], default="python",
                    help="c: chat_blaster.c, built here with gcc; the Python blaster is the "
                         "bound once its sends are small")
    args = ap.parse_args()
    if args.conns % args.rooms:
        ap.error("--conns must be a multiple of --rooms")
    if args.rooms > 1 and args.blaster != "c" and args.role is None:
        ap.error("--rooms above 1 needs --blaster c")
    if args.role == "blaster":
        return blaster(args.conns, args.rounds, args.size, args.send_chunk)
    if args.role == "receiver":
        result = netcore.run(receive(args.port, args.conns, args.rounds, args.path, args.rooms),
                             args.loop)
        print(json.dumps(result))
        return None

    args.blaster_exe = None
    workdir = tempfile.TemporaryDirectory()
    if args.blaster == "c":
        args.blaster_exe = os.path.join(workdir.name, "chat_blaster")
        subprocess.run(["gcc", "-O2", "-o", args.blaster_exe,
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_blaster.c")],
                       check=True)
    kinds = ["asyncio"] + (["uvloop"] if netcore.loop.uvloop_available() else [])
    shape = "one room" if args.rooms == 1 else f"{args.rooms} rooms of {args.conns // args.rooms}"
    print(f"{args.conns} connections in {shape}, {args.size}-byte chats, {args.blaster} blaster "
          f"send() of {args.send_chunk:,} B, receiver on core 0, blaster on core 1, "
          f"median of {args.runs} runs")
    paths = (("c", args.rounds),) if args.rooms > 1 else (("c", args.rounds),
                                                          ("python", args.python_rounds))
    for path, rounds in paths:
        label = "C tally" if path == "c" else "Python baseline"
        for kind in kinds:
            runs = [one_run(kind, path, args, rounds) for _ in range(args.runs)]
            rates = sorted(r["rate"] for r in runs)
            mid = statistics.median(rates)
            busy = statistics.median(r["busy"] for r in runs)
            print(f"  {label:15s} {kind:8s} {mid:>12,.0f} deliveries/s  "
                  f"(runs {', '.join(f'{r:,.0f}' for r in rates)}; "
                  f"{args.conns * (args.conns // args.rooms) * rounds:,} each; "
                  f"receiver CPU {busy:.0%})")
    return None


if __name__ == "__main__":
    sys.exit(main())
