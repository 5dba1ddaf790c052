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

from typing import TYPE_CHECKING

from netcore_cluster import wire

if TYPE_CHECKING:
    from netcore_cluster.link import ClusterLink


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

    def joined(self, member) -> None:
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append((wire.member_segment(wire.JOINED, member.member_id, epoch, slot), 0))
        self.remote += 1
        self.link.member_joined(self.room_id, member)
        self._mark()

    def left(self, member) -> None:
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append((wire.member_segment(wire.LEFT, member.member_id, epoch, slot), 0))
        self.remote -= 1
        self.link.member_left(self.room_id, member)
        self._mark()

    def ping(self) -> None:
        """A message even with nothing in it: its number shows any gap."""
        self.parts.append((b"", 0))
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
        head = wire.down_header(self.room_id, self.link.epoch, self.incarnation, self.seq,
                                self.sent)
        self.sent += frames
        return head + b"".join(body)
