"""Resumable sessions: a player whose connection drops stays in its room for
a while, and a new connection takes its place without missing a packet.

docs/protocol.md ("Resuming a session") is the client's side. Here:

- C_ENTER_GAME{resumable: true}: the room's S_ENTER_GAME carries a token
  (Holds.issue: 192 random bits, never logged), and from that answer on the
  session numbers and keeps what it is sent (netcore.Session.keep_sent: the
  sent log, at most `resume_buffer_bytes`).
- Its connection ends without C_LEAVE (the network's or the peer's doing,
  HOLD_REASONS): the session is held (Holds.hold):
  the player stays in its room, nobody sees anything, and packets to it are
  kept, not written, for `resume_window` seconds; past the window or the
  buffer the hold ends and the player leaves as it would have at once.
- C_RESUME{token, received} as a new connection's first packet: checked at
  once (the token known, the count possible, its packets still kept), then
  a job of the player's room (Room.resume_member) moves the player to the
  new session in the room's one order: S_RESUME{success, playerId, a new
  token}, the kept packets after `received`, then the live stream. An old
  connection still open is closed first ("resumed elsewhere").
- Anything else gets S_RESUME{success: false} and the connection goes on as
  a new one. An unknown token is a failed login for the address's budget
  (the login gate's): it costs a dictionary lookup, no hashing, no memory.

Where it lives: everything of a hold is the holding process's (its session
object, its sent log, its room's membership). Under --workers a token names
its worker, and a C_RESUME read by another worker of the machine has its
TCP connection handed over to it (netcore_server.handover); a WebSocket, or
a worker of another machine, is S_RESUME{success: false}.
"""
from __future__ import annotations

import asyncio
import secrets

from netcore import DisconnectReason, SendBuffer, make_packet

RESUME_PACKETS = ("C_RESUME", "S_RESUME", "C_LEAVE")   # a game's protocol has all three
# The ends a hold follows: the network's or the peer's (a reset, a close, a
# keepalive that found it gone, a silence past --idle-timeout). A client the
# server cut off for what it did (a protocol error, a flood, a slow reader)
# leaves at once, as does one of a server that is stopping.
HOLD_REASONS = frozenset({DisconnectReason.PEER_CLOSED, DisconnectReason.CONNECTION_ERROR,
                          DisconnectReason.IDLE_TIMEOUT})
TOKEN_BYTES = 24                # 192 random bits, 32 characters of URL-safe base64
MAX_TOKEN_CHARS = 64            # a longer C_RESUME token is not looked up
_TOKEN_TAG = 0x2A               # S_ENTER_GAME field 5 (resumeToken), length-delimited


def with_token(reply: SendBuffer, token: str) -> SendBuffer:
    """The framed S_ENTER_GAME `reply` with resumeToken = token appended (a
    protobuf field may come last whatever came before: any game's reply)."""
    data = bytes(memoryview(reply))
    raw = token.encode()
    payload = data[4:] + bytes((_TOKEN_TAG, len(raw))) + raw     # a token is < 128 bytes
    return make_packet(int.from_bytes(data[2:4], "little"), payload)


class ResumeCounts:
    """What the metrics show of resumption."""

    __slots__ = ("held", "resumed", "replayed", "expired", "overflowed")

    def __init__(self):
        self.held = 0           # holds begun
        self.resumed = 0        # resumes that took over a hold (or a live old connection)
        self.replayed = 0       # packets sent again by them
        self.expired = 0        # holds that ran past the window
        self.overflowed = 0     # holds that ran past the buffer
        # S_RESUME{success: false} are refusals ("resume", by reason: Refusals).


class Holds:
    """The resumable sessions of one server by token, and their holds."""

    def __init__(self, window: float, buffer_bytes: int, slots: list[str] | None = None,
                 slot: str | None = None):
        """slots, slot: with several workers, every worker of the cluster
        and this one's: a token begins with its worker's index in `slots`,
        so that a worker that reads a C_RESUME knows where the hold is."""
        self.window = window
        self.buffer_bytes = buffer_bytes
        self.slots = list(slots or ())
        self.prefix = f"{self.slots.index(slot)}." if slot is not None else ""
        self._by_token: dict[str, object] = {}
        self.counts = ResumeCounts()

    def __len__(self) -> int:
        return len(self._by_token)

    @property
    def holding(self) -> int:
        """Sessions held now (connection gone, player still in its room)."""
        return sum(1 for s in self._by_token.values() if s.held)

    def issue(self, session) -> str:
        """A new token for `session` (its last one, if any, is spent)."""
        self.spend(session)
        token = self.prefix + secrets.token_urlsafe(TOKEN_BYTES)
        session.resume_token = token
        self._by_token[token] = session
        return token

    def sessions(self) -> list:
        """Every resumable session with a token (held or connected)."""
        return list(self._by_token.values())

    def adopt(self, session, token: str) -> None:
        """A hold a predecessor handed over (netcore_server.restart): held
        under its token, for a whole window from now."""
        session.resume_token = token
        self._by_token[token] = session
        self.hold(session)

    def holder_of(self, token: str) -> str | None:
        """The slot of the other worker a token was issued by; None for this
        worker's own (and for anything that names no worker: not known)."""
        head, dot, _ = token.partition(".")
        if not self.prefix or not dot or not head.isdigit() or len(head) > 6:
            return None
        index = int(head)
        if index >= len(self.slots) or head + dot == self.prefix:
            return None
        return self.slots[index]

    def find(self, token: str):
        """The session a token was issued to, while it is not spent."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        return self._by_token.get(token)

    def spend(self, session) -> None:
        token, session.resume_token = session.resume_token, None
        if token is not None and self._by_token.get(token) is session:
            del self._by_token[token]
        timer, session.hold_timer = session.hold_timer, None
        if timer is not None:
            timer.cancel()

    def hold(self, session) -> None:
        """`session`'s connection is gone: keep its player for the window."""
        session.hold()
        self.counts.held += 1
        session.hold_timer = asyncio.get_running_loop().call_later(
            self.window, self._expired, session)

    def _expired(self, session) -> None:
        session.hold_timer = None
        self.counts.expired += 1
        session.end_hold("the resume window ran out")

    def overflowed(self, session) -> None:
        self.counts.overflowed += 1
        session.end_hold(f"more than {self.buffer_bytes} bytes were sent to it meanwhile")

    def close(self) -> None:
        """Shutdown: every hold ends (the rooms are going too)."""
        for session in list(self._by_token.values()):
            self.spend(session)
            session.stop_keeping()
