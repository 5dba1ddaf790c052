"""The normal players of the adversarial suite, in a process of their own.

    python bystanders.py --port P [--clients 20] [--room 0] [--rate 10] [--size 64] [--loop K]

N guest clients log in, enter one room and chat at a steady pace (a single
pacer, `rate` chats per client per second, round robin), for as long as the
process lives. Every chat carries its sender, a per-sender sequence number
and its send time, and every client checks every S_CHAT it receives: from
which sender, which sequence number (a repeat is a duplicate, a jump is a
loss or reordering), how late. Anything else in the room (a chat from a
player id that is not one of ours, or a text not in our format) is "foreign"
and is reported verbatim, so the test decides what may appear there.

Being a separate process, it measures the server, not the test process that
plays the offender next to it (which may be busy flooding or holding 2,000
sockets).

Commands, one per line on stdin; every answer is one JSON line on stdout:
  (start)                  {"ready": true, "player_ids": [...]} once all are in game
  pace RATE SIZE           change the pace; answers {"ok": true}
  check TIMEOUT MIN_SENT   close the current window once at least MIN_SENT chats
                           were sent in it: wait until every client has every
                           chat sent so far (or TIMEOUT s), then report the
                           window (see Window.report) and start the next one
  quit                     disconnect and exit
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from google.protobuf.message import DecodeError

import netcore
from netcore import ClientService, PacketSession, make_packet
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

C_LOGIN, C_ENTER_GAME, C_CHAT = PACKET_IDS["C_LOGIN"], PACKET_IDS["C_ENTER_GAME"], PACKET_IDS["C_CHAT"]
S_LOGIN, S_ENTER_GAME, S_CHAT = PACKET_IDS["S_LOGIN"], PACKET_IDS["S_ENTER_GAME"], PACKET_IDS["S_CHAT"]
FIELD_PACKETS = {PACKET_IDS[name]: getattr(pb, name) for name in ("S_MOVE", "S_SPAWN", "S_DESPAWN")}
PACER_TICK = 0.005
FOREIGN_KEPT = 20_000               # foreign chats quoted per window (all are counted)
TAG = "by"                          # msg = "by:<sender index>:<seq>:<sent ns>:" + padding


class Window:
    """What the clients saw between two checks."""

    def __init__(self):
        self.started = time.monotonic()
        self.deliveries = 0
        self.duplicates = 0
        self.gaps = 0                   # a seq beyond the next expected: lost or reordered
        self.latencies_ns: list[int] = []
        self.foreign: list[list] = []   # [receiver index, player id, msg]
        self.foreign_count = 0
        self.disconnected: list[str] = []
        self.malformed = 0              # packets that do not parse, or of an unexpected type
        self.malformed_quoted: list[str] = []

    def report(self, sent: int, lost: int) -> dict:
        lat = sorted(self.latencies_ns)

        def pct(q):
            if not lat:
                return 0.0
            return lat[min(len(lat) - 1, max(0, round(q * len(lat)) - 1))] / 1e6

        return {
            "seconds": round(time.monotonic() - self.started, 3),
            "sent": sent, "deliveries": self.deliveries, "lost": lost,
            "duplicates": self.duplicates, "gaps": self.gaps,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "foreign_count": self.foreign_count, "foreign": self.foreign,
            "disconnected": self.disconnected,
            "malformed": self.malformed, "malformed_quoted": self.malformed_quoted,
        }


class Group:
    def __init__(self, n: int):
        self.n = n
        self.clients: list[Bystander] = []
        self.index_of_pid: dict[int, int] = {}
        self.window = Window()
        self.progress = asyncio.Event()

    def new_client(self):
        c = Bystander(self, len(self.clients))
        self.clients.append(c)
        return c


class Bystander(PacketSession):
    def __init__(self, group: Group, index: int):
        self.group = group
        self.index = index
        self.player_id = None
        self.entered = asyncio.get_running_loop().create_future()
        self.sent = 0                           # chats sent: the next seq
        self.next_seq = [0] * group.n           # per sender: the next seq expected
        self.gone = None

    def on_connected(self):
        self.send(make_packet(C_LOGIN, pb.C_LOGIN().SerializeToString()))

    def on_recv_packet(self, pkt_id, payload):
        if pkt_id == S_CHAT:
            try:
                self.on_chat(pb.S_CHAT.FromString(payload))
            except DecodeError as exc:
                self.malformed(f"S_CHAT that does not parse: {exc}")
        elif pkt_id == S_LOGIN:
            if not pb.S_LOGIN.FromString(payload).success:
                self.fail("login refused")
            else:
                self.send(make_packet(C_ENTER_GAME, pb.C_ENTER_GAME(
                    playerIndex=0, roomId=ARGS.room).SerializeToString()))
        elif pkt_id == S_ENTER_GAME:
            reply = pb.S_ENTER_GAME.FromString(payload)
            if not reply.success:
                self.fail("enter refused")
            elif not self.entered.done():
                self.player_id = reply.playerId
                self.entered.set_result(True)
        elif pkt_id in FIELD_PACKETS:
            # The room's field (netcore-server's default): who is near. The
            # chat is room-wide whatever the distance; these must only parse.
            try:
                FIELD_PACKETS[pkt_id].FromString(payload)
            except DecodeError as exc:
                self.malformed(f"packet {pkt_id} that does not parse: {exc}")
        else:
            self.malformed(f"unexpected packet id {pkt_id}")

    def malformed(self, what):
        w = self.group.window
        w.malformed += 1
        if len(w.malformed_quoted) < 10:
            w.malformed_quoted.append(f"client {self.index}: {what}")
        self.fail(what)

    def on_chat(self, m):
        now = time.monotonic_ns()
        g = self.group
        w = g.window
        sender = g.index_of_pid.get(m.playerId)
        parts = m.msg.split(":", 4)
        try:
            ours = (sender is not None and len(parts) == 5 and parts[0] == TAG
                    and int(parts[1]) == sender)
            seq, sent_ns = (int(parts[2]), int(parts[3])) if ours else (0, 0)
        except ValueError:
            ours = False
        if not ours:
            w.foreign_count += 1
            if len(w.foreign) < FOREIGN_KEPT:
                w.foreign.append([self.index, m.playerId, m.msg[:1024]])
            return
        expected = self.next_seq[sender]
        if seq < expected:
            w.duplicates += 1
            return
        if seq > expected:
            w.gaps += 1
        self.next_seq[sender] = seq + 1
        w.deliveries += 1
        w.latencies_ns.append(now - sent_ns)
        g.progress.set()

    def on_disconnected(self, reason):
        self.gone = str(reason)
        self.group.window.disconnected.append(f"client {self.index}: {reason}")
        self.fail(str(reason))
        self.group.progress.set()

    def fail(self, why):
        if not self.entered.done():
            self.entered.set_exception(RuntimeError(f"client {self.index}: {why}"))

    def chat(self, size):
        head = f"{TAG}:{self.index}:{self.sent}:{time.monotonic_ns()}:"
        msg = head + "." * max(0, size - len(head))
        self.send(make_packet(C_CHAT, pb.C_CHAT(msg=msg).SerializeToString()))
        self.sent += 1


async def pacer(group: Group, pace: dict) -> None:
    """Round-robin chats at pace['rate'] per client per second."""
    loop = asyncio.get_running_loop()
    t0, done, k = loop.time(), 0, 0
    rate = None
    while True:
        if pace["rate"] != rate:            # a new pace starts counting from now
            rate, t0, done = pace["rate"], loop.time(), 0
        due = int((loop.time() - t0) * rate * group.n)
        for _ in range(due - done):
            c = group.clients[k % group.n]
            k += 1
            if c.gone is None:
                c.chat(pace["size"])
        done = max(done, due)
        await asyncio.sleep(PACER_TICK)


def missing(group: Group, targets: list[int]) -> int:
    """Deliveries still owed: every live client owes every sender up to its target."""
    return sum(max(0, targets[s] - c.next_seq[s])
               for c in group.clients if c.gone is None for s in range(group.n))


async def check(group: Group, timeout: float, min_sent: int) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    prev = getattr(group, "_targets", [0] * group.n)
    # A window proves nothing unless the bystanders chatted during it.
    while sum(c.sent for c in group.clients) - sum(prev) < min_sent:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(PACER_TICK)
    targets = [c.sent for c in group.clients]
    while missing(group, targets):
        group.progress.clear()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        try:
            await asyncio.wait_for(group.progress.wait(), left)
        except asyncio.TimeoutError:
            break
    w, group.window = group.window, Window()
    group._targets = targets
    return w.report(sent=sum(targets) - sum(prev), lost=missing(group, targets))


async def stdin_lines():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line.split()


def say(obj) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main() -> None:
    group = Group(ARGS.clients)
    service = ClientService(group.new_client, port=ARGS.port, count=ARGS.clients)
    sessions = await service.start()
    if len(sessions) != ARGS.clients:
        say({"ready": False, "error": f"connect failed: {service.failures[:3]}"})
        return
    try:
        await asyncio.wait_for(asyncio.gather(*(c.entered for c in group.clients)), 30)
    except Exception as exc:
        say({"ready": False, "error": str(exc)})
        return
    group.index_of_pid = {c.player_id: c.index for c in group.clients}
    pace = {"rate": ARGS.rate, "size": ARGS.size}
    pacing = asyncio.ensure_future(pacer(group, pace))
    say({"ready": True, "player_ids": [c.player_id for c in group.clients]})
    async for cmd in stdin_lines():
        if cmd[0] == "pace":
            pace["rate"], pace["size"] = float(cmd[1]), int(cmd[2])
            say({"ok": True})
        elif cmd[0] == "check":
            say(await check(group, float(cmd[1]), int(cmd[2])))
        elif cmd[0] == "quit":
            break
    pacing.cancel()
    await service.close(timeout=5)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--room", type=int, default=0)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--loop", default=None)
    ARGS = ap.parse_args()
    netcore.run(main(), ARGS.loop)
