"""The owner's side of a room: what its JobQueue produces, batched for other workers.

A room owned here runs exactly as in one process; its RoomStream only adds
one message per event-loop iteration to `<prefix>.r.<room>` carrying, in the
order the room produced them, the packets it broadcast (already framed), the
members of other workers that joined or were removed, packets for one such
member, and the acknowledgements of the gateways' ops. Nothing is published
for a room with no member elsewhere, except the acknowledgements that a
gateway's last leave still waits for.
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
        self.parts: list = []           # encoded segments of the next message
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
        self.parts.append(wire.unicast_segment(member.member_id, buf.frames, bytes(buf)))
        self.packets += buf.frames
        self._mark()

    def joined(self, member) -> None:
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append(wire.member_segment(wire.JOINED, member.member_id, epoch, slot))
        self.remote += 1
        self.link.member_joined(self.room_id, member)
        self._mark()

    def left(self, member) -> None:
        slot, epoch = member.gateway
        self._close_data()
        self.parts.append(wire.member_segment(wire.LEFT, member.member_id, epoch, slot))
        self.remote -= 1
        self.link.member_left(self.room_id, member)
        self._mark()

    def ack(self, slot: str, epoch: int, seq: int) -> None:
        self._close_data()
        self.parts.append(wire.ack_segment(seq, epoch, slot))
        self._mark()

    # -- batching -----------------------------------------------------------------

    def _mark(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.link.stream_dirty(self)

    def _close_data(self) -> None:
        if self.data:
            frames = 0
            for buf in self.data:
                frames += buf.frames
            self.parts.append(wire.data_segment_head(frames, self.data_bytes))
            self.parts.append(b"".join(self.data))
            self.packets += frames
            self.data = []
            self.data_bytes = 0

    def take_message(self) -> bytes | None:
        """The next message, or None when nothing is waiting."""
        self.dirty = False
        self._close_data()
        if not self.parts:
            return None
        # packets_before counts what earlier messages carried, so a gateway
        # that misses a message knows how many packets it lost.
        self.seq += 1
        head = wire.down_header(self.room_id, self.link.epoch, self.incarnation, self.seq,
                                self.sent)
        self.sent = self.packets
        body = b"".join(self.parts)
        self.parts = []
        return head + body
