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

Resending. Each op is resent when its own timer expires (retransmit_after,
then twice as long after each resend, up to max_backoff), never the whole
window on every tick: an owner that is merely behind gets each op a few
times at most. The owner drops ops past a gap, so the ack of a resent op
makes the ops sent before that resend go again at once. After give_up_after
without an ack the room is left in a defined state (Gateway.give_up): its
members here are disconnected, and a new numbering tells the owner they left.

Trust. A stream message is taken only from the owner incarnation the ops are
numbered for, an ACK only within the current numbering, and only once the
whole message has parsed (packets whole, as many as each segment says).
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from typing import TYPE_CHECKING

from netcore import DisconnectReason, copy_frames, send_to_all

from netcore_cluster import wire

if TYPE_CHECKING:
    from netcore_cluster.link import ClusterLink

log = logging.getLogger("netcore_cluster")


MAX_EARLY = 4096        # messages one room may hold back while the link transitions


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
        # Ops not yet acknowledged: [seq, kind, member_id, data, first_sent,
        # resend_due, sends, last_sent] (0: never sent; see Gateway.tick).
        self.pending: deque = deque()
        # The earliest resend_due among pending (inf: none; 0: look now).
        self.resend_at = math.inf
        self.next_seq = self.first_seq = _first_seq()
        self.fresh = True                       # the next op starts the numbering
        self.numbered_for = 0                   # owner epoch the seqs count for
        self.subscribed = False
        self.closed = False
        # What the stream has shown: (owner epoch, incarnation), next seq, packets seen.
        self.stream_key = None
        self.expected = 0
        self.packets_seen = 0
        # Messages ahead of `expected` while the link is transitioning (a
        # successor's two subscriptions deliver in two orders), by seq.
        self.early: dict[int, bytes] = {}

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

    def member_changed(self) -> None:
        """A member's session changed (a resume): the fan-out list is rebuilt."""
        self._sessions = None

    # -- the stream ------------------------------------------------------------------

    def fan_out(self, buf) -> int:
        """DATA: every confirmed member here gets the packets, in one queue entry."""
        if self._sessions is None:
            self._sessions = [self.members[m].session for m in self.confirmed
                              if self.members[m].session is not None]
        if not self._sessions:
            return 0
        return send_to_all(self._sessions, buf)

    def unicast(self, member_id: int, buf) -> None:
        member = self.members.get(member_id)
        if member is not None and member.session is not None:
            session = member.session
            if getattr(session, "enter_pending", False):
                # The answer to its enter (a resumable session's: the server
                # layer adds its resume token, netcore_server.resume).
                session.answer_enter(buf)
            else:
                session.send(buf)

    def multicast(self, member_ids, buf) -> None:
        """The packets to those of these members that are here: one copy for all."""
        for (member_id,) in wire.MEMBER_IDS.iter_unpack(member_ids):
            member = self.members.get(member_id)
            if member is not None and member.session is not None:
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
        self.next_seq = self.first_seq = _first_seq()
        self.fresh = True
        self.numbered_for = epoch
        now = time.monotonic()
        for mid, member in self.members.items():
            self._append(wire.JOIN, mid, member.to_card(), now)
        for op in old:
            self._append(op[1] & ~wire.FIRST, op[2], op[3], now)
        return list(self.pending)

    def _append(self, kind: int, member_id: int, data: bytes, now: float):
        if self.fresh:
            kind |= wire.FIRST
            self.fresh = False
        op = [self.next_seq, kind, member_id, data, now, 0.0, 0, 0.0]
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
                 give_up_after: float, max_backoff: float | None = None):
        self.link = link
        self.rooms: dict[int, RemoteRoom] = {}
        self.max_pending_ops = max_pending_ops
        self.retransmit_after = retransmit_after
        self.give_up_after = give_up_after
        # An op unacknowledged for retransmit_after is sent again, and again
        # after twice as long each time, up to max_backoff between sends.
        self.max_backoff = max_backoff if max_backoff is not None else 8 * retransmit_after

    def room(self, room_id: int) -> RemoteRoom:
        rr = self.rooms.get(room_id)
        if rr is None:
            link = self.link
            rr = self.rooms[room_id] = RemoteRoom(link, room_id, link.placement.owner(room_id))
            rr.numbered_for = link.known.get(rr.owner, 0)
            link.subscribe(room_id)
        return rr

    # -- a rolling restart (link.py, "Successors") -------------------------------------

    def export_state(self) -> list:
        """Every room's numbering, what waits for its ack, and where its
        stream is; its members (this worker's players) by id."""
        out = []
        for rr in self.rooms.values():
            out.append({
                "room": rr.room_id, "owner": rr.owner, "members": list(rr.members),
                "confirmed": list(rr.confirmed), "pending": [list(op) for op in rr.pending],
                "resend_at": None if rr.resend_at == math.inf else rr.resend_at,
                "next_seq": rr.next_seq, "first_seq": rr.first_seq, "fresh": rr.fresh,
                "numbered_for": rr.numbered_for, "stream_key": rr.stream_key,
                "expected": rr.expected, "packets_seen": rr.packets_seen})
        return out

    def import_state(self, rooms: list, members: dict) -> None:
        """A predecessor's rooms as they were: `members`, player id -> Player
        (a member not there, whose hold did not come over, leaves)."""
        for saved in rooms:
            rr = self.room(saved["room"])
            rr.owner = saved["owner"]
            rr.pending = deque(saved["pending"])
            rr.resend_at = math.inf if saved["resend_at"] is None else saved["resend_at"]
            rr.next_seq, rr.first_seq = saved["next_seq"], saved["first_seq"]
            rr.fresh, rr.numbered_for = saved["fresh"], saved["numbered_for"]
            key = saved["stream_key"]
            rr.stream_key = tuple(key) if key is not None else None
            rr.expected, rr.packets_seen = saved["expected"], saved["packets_seen"]
            gone = []
            for mid in saved["members"]:
                member = members.get(mid)
                if member is None:
                    gone.append(mid)
                else:
                    member.room = rr
                    rr.members[mid] = member
            rr.confirmed = {mid for mid in saved["confirmed"] if mid in rr.members}
            rr._sessions = None
            for mid in gone:
                self.forward(rr, wire.LEAVE, mid, b"")

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
        else:
            rr.resend_at = 0.0              # sent by the first tick that finds it reachable

    def _reachable(self, rr: RemoteRoom) -> bool:
        """Its owner's incarnation is the one its ops are numbered for."""
        return bool(rr.numbered_for) and rr.numbered_for == self.link.known.get(rr.owner)

    def _send(self, rr: RemoteRoom, ops, timed_out: bool = True) -> None:
        self.link.queue_ops(rr.owner, rr.numbered_for, self._sent(rr, ops, timed_out))

    def _sent(self, rr: RemoteRoom, ops, timed_out: bool = True) -> list:
        """The ops encoded, each timed for its next resend: retransmit_after
        from its first send, then twice as long after each resend that a
        timeout made (up to max_backoff), with a little jitter so that
        gateways do not resend together."""
        now = time.monotonic()
        encoded = []
        for op in ops:
            if timed_out or not op[6]:
                op[6] += 1
            delay = min(self.retransmit_after * (1 << min(op[6] - 1, 30)), self.max_backoff)
            op[5] = now + delay * (1.0 + 0.25 * random.random())
            op[7] = now
            if op[5] < rr.resend_at:
                rr.resend_at = op[5]
            encoded.append(wire.up_op(op[1], rr.room_id, op[0], op[2], op[3]))
        return encoded

    def resend(self, rr: RemoteRoom) -> None:
        """Everything unacknowledged, now (the broker reconnected: what was in
        flight may be lost)."""
        if rr.pending and self._reachable(rr):
            self.link.stats["ops_resent"] += len(rr.pending)
            self._send(rr, tuple(rr.pending))

    def resend_expired(self, rr: RemoteRoom, now: float) -> None:
        """Only the ops whose own resend time has come."""
        if not rr.pending or now < rr.resend_at or not self._reachable(rr):
            return
        due = [op for op in rr.pending if op[5] <= now]
        rr.resend_at = min((op[5] for op in rr.pending if op[5] > now), default=math.inf)
        if due:
            self.link.stats["ops_resent"] += sum(1 for op in due if op[6])
            self._send(rr, due)

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
            rr.resend_at = math.inf
            ops += self._sent(rr, [op for op in renumbered if op[1] & ~wire.FIRST == wire.JOIN])
        ops.append(wire.up_op(wire.SYNC, 0, 0, 0))
        for rr, renumbered in rebuilt:
            ops += self._sent(rr, [op for op in renumbered if op[1] & ~wire.FIRST != wire.JOIN])
        self.link.queue_ops(slot, epoch, ops)
        for rr, _ in rebuilt:
            self.maybe_drop(rr)         # only LEAVEs waited (after a give-up): nothing to redo

    def tick(self, now: float) -> None:
        """Resend what waits too long; give up on an owner silent for far longer."""
        for rr in list(self.rooms.values()):
            if not rr.pending:
                continue
            age = now - rr.pending[0][4]
            if age > self.give_up_after and (rr.members or any(
                    op[1] & ~wire.FIRST != wire.LEAVE for op in rr.pending)):
                self.give_up(rr, age)
            else:
                self.resend_expired(rr, now)

    def give_up(self, rr: RemoteRoom, age: float) -> None:
        """The owner has not acknowledged for give_up_after: its ops are
        dropped (counted), and the room here is left in a defined state. Its
        members here are disconnected with the reason (they missed their own
        ops, and maybe the room's packets: never left in game hearing
        nothing), and a new numbering starts with a LEAVE of every member the
        dropped ops were about, resent (with backoff, never given up) until
        the owner takes them or its incarnation ends: an owner that comes back
        as the same incarnation removes them, one that restarted never had
        them. Later enters here join that numbering, behind the LEAVEs."""
        stats = self.link.stats
        gone = {op[2] for op in rr.pending} | set(rr.members)
        members = list(rr.members.values())
        stats["ops_given_up"] += len(rr.pending)
        stats["members_given_up"] += len(members)
        log.error("cluster: room %d: owner %s silent for %.0f s; %d ops dropped, %d members "
                  "here disconnected", rr.room_id, rr.owner, age, len(rr.pending), len(members))
        rr.pending.clear()
        rr.members.clear()
        rr.confirmed.clear()
        rr._sessions = None
        rr.next_seq = rr.first_seq = _first_seq()
        rr.fresh = True
        rr.resend_at = math.inf
        detail = f"room {rr.room_id}: its owner {rr.owner} did not answer for {age:.0f} s"
        for member in members:
            session = member.session
            if session is not None:
                session.disconnect(DisconnectReason.LOST_PACKETS, detail)
        now = time.monotonic()
        leaves = [rr._append(wire.LEAVE, mid, b"", now) for mid in sorted(gone)]
        if leaves and self._reachable(rr):
            self._send(rr, leaves)
        elif leaves:
            rr.resend_at = 0.0
        self.maybe_drop(rr)

    # -- the streams in ---------------------------------------------------------------------

    def on_stream(self, data) -> None:
        rr = self._stream(data)
        while rr is not None and rr.early:
            data = rr.early.pop(rr.expected, None)
            if data is None:
                break
            self._stream(data)

    def end_reordering(self) -> None:
        """The link's transition is over: what still waits for an earlier
        message will never get it (a gap, handled as one)."""
        for rr in list(self.rooms.values()):
            early, rr.early = sorted(rr.early.items()), {}
            for _, data in early:
                try:
                    self._stream(data)      # parsed once already, when it was held back
                except Exception:
                    self.link.stats["internal_errors"] += 1
                    log.exception("cluster: room %d: a held-back message failed", rr.room_id)

    def _stream(self, data):
        """One message of a room's stream; the RemoteRoom it was for."""
        room_id, owner_epoch, incarnation, seq, before, segments = wire.read_down(data)
        rr = self.rooms.get(room_id)
        if rr is None:
            return None                     # unsubscribed since: nothing here wants it
        segments = [_checked(seg) for seg in segments]      # all of it parses, or none is used
        stats = self.link.stats
        if owner_epoch != rr.numbered_for:
            # From another incarnation of the owner than the one our ops are
            # numbered for (a late message of one that died, or of one we do
            # not know yet): its ACKs, JOINED and LEFT marks are not about
            # our ops and members there, and its packets are not that room's.
            stats["stream_stale"] += 1
            return
        key = (owner_epoch, incarnation)
        if rr.stream_key != key:
            rr.stream_key = key             # a room (re)made on its owner: start here
            rr.packets_seen = before
        elif seq < rr.expected:
            # Seen already: a successor handles what it heard while its
            # predecessor still ran (link.py, "Successors"). NATS itself
            # never repeats a message.
            stats["stream_repeats"] += 1
            return rr
        elif seq != rr.expected and self.link.transitioning and len(rr.early) < MAX_EARLY:
            rr.early[seq] = data            # its predecessors come through the other subscription
            stats["stream_reordered"] += 1
            return rr
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
        return rr

    def acked(self, rr: RemoteRoom, seq: int) -> None:
        if not rr.first_seq <= seq < rr.next_seq:
            self.link.stats["acks_stale"] += 1      # of an earlier numbering: not about these
            return
        if rr.pending and rr.pending[0][0] <= seq:
            now = time.monotonic()
            filled = 0.0
            for op in rr.pending:
                if op[0] > seq:
                    break
                self.link.forward_delay.observe(now - op[4])
                if op[6] > 1:
                    filled = op[7]          # a resend of it ran
            rr.acked(seq)
            if filled and rr.pending and self._reachable(rr):
                # The owner runs ops in order and drops those past a gap: what
                # was last sent before the resend that filled the gap, it
                # dropped. Sent again now, not each at its own timeout.
                behind = [op for op in rr.pending if 0.0 < op[7] < filled]
                if behind:
                    self.link.stats["ops_resent"] += len(behind)
                    self._send(rr, behind, timed_out=False)
            self.maybe_drop(rr)
            if not rr.pending:
                self.link.maybe_quiet()

    def maybe_drop(self, rr: RemoteRoom) -> None:
        if rr.idle and self.rooms.get(rr.room_id) is rr:
            del self.rooms[rr.room_id]
            rr.closed = True
            self.link.unsubscribe(rr.room_id)


def _checked(seg):
    """A segment whose packets (DATA, UNICAST) are whole, as many as it says,
    copied into the send buffer they will go out in."""
    kind = seg[0]
    if kind == wire.DATA or kind == wire.UNICAST or kind == wire.MULTICAST:
        try:
            buf = copy_frames(seg[-1])
        except ValueError as exc:
            raise wire.WireError(f"segment of kind {kind}: {exc}") from None
        if buf.frames != seg[-2]:
            raise wire.WireError(f"segment of kind {kind} says {seg[-2]} packets, "
                                 f"has {buf.frames}")
        return (*seg[:-1], buf)
    return seg
