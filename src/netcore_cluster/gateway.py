"""The gateway's side of a room owned by another worker.

To the game a RemoteRoom looks like its Room: handlers call
`room.do_async(room.enter, player)`, `room.do_async(room.chat, player, msg)`,
`room.do_async(room.leave, player)`. Instead of running those jobs it forwards
them, as ops, to the owner, which runs them on the real room; and it fans the
room's stream out to the members connected here, with the same C loop
(send_to_all) a local room uses.

Reliability. Ops carry a sequence number per (gateway, owner incarnation,
room) and stay in `pending` until the room's stream acknowledges them; the
owner runs each op once, in order, and drops repeats and ops past a gap, so
resending everything unacknowledged (after a timeout, a broker reconnect, or
a restarted owner) never duplicates and never reorders. A numbering starts
at a random 62-bit number, its first op flagged FIRST: a RemoteRoom made
anew (after the last one went idle) needs no agreement with the owner about
where the old numbering ended, and the owner may forget idle numberings. A member starts
receiving the room's packets at the JOINED mark the owner put in the stream:
exactly those produced after its enter ran.
"""
from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import TYPE_CHECKING

from netcore import DisconnectReason, copy_frames, send_to_all

from netcore_cluster import wire

if TYPE_CHECKING:
    from netcore_cluster.link import ClusterLink

log = logging.getLogger("netcore_cluster")


def _first_seq() -> int:
    return random.getrandbits(62) + 1


class _Job:
    """`remote_room.chat` and friends: a job name the owner's room will run."""
    __slots__ = ("room", "__name__")

    def __init__(self, room, name):
        self.room = room
        self.__name__ = name


class RemoteRoom:
    def __init__(self, link: "ClusterLink", room_id: int, owner: str):
        self.link = link
        self.room_id = room_id
        self.owner = owner                  # the owner's slot
        self.members: dict[int, object] = {}    # entered here and not left
        self.confirmed: set[int] = set()        # ... and shown in by the owner's stream
        self._sessions: list | None = []        # fan-out list, rebuilt after a change
        # Ops not yet acknowledged: (seq, kind, member_id, data, first_sent).
        self.pending: deque = deque()
        self.next_seq = _first_seq()
        self.fresh = True                       # the next op starts the numbering
        self.numbered_for = 0                   # owner epoch the seqs count for
        self.subscribed = False
        self.closed = False
        # What the stream has shown: (owner epoch, incarnation), next seq, packets seen.
        self.stream_key = None
        self.expected = 0
        self.packets_seen = 0

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"<RemoteRoom {self.room_id} owned by {self.owner}, {len(self.members)} here>"

    # -- the Room interface the game uses ----------------------------------------

    # Only ever passed to do_async, which forwards them by name.
    def enter(self, member):
        raise RuntimeError("RemoteRoom jobs run on the owner; push them with do_async")

    def leave(self, member):
        raise RuntimeError("RemoteRoom jobs run on the owner; push them with do_async")

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return _Job(self, name)

    def do_async(self, fn, member, *args) -> None:
        if self.closed:
            return
        name = getattr(fn, "__name__", None)
        mid = member.member_id
        if name == "enter":
            self.members[mid] = member
            self.link.gateway.forward(self, wire.JOIN, mid, member.to_card())
        elif name == "leave":
            if self.members.pop(mid, None) is not None:
                self.confirmed.discard(mid)
                self._sessions = None
                self.link.gateway.forward(self, wire.LEAVE, mid, b"")
        elif isinstance(fn, _Job) and fn.room is self:
            if mid in self.members:
                self.link.gateway.forward(self, wire.JOB, mid, wire.encode_job(name, args))
        else:
            raise TypeError(f"{fn!r} is not a job of room {self.room_id}")

    # -- the stream ------------------------------------------------------------------

    def fan_out(self, frames) -> int:
        """DATA: every confirmed member here gets the packets, in one queue entry."""
        if self._sessions is None:
            self._sessions = [self.members[m].session for m in self.confirmed
                              if self.members[m].session is not None]
        if not self._sessions:
            return 0
        return send_to_all(self._sessions, copy_frames(frames))

    def unicast(self, member_id: int, frames) -> None:
        member = self.members.get(member_id)
        if member is not None and member.session is not None:
            member.session.send(copy_frames(frames))

    def multicast(self, member_ids, frames) -> None:
        """The packets to those of these members that are here: one copy for all."""
        buf = None
        for (member_id,) in wire.MEMBER_IDS.iter_unpack(member_ids):
            member = self.members.get(member_id)
            if member is not None and member.session is not None:
                if buf is None:
                    buf = copy_frames(frames)
                member.session.send(buf)

    def lost(self, packets: int) -> None:
        """The stream skipped messages: the members here missed packets of the
        room. Each is told so by being disconnected, never left silently out of
        step; what it does next (reconnect, enter again) is the client's."""
        detail = f"room {self.room_id} lost {packets} packets between workers"
        for member_id in list(self.confirmed):
            session = self.members[member_id].session
            if session is not None:
                session.disconnect(DisconnectReason.LOST_PACKETS, detail)

    def confirm(self, member_id: int) -> None:
        if member_id in self.members:
            self.confirmed.add(member_id)
            self._sessions = None

    def removed(self, member_id: int, why: str = "room_refused") -> None:
        """The owner took the member out (refused its enter, for `why`)."""
        member = self.members.pop(member_id, None)
        self.confirmed.discard(member_id)
        self._sessions = None
        if member is not None:
            hook = getattr(member, "on_removed_from_room", None)
            if hook is not None:
                hook(self, why)

    def acked(self, seq: int) -> None:
        pending = self.pending
        while pending and pending[0][0] <= seq:
            pending.popleft()

    def renumber(self, epoch: int) -> list:
        """A new owner incarnation: its room starts empty. Every member here
        enters again, then the jobs not yet acknowledged run, in their order."""
        old = [op for op in self.pending
               if op[1] & ~wire.FIRST == wire.JOB and op[2] in self.members]
        self.pending.clear()
        self.confirmed.clear()
        self._sessions = None
        self.next_seq = _first_seq()
        self.fresh = True
        self.numbered_for = epoch
        now = time.monotonic()
        for mid, member in self.members.items():
            self._append(wire.JOIN, mid, member.to_card(), now)
        for _, kind, mid, data, _ in old:
            self._append(kind & ~wire.FIRST, mid, data, now)
        return list(self.pending)

    def _append(self, kind: int, member_id: int, data: bytes, now: float):
        if self.fresh:
            kind |= wire.FIRST
            self.fresh = False
        op = (self.next_seq, kind, member_id, data, now)
        self.next_seq += 1
        self.pending.append(op)
        return op

    @property
    def idle(self) -> bool:
        """Nothing here any more: no member, nothing waiting for the owner."""
        return not self.members and not self.pending


