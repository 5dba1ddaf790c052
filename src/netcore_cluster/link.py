"""One worker's link to the cluster, over NATS core pub/sub.

Subjects (`prefix` defaults to "netcore"):

    <prefix>.w.<slot>   ops for rooms the worker at <slot> owns (it alone subscribes)
    <prefix>.r.<room>   the room's stream (the gateways with members there subscribe)
    <prefix>.ctl        hello / who / down: which incarnation holds which slot

Each worker is the owner of the rooms placement gives its slot (owner.py) and
the gateway of its own connections to every other room (gateway.py). The
worker's messages leave through one task, in the order they were made, so a
gateway's SUBSCRIBE to a room's stream reaches the broker before the JOIN that
makes the owner stream that room to it. Everything is batched: at most one
message per owner and one per room per event-loop iteration.

Incarnations. A worker's epoch is random per process start. A restarted
worker says hello with a new epoch: owners drop the members the old one had
(its connections died with it), and gateways re-enter their members into the
rooms the new one owns and resend what it never acknowledged. Until a
gateway knows an owner's epoch (a hello, or the answer to its who), it keeps
the ops for that owner, bounded, and sends none.

Rebuilding. A new incarnation's rooms start empty and are refilled by the
gateways' JOINs; a chat replayed before every gateway has re-entered its
members would miss some of them. So each gateway sends a new owner all its
JOINs, then a SYNC, then everything else; and the new owner runs JOINs at
once but holds every other op until each other slot of the cluster has sent
its SYNC (or `rebuild_timeout` has passed: a slot that is down sends none).
A fresh cluster goes through the same barrier, with nothing to re-enter.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter

from netcore_cluster import wire
from netcore_cluster.gateway import RemoteRoom
from netcore_cluster.owner import RoomStream
from netcore_cluster.placement import ClusterMap, Placement

log = logging.getLogger("netcore_cluster")

# A FIRST op whose seq is at most this far below what was applied is a resend
# of the current numbering, not a new one (new ones start at random in 2**62).
SAME_NUMBERING = 1 << 32
# An owner forgets a gateway's numbering in a room it has no member in after
# this long without ops (far beyond any resend, which gives up after 30 s).
FORGET_AFTER = 300.0

# Forwarding delay buckets (seconds): op forwarded -> its acknowledgement seen.
DELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)


class Histogram:
    """Cumulative buckets, as Prometheus wants them."""

    def __init__(self, buckets=DELAY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip((*map(str, self.buckets), "+Inf"), self.counts):
            total += n
            out.append((bound, total))
        return out


class ClusterLink:
    def __init__(self, cmap: ClusterMap, slot: str, servers: list[str], *,
                 prefix: str = "netcore", max_pending_ops: int = 10000,
                 retransmit_after: float = 1.0, give_up_after: float = 30.0,
                 rebuild_timeout: float = 2.0, sub_pending_bytes: int = 64 << 20,
                 epoch: int | None = None):
        if slot not in cmap.slots:
            raise ValueError(f"slot {slot} is not in the cluster {cmap}")
        self.cmap = cmap
        self.placement = Placement(cmap)
        self.slot = slot
        self.servers = list(servers)
        self.prefix = prefix
        self.epoch = epoch or (int.from_bytes(os.urandom(8), "little") >> 1) or 1
        self.max_pending_ops = max_pending_ops
        self.retransmit_after = retransmit_after
        self.give_up_after = give_up_after
        self.sub_pending_bytes = sub_pending_bytes
        self.rooms = None                       # the game's Rooms, bound by start()
        self.nc = None
        self.known: dict[str, int] = {slot: self.epoch}     # slot -> epoch that holds it
        # Owner side.
        self.streams: dict[int, RoomStream] = {}
        self.applied: dict[tuple, dict[int, int]] = {}      # gateway -> room -> last seq run
        self._touched: dict[tuple, float] = {}              # (gateway, room) -> last op time
        self.remote_members: dict[tuple, set] = {}          # gateway -> {(room, member)}
        self._incarnations = 0
        # The rebuild barrier: slots whose SYNC we still wait for, and the ops held meanwhile.
        self.rebuild_timeout = rebuild_timeout
        self.awaiting_sync = set(cmap.slots) - {slot}
        self._held: list | None = [] if self.awaiting_sync else None
        # Gateway side.
        self.remote_rooms: dict[int, RemoteRoom] = {}
        self._subs: dict[int, object] = {}
        self.up: dict[tuple, list] = {}                     # (owner slot, epoch) -> ops
        # Sending: what this iteration made, then one task sends it in order.
        self._dirty: list[RoomStream] = []
        self._flush_scheduled = False
        self._outbox: list = []
        self._outbox_ready = asyncio.Event()
        self._quiet = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self.loop = None
        # Largest body of one message: the broker's max_payload (known once
        # connected), less room for a header.
        self.max_message = (1 << 20) - 256
        self.stats = Counter()
        self.forward_delay = Histogram()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, rooms) -> "ClusterLink":
        import nats                 # the cluster extra: netcore runs without it

        self.rooms = rooms
        self.loop = asyncio.get_running_loop()
        self.nc = await nats.connect(
            self.servers, name=f"netcore {self.slot}", no_echo=True,
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
            connect_timeout=2, ping_interval=5, max_outstanding_pings=3,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected, pending_size=32 << 20)
        self.max_message = self.nc.max_payload - 256
        await self.nc.subscribe(f"{self.prefix}.w.{self.slot}", cb=self._on_up_msg,
                                pending_bytes_limit=self.sub_pending_bytes)
        await self.nc.subscribe(f"{self.prefix}.ctl", cb=self._on_ctl_msg)
        self._tasks = [self.loop.create_task(self._sender()),
                       self.loop.create_task(self._retransmitter())]
        if self.awaiting_sync:
            self.loop.call_later(self.rebuild_timeout, self._end_rebuild, True)
        self._ctl("hello")
        self._ctl("who")
        await self.nc.flush()
        log.info("cluster: %s (epoch %x) on %s, cluster %s", self.slot, self.epoch,
                 ",".join(self.servers), self.cmap)
        return self

    async def quiesce(self, timeout: float = 5.0) -> bool:
        """Wait until every op this gateway forwarded has been acknowledged."""
        self._flush()
        if self.pending_ops():
            self._quiet.clear()
            try:
                await asyncio.wait_for(self._quiet.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("cluster: %d ops still unacknowledged at shutdown",
                            self.pending_ops())
                return False
        return True

    async def drain_incoming(self, timeout: float = 2.0) -> None:
        """Handle every message the broker had routed to us before now: a
        round trip to the broker, then until our subscriptions' queues are empty."""
        self._flush()
        try:
            await asyncio.wait_for(self._drain_incoming(), timeout)
        except (asyncio.TimeoutError, Exception) as exc:   # a broker that is gone: no more to come
            log.warning("cluster: could not drain incoming messages: %r", exc)

    async def _drain_incoming(self):
        await self.nc.flush()
        while any(sub.pending_msgs for sub in list(self.nc._subs.values())):
            await asyncio.sleep(0)      # yield: the subscription tasks run the callbacks

    async def close(self) -> None:
        self._closing = True
        self._flush()
        self._outbox_ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            try:
                await self._send_outbox()
                await self.nc.flush(timeout=2)
            except Exception:       # the broker is gone: nothing more can leave
                pass
            await self.nc.close()

    # -- placement -------------------------------------------------------------------

    def owns(self, room_id: int) -> bool:
        return self.placement.owner(room_id) == self.slot

    def remote_room(self, room_id: int) -> RemoteRoom:
        rr = self.remote_rooms.get(room_id)
        if rr is None:
            rr = self.remote_rooms[room_id] = RemoteRoom(self, room_id,
                                                         self.placement.owner(room_id))
            rr.numbered_for = self.known.get(rr.owner, 0)
            self._outbox.append(("sub", room_id))
            self._outbox_ready.set()
        return rr

    # -- owner side ------------------------------------------------------------------

    def attach(self, room) -> RoomStream:
        """A room owned here was made: give it its stream."""
        self._incarnations += 1
        stream = self.streams[room.room_id] = RoomStream(self, room.room_id,
                                                         self._incarnations)
        room.link = stream
        return stream

    def detach(self, room) -> None:
        stream = self.streams.get(room.room_id)
        if stream is not None and stream is room.link:
            del self.streams[room.room_id]
            stream.detached = True

    def stream_dirty(self, stream: RoomStream) -> None:
        self._dirty.append(stream)
        self._schedule()

    def member_joined(self, room_id: int, member) -> None:
        self.remote_members.setdefault(member.gateway, set()).add((room_id, member.member_id))

    def member_left(self, room_id: int, member) -> None:
        members = self.remote_members.get(member.gateway)
        if members is not None:
            members.discard((room_id, member.member_id))
            if not members:
                del self.remote_members[member.gateway]

    def _on_up(self, data) -> None:
        to_epoch, g_epoch, g_slot, ops = wire.read_up(data)
        if to_epoch != self.epoch:
            self.stats["ops_stale"] += 1          # meant for an earlier incarnation of us
            return
        known = self.known.get(g_slot)
        if known is None:
            self.known[g_slot] = g_epoch          # its hello is still on its way
        elif known != g_epoch:
            self.stats["ops_stale"] += 1          # from a gateway that has restarted since
            return
        gateway = (g_slot, g_epoch)
        for kind, room_id, seq, member_id, payload in ops:
            if kind == wire.PING:
                stream = self.streams.get(room_id)
                if stream is not None:
                    stream.ping()
            elif kind == wire.SYNC:
                self.awaiting_sync.discard(g_slot)
                if not self.awaiting_sync:
                    self._end_rebuild(False)
            elif self._held is not None and (kind & ~wire.FIRST != wire.JOIN
                                             or g_slot not in self.awaiting_sync):
                self._held.append((gateway, kind, room_id, seq, member_id, payload))
            else:
                self._accept(gateway, kind, room_id, seq, member_id, payload)

    def _end_rebuild(self, timed_out: bool) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if timed_out and self.awaiting_sync:
            log.warning("cluster: no SYNC from %s after %.1f s (down?): running their rooms "
                        "without them", ",".join(sorted(self.awaiting_sync)), self.rebuild_timeout)
        self.awaiting_sync.clear()
        for op in held:
            if self.known.get(op[0][0]) == op[0][1]:      # its gateway still that incarnation
                self._accept(*op)

    def _accept(self, gateway, kind, room_id, seq, member_id, payload) -> None:
        if not self.owns(room_id):
            self.stats["ops_misrouted"] += 1
            log.error("cluster: %s sent an op for room %d, which %s owns, not %s: "
                      "do all nodes have the same --cluster?", gateway[0], room_id,
                      self.placement.owner(room_id), self.slot)
            return
        applied = self.applied.setdefault(gateway, {})
        last = applied.get(room_id, 0)
        if kind & wire.FIRST:
            kind &= ~wire.FIRST
            if not seq <= last < seq + SAME_NUMBERING:
                last = seq - 1      # a new numbering: what we had for it is over
        if seq <= last:
            self.stats["ops_repeated"] += 1
            stream = self.streams.get(room_id)
            if stream is not None:              # its ack may have been lost: again
                stream.ack(gateway[0], gateway[1], last)
            return
        if seq != last + 1:
            self.stats["ops_out_of_order"] += 1   # resent from last + 1 later
            return
        applied[room_id] = seq
        self._touched[(gateway, room_id)] = time.monotonic()
        self.stats["ops_in"] += 1
        room = self.rooms.get_or_create(room_id)
        room.do_async(self._apply, room, kind, gateway, seq, member_id, payload)

    def _apply(self, room, kind, gateway, seq, member_id, payload) -> None:
        """A job on the owner's room: one op, then its acknowledgement, so that
        the ack follows whatever the op made the room send."""
        stream = room.link
        member = room.players.get(member_id)
        mine = member is not None and member.gateway == gateway
        if kind == wire.JOIN:
            if not mine:
                room.enter(room.member_from_card(payload, gateway))
        elif kind == wire.LEAVE:
            if mine:
                room.leave(member)
        elif kind == wire.JOB:
            name, args = wire.decode_job(payload)
            if name not in room.REMOTE_JOBS:
                self.stats["ops_refused"] += 1
                log.error("cluster: %s asked room %d to run %r, which is not one of its "
                          "remote jobs", gateway[0], room.room_id, name)
            elif mine:
                getattr(room, name)(member, *args)
        stream.ack(gateway[0], gateway[1], seq)

    def _drop_gateway(self, slot: str, keep_epoch: int | None) -> None:
        """The worker at `slot` is gone (or came back as `keep_epoch`): its members leave."""
        for gateway in [g for g in self.remote_members if g[0] == slot and g[1] != keep_epoch]:
            for room_id, member_id in list(self.remote_members.get(gateway, ())):
                room = self.rooms.get(room_id)
                if room is not None:
                    room.do_async(self._leave_gone, room, member_id, gateway)
            self.stats["gateways_dropped"] += 1
        for gateway in [g for g in self.applied if g[0] == slot and g[1] != keep_epoch]:
            del self.applied[gateway]
        for key in [k for k in self._touched if k[0][0] == slot and k[0][1] != keep_epoch]:
            del self._touched[key]

    def _forget_idle_numberings(self, now: float) -> None:
        """Numberings of gateways with no member left in the room and no op for
        FORGET_AFTER: such a gateway's next op there starts anew (FIRST)."""
        busy = {(g, room) for g, members in self.remote_members.items() for room, _ in members}
        for key, touched in list(self._touched.items()):
            if now - touched > FORGET_AFTER and key not in busy:
                del self._touched[key]
                rooms = self.applied.get(key[0])
                if rooms is not None:
                    rooms.pop(key[1], None)
                    if not rooms:
                        del self.applied[key[0]]

    @staticmethod
    def _leave_gone(room, member_id, gateway) -> None:
        member = room.players.get(member_id)
        if member is not None and member.gateway == gateway:
            room.leave(member)

    # -- gateway side ------------------------------------------------------------------

    def forward(self, rr: RemoteRoom, kind: int, member_id: int, payload: bytes) -> None:
        if kind == wire.JOB and len(rr.pending) >= self.max_pending_ops:
            self.stats["ops_dropped"] += 1      # the owner is away too long: bounded
            if self.stats["ops_dropped"] & (self.stats["ops_dropped"] - 1) == 0:
                log.warning("cluster: room %d: owner %s unreachable, %d ops dropped so far",
                            rr.room_id, rr.owner, self.stats["ops_dropped"])
            return
        self.stats["ops_forwarded"] += 1
        op = rr._append(kind, member_id, payload, time.monotonic())
        if rr.numbered_for and rr.numbered_for == self.known.get(rr.owner):
            self._send_ops(rr, (op,))

    def _send_ops(self, rr: RemoteRoom, ops) -> None:
        key = (rr.owner, rr.numbered_for)
        batch = self.up.get(key)
        if batch is None:
            batch = self.up[key] = []
        for seq, kind, member_id, payload, _ in ops:
            batch.append(wire.up_op(kind, rr.room_id, seq, member_id, payload))
        self._schedule()

    def _on_stream(self, data) -> None:
        room_id, owner_epoch, incarnation, seq, before, segments = wire.read_down(data)
        rr = self.remote_rooms.get(room_id)
        if rr is None:
            return                          # unsubscribed since: nothing here wants it
        key = (owner_epoch, incarnation)
        if rr.stream_key != key:
            rr.stream_key = key             # a room (re)made on its owner: start here
            rr.packets_seen = before
        elif seq != rr.expected:
            lost = before - rr.packets_seen
            self.stats["stream_gaps"] += 1
            self.stats["packets_lost"] += lost
            log.warning("cluster: room %d: %d messages (%d packets) from %s never arrived; "
                        "its %d members here are disconnected", room_id, seq - rr.expected,
                        lost, rr.owner, len(rr.confirmed))
            rr.packets_seen = before
            rr.lost(lost)
        rr.expected = seq + 1
        me, my_epoch = self.slot, self.epoch
        for seg in segments:
            kind = seg[0]
            if kind == wire.DATA:
                rr.packets_seen += seg[1]
                self.stats["deliveries_relayed"] += rr.fan_out(seg[2]) * seg[1]
            elif kind == wire.UNICAST:
                rr.packets_seen += seg[2]
                rr.unicast(seg[1], seg[3])
            elif seg[3] == me and seg[2] == my_epoch:
                if kind == wire.ACK:
                    self._acked(rr, seg[1])
                elif kind == wire.JOINED:
                    rr.confirm(seg[1])
                else:
                    rr.removed(seg[1])
                    self._maybe_drop(rr)

    def _acked(self, rr: RemoteRoom, seq: int) -> None:
        if rr.pending and rr.pending[0][0] <= seq:
            now = time.monotonic()
            for op in rr.pending:
                if op[0] > seq:
                    break
                self.forward_delay.observe(now - op[4])
            rr.acked(seq)
            self._maybe_drop(rr)
            if not self._quiet.is_set() and not self.pending_ops():
                self._quiet.set()

    def _maybe_drop(self, rr: RemoteRoom) -> None:
        if rr.idle and self.remote_rooms.get(rr.room_id) is rr:
            del self.remote_rooms[rr.room_id]
            rr.closed = True
            self._outbox.append(("unsub", rr.room_id))
            self._outbox_ready.set()

    def pending_ops(self) -> int:
        return sum(len(rr.pending) for rr in self.remote_rooms.values())

    def _resend(self, rr: RemoteRoom) -> None:
        if rr.pending and rr.numbered_for and rr.numbered_for == self.known.get(rr.owner):
            self.stats["ops_resent"] += len(rr.pending)
            self._send_ops(rr, tuple(rr.pending))

    # -- control: who holds which slot -------------------------------------------------

    def _ctl(self, op: str, **extra) -> None:
        msg = {"op": op, "slot": self.slot, "epoch": self.epoch, "cluster": str(self.cmap),
               **extra}
        self._outbox.append(("pub", f"{self.prefix}.ctl", json.dumps(msg).encode()))
        self._outbox_ready.set()

    def _on_ctl(self, data) -> None:
        msg = json.loads(data)
        op, slot, epoch = msg["op"], msg["slot"], int(msg.get("epoch", 0))
        if op == "who":
            if slot != self.slot:
                self._ctl("hello")
            op = "hello"                        # a who is also its sender's hello
        if op == "hello":
            if slot == self.slot:
                if epoch != self.epoch:
                    log.error("cluster: another worker says it is %s: two nodes with "
                              "the same --node-id?", slot)
                return
            if msg.get("cluster") != str(self.cmap):
                log.error("cluster: %s runs cluster %s, this worker %s: rooms will be "
                          "misrouted", slot, msg.get("cluster"), self.cmap)
            if self.known.get(slot) != epoch:
                self._slot_changed(slot, epoch)
        elif op == "down" and slot != self.slot:
            if self.known.get(slot) == epoch or not epoch:
                self.known.pop(slot, None)
                self._drop_gateway(slot, None)
                log.info("cluster: %s is down", slot)
                if slot in self.awaiting_sync:      # no SYNC will come from it
                    self.awaiting_sync.discard(slot)
                    if not self.awaiting_sync:
                        self._end_rebuild(False)

    def _slot_changed(self, slot: str, epoch: int) -> None:
        previous = self.known.get(slot)
        self.known[slot] = epoch
        self._drop_gateway(slot, epoch)
        # Rebuild its rooms: every JOIN of ours first, then SYNC, then the rest.
        rebuilt = [(rr, rr.renumber(epoch)) for rr in self.remote_rooms.values()
                   if rr.owner == slot and rr.numbered_for != epoch]
        batch = self.up.setdefault((slot, epoch), [])
        for rr, ops in rebuilt:
            batch.extend(wire.up_op(kind, rr.room_id, seq, mid, payload)
                         for seq, kind, mid, payload, _ in ops if kind & ~wire.FIRST == wire.JOIN)
        batch.append(wire.up_op(wire.SYNC, 0, 0, 0))
        for rr, ops in rebuilt:
            batch.extend(wire.up_op(kind, rr.room_id, seq, mid, payload)
                         for seq, kind, mid, payload, _ in ops if kind & ~wire.FIRST != wire.JOIN)
        self._schedule()
        if previous is not None:
            self.stats["owner_restarts"] += 1
            log.info("cluster: %s is back (epoch %x)", slot, epoch)

    # -- the broker connection ---------------------------------------------------------

    async def _on_up_msg(self, msg):
        self._handle(self._on_up, msg)

    async def _on_stream_msg(self, msg):
        self._handle(self._on_stream, msg)

    async def _on_ctl_msg(self, msg):
        self._handle(self._on_ctl, msg)

    def _handle(self, fn, msg) -> None:
        self.stats["messages_in"] += 1
        self.stats["bytes_in"] += len(msg.data)
        try:
            fn(msg.data)
        except (wire.WireError, ValueError, KeyError, TypeError) as exc:
            self.stats["bad_messages"] += 1
            log.error("cluster: a message on %s does not parse: %s", msg.subject, exc)

    def _ping_streams(self, room_ids=None) -> None:
        """Ask the owners of these rooms (default: every room we listen to) for a
        message now: a gap since the last one shows at once, not at the next chat."""
        for rr in list(self.remote_rooms.values()):
            if room_ids is None or rr.room_id in room_ids:
                if rr.numbered_for and rr.numbered_for == self.known.get(rr.owner):
                    self.up.setdefault((rr.owner, rr.numbered_for), []).append(
                        wire.up_op(wire.PING, rr.room_id, 0, 0))
        self._schedule()

    async def _on_error(self, exc):
        # While the broker is away every reconnect attempt fails: say it once,
        # then at every power of two.
        from nats.errors import SlowConsumerError
        if isinstance(exc, SlowConsumerError):  # our pending limit dropped some of a subject
            self.stats["slow_consumer_drops"] += 1
            room = exc.subject.rsplit(".", 1)[-1]
            if room.isdigit():
                self._ping_streams({int(room)})
        self.stats["broker_errors"] += 1
        n = self.stats["broker_errors"]
        if n & (n - 1) == 0 or self.nc is None or self.nc.is_connected:
            log.warning("cluster: broker error (%d so far): %r", n, exc)

    async def _on_disconnected(self):
        if self._closing:
            return
        self.stats["broker_disconnects"] += 1
        log.warning("cluster: lost the broker; reconnecting")

    async def _on_reconnected(self):
        self.stats["broker_reconnects"] += 1
        log.info("cluster: broker reconnected (%s)", self.nc.connected_url.netloc)
        # What was in flight may be lost: resend, see whether the room streams
        # skipped anything, and ask who is there now.
        for rr in self.remote_rooms.values():
            self._resend(rr)
        self._ping_streams()
        self._ctl("hello")
        self._ctl("who")

    # -- sending ----------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Once per iteration: one message per owner and one per room."""
        self._flush_scheduled = False
        out = self._outbox
        if self.up:
            limit = self.max_message
            for (owner, epoch), ops in self.up.items():
                if not epoch or epoch != self.known.get(owner):
                    continue
                head = wire.up_header(epoch, self.epoch, self.slot)
                subject = f"{self.prefix}.w.{owner}"
                body, size = [], 0
                for op in ops:
                    if body and size + len(op) > limit:
                        out.append(("pub", subject, head + b"".join(body)))
                        body, size = [], 0
                    body.append(op)
                    size += len(op)
                out.append(("pub", subject, head + b"".join(body)))
            self.up = {}
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for stream in dirty:
                subject = f"{self.prefix}.r.{stream.room_id}"
                for message in stream.take_messages():
                    out.append(("pub", subject, message))
        if out:
            self._outbox_ready.set()

    async def _sender(self):
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await self._send_outbox()

    async def _send_outbox(self):
        out, self._outbox = self._outbox, []
        nc = self.nc
        for item in out:
            try:
                if item[0] == "pub":
                    await nc.publish(item[1], item[2])
                    self.stats["messages_out"] += 1
                    self.stats["bytes_out"] += len(item[2])
                elif item[0] == "sub":
                    if item[1] in self.remote_rooms and item[1] not in self._subs:
                        self._subs[item[1]] = await nc.subscribe(
                            f"{self.prefix}.r.{item[1]}", cb=self._on_stream_msg,
                            pending_bytes_limit=self.sub_pending_bytes)
                elif item[0] == "unsub":
                    sub = self._subs.pop(item[1], None)
                    if sub is not None and item[1] not in self.remote_rooms:
                        await sub.unsubscribe()
                    elif sub is not None:
                        self._subs[item[1]] = sub       # the room came back meanwhile
            except Exception as exc:        # broker away and its buffer full: counted
                self.stats["messages_dropped"] += 1
                log.warning("cluster: could not send to the broker: %r", exc)

    async def _retransmitter(self):
        period = self.retransmit_after / 2
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for rr in list(self.remote_rooms.values()):
                if not rr.pending:
                    continue
                age = now - rr.pending[0][4]
                if age > self.give_up_after:
                    self.stats["ops_given_up"] += len(rr.pending)
                    log.error("cluster: room %d: owner %s silent for %.0f s; %d ops dropped",
                              rr.room_id, rr.owner, age, len(rr.pending))
                    rr.pending.clear()
                    self._maybe_drop(rr)
                elif age > self.retransmit_after:
                    self._resend(rr)
            if not self.pending_ops():
                self._quiet.set()
            self._forget_idle_numberings(now)
