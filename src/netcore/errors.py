"""Errors and disconnect reasons: the vocabulary sessions report failures in.

Pure Python on purpose: these cross the boundary to user code (handlers, logs,
`on_disconnected`) and are created only on the rare failure path.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class ProtocolError(Exception):
    """The peer broke the wire protocol; its session is closed, nobody else is touched."""


class UnknownPacketError(ProtocolError):
    """A packet id this side has no handler for (raised by a generated dispatch)."""

    def __init__(self, pkt_id: int) -> None:
        super().__init__(f"unknown packet id {pkt_id}")
        self.pkt_id = pkt_id


class MalformedPacketError(ProtocolError):
    """A payload that does not parse as its packet's message (a generated dispatch)."""

    def __init__(self, pkt_id: int, detail: str) -> None:
        super().__init__(f"malformed payload for packet id {pkt_id}: {detail}")
        self.pkt_id = pkt_id
        self.detail = detail


class DisconnectReason(enum.Enum):
    """Why a session ended. The value is the text used in logs and metrics.

    The peer's doing: PEER_CLOSED (it closed), CONNECTION_ERROR (the network
    failed, or keepalive found the peer gone), PROTOCOL_ERROR (a bad header,
    or a handler raised ProtocolError), HANDLER_ERROR (a handler raised
    anything else; logged with its traceback), SLOW_CONSUMER (it let more
    than max_pending_bytes go unread, or was among the largest queues when
    all sessions passed max_pending_bytes_total), RATE_LIMITED (more
    packets than packet_rate/packet_burst allow). The service's limits:
    SERVER_FULL (max_sessions), ADDRESS_FULL (max_sessions_per_address),
    LOGIN_TIMEOUT (no mark_logged_in() in time), IDLE_TIMEOUT (no packet for
    idle_timeout). This side's doing: CLOSED (disconnect()), SHUTDOWN (the
    service closed), LOST_PACKETS (packets for it were lost on their way
    between worker processes).
    """

    # Members are singletons, equal only to themselves: the identity hash,
    # in C, rather than Enum's hash of the name in Python. Every session's
    # end looks its reason up in sets and counters (session.pyx, service.pyx).
    __hash__ = object.__hash__

    PEER_CLOSED = "peer closed"
    CONNECTION_ERROR = "connection error"
    PROTOCOL_ERROR = "protocol error"
    HANDLER_ERROR = "handler error"
    SLOW_CONSUMER = "slow consumer"
    SERVER_FULL = "server full"
    ADDRESS_FULL = "address full"      # the per-source-address connection cap
    RATE_LIMITED = "rate limited"
    LOGIN_TIMEOUT = "login timeout"
    IDLE_TIMEOUT = "idle timeout"
    CLOSED = "closed locally"
    SHUTDOWN = "shutdown"
    # Packets on their way to this session were lost before the server could
    # queue them (a gap in a room's stream between worker processes): the
    # client must reconnect to see its room whole again.
    LOST_PACKETS = "lost packets"


@dataclass(frozen=True)
class Disconnect:
    """What `on_disconnected` receives: the kind of ending plus a human detail.

    str(reason) is "kind: detail" (or the kind alone), as the log writes it.
    """

    kind: DisconnectReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value