class Gateway:
    """This worker's players in rooms owned by other workers: one RemoteRoom
    per such room, their ops forwarded (bounded, resent until acknowledged),
    their rooms' streams fanned out here."""

    def __init__(self, link: "ClusterLink", max_pending_ops: int, retransmit_after: float,
                 give_up_after: float):
        self.link = link
        self.rooms: dict[int, RemoteRoom] = {}
        self.max_pending_ops = max_pending_ops
        self.retransmit_after = retransmit_after
        self.give_up_after = give_up_after

    def room(self, room_id: int) -> RemoteRoom:
        rr = self.rooms.get(room_id)
        if rr is None:
            link = self.link
            rr = self.rooms[room_id] = RemoteRoom(link, room_id, link.placement.owner(room_id))
            rr.numbered_for = link.known.get(rr.owner, 0)
            link.subscribe(room_id)
        return rr

    def pending_ops(self) -> int:
        return sum(len(rr.pending) for rr in self.rooms.values())

    # -- ops out ----------------------------------------------------------------------

    def forward(self, rr: RemoteRoom, kind: int, member_id: int, payload: bytes) -> None:
        stats = self.link.stats
        if kind == wire.JOB and len(rr.pending) >= self.max_pending_ops:
            stats["ops_dropped"] += 1       # the owner is away too long: bounded
            if stats["ops_dropped"] & (stats["ops_dropped"] - 1) == 0:
                log.warning("cluster: room %d: owner %s unreachable, %d ops dropped so far",
                            rr.room_id, rr.owner, stats["ops_dropped"])
            return
        stats["ops_forwarded"] += 1
        op = rr._append(kind, member_id, payload, time.monotonic())
        if self._reachable(rr):
            self._send(rr, (op,))

    def _reachable(self, rr: RemoteRoom) -> bool:
        """Its owner's incarnation is the one its ops are numbered for."""
        return bool(rr.numbered_for) and rr.numbered_for == self.link.known.get(rr.owner)

    def _send(self, rr: RemoteRoom, ops) -> None:
        self.link.queue_ops(rr.owner, rr.numbered_for,
                            [wire.up_op(kind, rr.room_id, seq, mid, payload)
                             for seq, kind, mid, payload, _ in ops])

    def resend(self, rr: RemoteRoom) -> None:
        if rr.pending and self._reachable(rr):
            self.link.stats["ops_resent"] += len(rr.pending)
            self._send(rr, tuple(rr.pending))

    def resend_all(self) -> None:
        for rr in list(self.rooms.values()):
            self.resend(rr)

    def ping(self, room_ids=None) -> None:
        """Ask the owners of these rooms (default: every room we listen to) for a
        message now: a gap since the last one shows at once, not at the next chat."""
        for rr in list(self.rooms.values()):
            if (room_ids is None or rr.room_id in room_ids) and self._reachable(rr):
                self.link.queue_ops(rr.owner, rr.numbered_for,
                                    [wire.up_op(wire.PING, rr.room_id, 0, 0)])

    def rebuild(self, slot: str, epoch: int) -> None:
        """A new incarnation holds `slot`: every JOIN of ours for its rooms first,
        then SYNC (sent even with nothing to rebuild), then the rest."""
        rebuilt = [(rr, rr.renumber(epoch)) for rr in self.rooms.values()
                   if rr.owner == slot and rr.numbered_for != epoch]
        ops = []
        for rr, renumbered in rebuilt:
            ops += [wire.up_op(kind, rr.room_id, seq, mid, payload)
                    for seq, kind, mid, payload, _ in renumbered
                    if kind & ~wire.FIRST == wire.JOIN]
        ops.append(wire.up_op(wire.SYNC, 0, 0, 0))
        for rr, renumbered in rebuilt:
            ops += [wire.up_op(kind, rr.room_id, seq, mid, payload)
                    for seq, kind, mid, payload, _ in renumbered
                    if kind & ~wire.FIRST != wire.JOIN]
        self.link.queue_ops(slot, epoch, ops)

    def tick(self, now: float) -> None:
        """Resend what waits too long; give up on an owner silent for far longer."""
        for rr in list(self.rooms.values()):
            if not rr.pending:
                continue
            age = now - rr.pending[0][4]
            if age > self.give_up_after:
                self.link.stats["ops_given_up"] += len(rr.pending)
                log.error("cluster: room %d: owner %s silent for %.0f s; %d ops dropped",
                          rr.room_id, rr.owner, age, len(rr.pending))
                rr.pending.clear()
                self.maybe_drop(rr)
            elif age > self.retransmit_after:
                self.resend(rr)

    # -- the streams in ---------------------------------------------------------------------

    def on_stream(self, data) -> None:
        room_id, owner_epoch, incarnation, seq, before, segments = wire.read_down(data)
        rr = self.rooms.get(room_id)
        if rr is None:
            return                          # unsubscribed since: nothing here wants it
        stats = self.link.stats
        key = (owner_epoch, incarnation)
        if rr.stream_key != key:
            rr.stream_key = key             # a room (re)made on its owner: start here
            rr.packets_seen = before
        elif seq != rr.expected:
            lost = before - rr.packets_seen
            stats["stream_gaps"] += 1
            stats["packets_lost"] += lost
            log.warning("cluster: room %d: %d messages (%d packets) from %s never arrived; "
                        "its %d members here are disconnected", room_id, seq - rr.expected,
                        lost, rr.owner, len(rr.confirmed))
            rr.packets_seen = before
            rr.lost(lost)
        rr.expected = seq + 1
        me, my_epoch = self.link.slot, self.link.epoch
        for seg in segments:
            kind = seg[0]
            if kind == wire.DATA:
                rr.packets_seen += seg[1]
                stats["deliveries_relayed"] += rr.fan_out(seg[2]) * seg[1]
            elif kind == wire.MULTICAST:
                rr.packets_seen += seg[2]
                rr.multicast(seg[1], seg[3])
            elif kind == wire.UNICAST:
                rr.packets_seen += seg[2]
                rr.unicast(seg[1], seg[3])
            elif kind == wire.REFUSED:
                if seg[4] == me and seg[2] == my_epoch:
                    rr.removed(seg[1], wire.refusal_reason(seg[3]))
                    self.maybe_drop(rr)
            elif seg[3] == me and seg[2] == my_epoch:
                if kind == wire.ACK:
                    self.acked(rr, seg[1])
                elif kind == wire.JOINED:
                    rr.confirm(seg[1])
                else:
                    rr.removed(seg[1])
                    self.maybe_drop(rr)

    def acked(self, rr: RemoteRoom, seq: int) -> None:
        if rr.pending and rr.pending[0][0] <= seq:
            now = time.monotonic()
            for op in rr.pending:
                if op[0] > seq:
                    break
                self.link.forward_delay.observe(now - op[4])
            rr.acked(seq)
            self.maybe_drop(rr)
            if not rr.pending:
                self.link.maybe_quiet()

    def maybe_drop(self, rr: RemoteRoom) -> None:
        if rr.idle and self.rooms.get(rr.room_id) is rr:
            del self.rooms[rr.room_id]
            rr.closed = True
            self.link.unsubscribe(rr.room_id)
