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

import random
import time
from collections import deque
from typing import TYPE_CHECKING

from netcore import DisconnectReason, copy_frames, send_to_all

from netcore_cluster import wire

if TYPE_CHECKING:
    from netcore_cluster.link import ClusterLink


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
            self.link.forward(self, wire.JOIN, mid, member.to_card())
        elif name == "leave":
            if self.members.pop(mid, None) is not None:
                self.confirmed.discard(mid)
                self._sessions = None
                self.link.forward(self, wire.LEAVE, mid, b"")
        elif isinstance(fn, _Job) and fn.room is self:
            if mid in self.members:
                self.link.forward(self, wire.JOB, mid, wire.encode_job(name, args))
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

    def removed(self, member_id: int) -> None:
        """The owner took the member out (refused it, kicked it)."""
        member = self.members.pop(member_id, None)
        self.confirmed.discard(member_id)
        self._sessions = None
        if member is not None:
            hook = getattr(member, "on_removed_from_room", None)
            if hook is not None:
                hook(self)

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
