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
                 "parts", "data", "data_bytes", "dirty", "detached")

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
        self._close_data()
        self.parts.append((wire.ack_segment(seq, epoch, slot), 0))
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
        self.applied: dict[tuple, dict[int, int]] = {}      # gateway -> room -> last seq run
        self.touched: dict[tuple, float] = {}               # (gateway, room) -> last op time
        self.remote_members: dict[tuple, set] = {}          # gateway -> {(room, member)}
        self.incarnations = 0
        self.rebuild_timeout = rebuild_timeout
        self.awaiting_sync = set(link.cmap.slots) - {link.slot}
        self.held: list | None = [] if self.awaiting_sync else None

    def start(self, loop) -> None:
        if self.awaiting_sync:
            loop.call_later(self.rebuild_timeout, self.end_rebuild, True)

    # -- rooms and their streams ------------------------------------------------------

    def attach(self, room) -> RoomStream:
        """A room owned here was made: give it its stream."""
        self.incarnations += 1
        stream = self.streams[room.room_id] = RoomStream(self.link, room.room_id,
                                                         self.incarnations)
        room.link = stream
        return stream

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
            log.error("cluster: %s sent an op for room %d, which %s owns, not %s: "
                      "do all nodes have the same --cluster?", gateway[0], room_id,
                      self.link.placement.owner(room_id), self.link.slot)
            return
        applied = self.applied.setdefault(gateway, {})
        last = applied.get(room_id, 0)
        if kind & wire.FIRST:
            kind &= ~wire.FIRST
            if not seq <= last < seq + SAME_NUMBERING:
                last = seq - 1      # a new numbering: what we had for it is over
        if seq <= last:
            stats["ops_repeated"] += 1
            stream = self.streams.get(room_id)
            if stream is not None:              # its ack may have been lost: again
                stream.ack(gateway[0], gateway[1], last)
            return
        if seq != last + 1:
            stats["ops_out_of_order"] += 1      # resent from last + 1 later
            return
        applied[room_id] = seq
        self.touched[(gateway, room_id)] = time.monotonic()
        stats["ops_in"] += 1
        room = self.link.rooms.get_or_create(room_id)
        room.do_async(self.apply, room, kind, gateway, seq, member_id, payload)

    def apply(self, room, kind, gateway, seq, member_id, payload) -> None:
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
                self.link.stats["ops_refused"] += 1
                log.error("cluster: %s asked room %d to run %r, which is not one of its "
                          "remote jobs", gateway[0], room.room_id, name)
            elif mine:
                getattr(room, name)(member, *args)
        stream.ack(gateway[0], gateway[1], seq)

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


def _leave_gone(room, member_id, gateway) -> None:
    member = room.players.get(member_id)
    if member is not None and member.gateway == gateway:
        room.leave(member)
