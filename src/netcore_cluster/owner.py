"""The owner's side of a room: what its JobQueue produces, batched for other workers.

A room owned here runs exactly as in one process; its RoomStream only adds
one message per event-loop iteration to `<prefix>.r.<room>` carrying, in the
order the room produced them, the packets it broadcast (already framed), the
members of other workers that joined or were removed, packets for one such
member, and the acknowledgements of the gateways' ops. Nothing is published
for a room with no member elsewhere, except the acknowledgements that a
gateway's last leave still waits for. An iteration that produced more than
the broker takes in one message (its max_payload) goes out as several, in
order, each numbered.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from netcore_cluster import wire

if TYPE_CHECKING:
    from netcore_cluster.link import ClusterLink

log = logging.getLogger("netcore_cluster")

# A FIRST op whose seq is at most this far below what was applied is a resend
# of the current numbering, not a new one (new ones start at random in 2**62).
SAME_NUMBERING = 1 << 32
# An owner forgets a gateway's numbering in a room it has no member in after
# this long without ops (far beyond any resend, which gives up after 30 s).
FORGET_AFTER = 300.0


class RoomStream:
    __slots__ = ("link", "room_id", "incarnation", "seq", "packets", "sent", "remote",
                 "parts", "data", "data_bytes", "acks", "dirty", "detached")

    def __init__(self, link: "ClusterLink", room_id: int, incarnation: int):
        self.link = link
        self.room_id = room_id
        self.incarnation = incarnation
        self.seq = 0                    # messages published
        self.packets = 0                # packets produced (DATA and UNICAST frames)
        self.sent = 0                   # of which in messages already taken
        self.remote = 0                 # members on other workers
        self.parts: list = []           # (encoded segment, its packets) of the next messages
        self.data: list = []            # SendBuffers of the DATA segment being built
        self.data_bytes = 0
        self.acks: dict = {}            # (slot, epoch) -> the gateway's last op that ran
        self.dirty = False
        self.detached = False

    # -- called by the room's jobs (Room.broadcast, enter, leave) ----------------

    def publish(self, buf) -> None:
        """A broadcast: remote members get it too."""
        if self.remote:
            self.data.append(buf)
            self.data_bytes += len(buf)
            self._mark()

    def unicast(self, member, buf) -> None:
        """A packet for one remote member only."""
        self._close_data()
        self.parts.append((wire.unicast_segment(member.member_id, buf.frames, bytes(buf)),
                           buf.frames))
        self.packets += buf.frames
        self._mark()

    def multicast(self, members: bytes, buf) -> None:
        """A packet for some remote members only (`members`: their ids, u64
        little-endian each): a field's move for those that see the mover."""
        self._close_data()
        self.parts.append((wire.multicast_segment(members, buf.frames, bytes(buf)), buf.frames))
        self.packets += buf.frames
        self._mark()

    def joined(self, member) -> None:
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append((wire.member_segment(wire.JOINED, member.member_id, epoch, slot), 0))
        self.remote += 1
        self.link.owner.member_joined(self.room_id, member)
        self._mark()

    def left(self, member) -> None:
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append((wire.member_segment(wire.LEFT, member.member_id, epoch, slot), 0))
        self.remote -= 1
        self.link.owner.member_left(self.room_id, member)
        self._mark()

    def ping(self) -> None:
        """A message even with nothing in it: its number shows any gap."""
        self.parts.append((b"", 0))
        self._mark()

    def refused(self, member, why: str = "room_full") -> None:
        """The room would not take a member of another worker (`why`, one of
        wire.REFUSALS): its gateway removes it again and counts why."""
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append((wire.refused_segment(member.member_id, epoch, slot, why), 0))
        self._mark()

    def ack(self, slot: str, epoch: int, seq: int) -> None:
        """The gateway's ops up to seq ran: one ACK per gateway per message,
        after everything the room produced before it was taken, so after
        what those ops made the room send. The latest value wins (a new
        numbering starts anywhere)."""
        self.acks[slot, epoch] = seq
        self._mark()

    # -- batching -----------------------------------------------------------------

    def _mark(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.link.stream_dirty(self)

    def _close_data(self) -> None:
        """The broadcasts so far become DATA segments of at most a message each."""
        if not self.data:
            return
        limit = self.link.max_message
        run, size, frames = [], 0, 0
        for buf in self.data:
            n = len(buf)
            if run and size + n > limit:
                self._data_segment(run, size, frames)
                run, size, frames = [], 0, 0
            run.append(buf)
            size += n
            frames += buf.frames
        self._data_segment(run, size, frames)
        self.data = []
        self.data_bytes = 0

    def _data_segment(self, bufs, size, frames) -> None:
        self.parts.append((wire.data_segment_head(frames, size) + b"".join(bufs), frames))
        self.packets += frames

    def take_messages(self) -> list[bytes]:
        """What is waiting, as messages no larger than the broker takes."""
        self.dirty = False
        self._close_data()
        if self.acks:
            self.link.stats["acks_out"] += len(self.acks)
            for (slot, epoch), seq in self.acks.items():
                self.parts.append((wire.ack_segment(seq, epoch, slot), 0))
            self.acks = {}
        if not self.parts:
            return []
        limit = self.link.max_message
        messages, body, size, frames = [], [], 0, 0
        for segment, n in self.parts:
            if body and size + len(segment) > limit:
                messages.append(self._message(body, frames))
                body, size, frames = [], 0, 0
            body.append(segment)
            size += len(segment)
            frames += n
        messages.append(self._message(body, frames))
        self.parts = []
        return messages

    def _message(self, body, frames) -> bytes:
        # packets_before counts what earlier messages carried, so a gateway
        # that misses a message knows how many packets it lost.
        self.seq += 1
        self.link.batch_packets.observe(frames)
        head = wire.down_header(self.room_id, self.link.epoch, self.incarnation, self.seq,
                                self.sent)
        self.sent += frames
        return head + b"".join(body)


class Owner:
    """The rooms this worker owns: the gateways' ops in, run once and in order
    on each room's JobQueue; what the rooms produce out, through RoomStreams.

    Rebuilding. A new incarnation's rooms start empty and are refilled by the
    gateways' JOINs; a chat replayed before every gateway has re-entered its
    members would miss some of them. So each gateway sends a new owner all its
    JOINs, then a SYNC, then everything else; and the owner runs JOINs at once
    but holds every other op until each other slot of the cluster has sent
    its SYNC (or `rebuild_timeout` has passed: a slot that is down sends none).
    A fresh cluster goes through the same barrier, with nothing to re-enter.
    """

    def __init__(self, link: "ClusterLink", rebuild_timeout: float):
        self.link = link
        self.streams: dict[int, RoomStream] = {}
        # gateway -> room -> [first seq of the numbering, last seq accepted,
        # last seq run]: accepted ops wait in the room's queue until they run.
        self.applied: dict[tuple, dict[int, list]] = {}
        self.touched: dict[tuple, float] = {}               # (gateway, room) -> last op time
        self.remote_members: dict[tuple, set] = {}          # gateway -> {(room, member)}
        self.incarnations = 0
        self.rebuild_timeout = rebuild_timeout
        self.awaiting_sync = set(link.cmap.slots) - {link.slot}
        self.held: list | None = [] if self.awaiting_sync else None
        self._carried: dict = {}        # room -> its stream's place, from a predecessor

    def start(self, loop) -> None:
        if self.awaiting_sync:
            loop.call_later(self.rebuild_timeout, self.end_rebuild, True)

    # -- a rolling restart (link.py, "Successors") -------------------------------------

    def export_state(self) -> dict:
        """The numberings and stream positions; the rooms' members are the
        server layer's to carry (each restored room is attached again)."""
        return {
            "incarnations": self.incarnations,
            "streams": {rid: (st.incarnation, st.seq, st.packets, st.sent)
                        for rid, st in self.streams.items()},
            "applied": [(g[0], g[1], rid, *entry) for g, rooms in self.applied.items()
                        for rid, entry in rooms.items()],
            "touched": [(g[0], g[1], rid, t) for (g, rid), t in self.touched.items()],
        }

    def import_state(self, state: dict) -> None:
        self.incarnations = state["incarnations"]
        self._carried = dict(state["streams"])
        self.applied = {}
        for slot, epoch, rid, first, accepted, ran in state["applied"]:
            self.applied.setdefault((slot, epoch), {})[rid] = [first, accepted, ran]
        self.touched = {((slot, epoch), rid): t for slot, epoch, rid, t in state["touched"]}
        # The predecessor's rebuild (if any) is over: no barrier here.
        self.awaiting_sync = set()
        self.held = None

    # -- rooms and their streams ------------------------------------------------------

    def attach(self, room) -> RoomStream:
        """A room owned here was made: give it its stream (a room a
        predecessor handed over: the stream it had, where it was)."""
        carried = self._carried.pop(room.room_id, None)
        if carried is None:
            self.incarnations += 1
            stream = RoomStream(self.link, room.room_id, self.incarnations)
        else:
            stream = RoomStream(self.link, room.room_id, carried[0])
            stream.seq, stream.packets, stream.sent = carried[1:]
        self.streams[room.room_id] = stream
        room.link = stream
        return stream

    def restored_member(self, stream: RoomStream, member) -> None:
        """A member of another worker, in a room handed over as it was."""
        stream.remote += 1
        self.member_joined(stream.room_id, member)

    def detach(self, room) -> None:
        stream = self.streams.get(room.room_id)
        if stream is not None and stream is room.link:
            del self.streams[room.room_id]
            stream.detached = True

    def member_joined(self, room_id: int, member) -> None:
        self.remote_members.setdefault(member.gateway, set()).add((room_id, member.member_id))

    def member_left(self, room_id: int, member) -> None:
        members = self.remote_members.get(member.gateway)
        if members is not None:
            members.discard((room_id, member.member_id))
            if not members:
                del self.remote_members[member.gateway]

    # -- ops from gateways ---------------------------------------------------------------

    @staticmethod
    def check_ops(ops: list) -> list:
        """Every op of a message checked before any is acted on: a JOB's
        payload becomes its (name, args), or the whole message is a WireError."""
        checked = []
        for kind, room_id, seq, member_id, payload in ops:
            if kind & ~wire.FIRST == wire.JOB:
                payload = wire.decode_job(payload)
            checked.append((kind, room_id, seq, member_id, payload))
        return checked

    def on_ops(self, gateway: tuple, ops) -> None:
        for kind, room_id, seq, member_id, payload in ops:
            if kind == wire.PING:
                stream = self.streams.get(room_id)
                if stream is not None:
                    stream.ping()
            elif kind == wire.SYNC:
                self.synced(gateway[0])
            elif self.held is not None and (kind & ~wire.FIRST != wire.JOIN
                                            or gateway[0] not in self.awaiting_sync):
                self.held.append((gateway, kind, room_id, seq, member_id, payload))
            else:
                self.accept(gateway, kind, room_id, seq, member_id, payload)

    def synced(self, slot: str) -> None:
        """A slot sent its SYNC, or is down and never will."""
        if slot in self.awaiting_sync:
            self.awaiting_sync.discard(slot)
            if not self.awaiting_sync:
                self.end_rebuild(False)

    def end_rebuild(self, timed_out: bool) -> None:
        held, self.held = self.held, None
        if held is None:
            return
        if timed_out and self.awaiting_sync:
            log.warning("cluster: no SYNC from %s after %.1f s (down?): running their rooms "
                        "without them", ",".join(sorted(self.awaiting_sync)), self.rebuild_timeout)
        self.awaiting_sync.clear()
        for op in held:
            if self.link.known.get(op[0][0]) == op[0][1]:   # its gateway still that incarnation
                self.accept(*op)

    def accept(self, gateway, kind, room_id, seq, member_id, payload) -> None:
        stats = self.link.stats
        if not self.link.owns(room_id):
            stats["ops_misrouted"] += 1
            n = stats["ops_misrouted"]
            if n & (n - 1) == 0:                # the first, then at every power of two
                log.error("cluster: %s sent an op for room %d, which %s owns, not %s: "
                          "do all nodes have the same --cluster? (%d so far)", gateway[0],
                          room_id, self.link.placement.owner(room_id), self.link.slot, n)
            return
        rooms = self.applied.setdefault(gateway, {})
        entry = rooms.get(room_id)
        if kind & wire.FIRST:
            kind &= ~wire.FIRST
            if entry is None or not seq <= entry[1] < seq + SAME_NUMBERING:
                # A new numbering: what we had for it is over.
                entry = rooms[room_id] = [seq, seq - 1, seq - 1]
        elif entry is None:
            stats["ops_out_of_order"] += 1      # its numbering's first op is still to come
            return
        last = entry[1]
        if seq <= last:
            stats["ops_repeated"] += 1
            stream = self.streams.get(room_id)
            if stream is not None and entry[2] >= seq:
                # Its original ran: the ack may have been lost, so again. One
                # whose original still waits in the room's queue gets the
                # original's own ack, after its output.
                stream.ack(gateway[0], gateway[1], entry[2])
            return
        if seq != last + 1:
            stats["ops_out_of_order"] += 1      # resent from last + 1 later
            return
        entry[1] = seq
        self.touched[(gateway, room_id)] = time.monotonic()
        stats["ops_in"] += 1
        room = self.link.rooms.get_or_create(room_id)
        room.do_async(self.apply, room, kind, gateway, seq, member_id, payload, entry)

    def apply(self, room, kind, gateway, seq, member_id, payload, entry) -> None:
        """A job on the owner's room: one op, then its acknowledgement, so that
        the ack follows whatever the op made the room send. The ack is made
        whatever the op does (a job that raises is the room's to log): an op
        is run once, never resent for ever."""
        stream = room.link
        try:
            member = room.players.get(member_id)
            mine = member is not None and member.gateway == gateway
            if kind == wire.JOIN:
                if not mine:
                    self._enter(room, gateway, member_id, payload)
            elif kind == wire.LEAVE:
                if mine:
                    room.leave(member)
            elif kind == wire.JOB:
                name, args = payload
                if name not in room.REMOTE_JOBS:
                    self._refused(gateway, room, "asked room %d to run %r, which is not one "
                                  "of its remote jobs", room.room_id, name)
                elif mine:
                    getattr(room, name)(member, *args)
        finally:
            if entry[0] <= seq <= entry[1]:
                entry[2] = seq              # ran (unless its numbering is over since)
            stream.ack(gateway[0], gateway[1], seq)
            drop = getattr(room, "drop_if_unused", None)
            if drop is not None and room.link is stream and not room.players:
                drop()                      # an op that left nobody in it

    def _enter(self, room, gateway, member_id, card) -> None:
        try:
            member = room.member_from_card(card, gateway)
        except Exception as exc:
            member = None
            why = f"a card that does not parse ({exc!r})"
        else:
            why = f"a card for member {member.member_id}"
        if member is None or member.member_id != member_id:
            self._refused(gateway, room, "sent room %d a JOIN of member %d with %s",
                          room.room_id, member_id, why)
            room.link.refused(_Gone(member_id, gateway), "room_refused")   # its gateway takes it out
            return
        room.enter(member)

    def _refused(self, gateway, room, fmt, *args) -> None:
        stats = self.link.stats
        stats["ops_refused"] += 1
        if stats["ops_refused"] & (stats["ops_refused"] - 1) == 0:
            log.error("cluster: %s " + fmt + " (%d refused so far)", gateway[0], *args,
                      stats["ops_refused"])

    # -- gateways that are gone -----------------------------------------------------------

    def drop_gateway(self, slot: str, keep_epoch: int | None) -> None:
        """The worker at `slot` is gone (or came back as `keep_epoch`): its members leave."""
        for gateway in [g for g in self.remote_members if g[0] == slot and g[1] != keep_epoch]:
            for room_id, member_id in list(self.remote_members.get(gateway, ())):
                room = self.link.rooms.get(room_id)
                if room is not None:
                    room.do_async(_leave_gone, room, member_id, gateway)
            self.link.stats["gateways_dropped"] += 1
        for gateway in [g for g in self.applied if g[0] == slot and g[1] != keep_epoch]:
            del self.applied[gateway]
        for key in [k for k in self.touched if k[0][0] == slot and k[0][1] != keep_epoch]:
            del self.touched[key]

    def forget_idle_numberings(self, now: float) -> None:
        """Numberings of gateways with no member left in the room and no op for
        FORGET_AFTER: such a gateway's next op there starts anew (FIRST)."""
        busy = {(g, room) for g, members in self.remote_members.items() for room, _ in members}
        for key, touched in list(self.touched.items()):
            if now - touched > FORGET_AFTER and key not in busy:
                del self.touched[key]
                rooms = self.applied.get(key[0])
                if rooms is not None:
                    rooms.pop(key[1], None)
                    if not rooms:
                        del self.applied[key[0]]


class _Gone:
    """A member the room never took: enough of one for RoomStream.refused."""
    __slots__ = ("member_id", "gateway")

    def __init__(self, member_id, gateway):
        self.member_id = member_id
        self.gateway = gateway


def _leave_gone(room, member_id, gateway) -> None:
    member = room.players.get(member_id)
    if member is not None and member.gateway == gateway:
        room.leave(member)
