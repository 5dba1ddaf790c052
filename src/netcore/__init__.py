"""netcore: the transport layer of a game server, with Cython hot paths.

netcore knows frames, buffers, sessions and services; nothing of any game.
Subclass `PacketSession` and override its `on_*` callbacks; run sessions with
`ServerService` (accepting) or `ClientService` (dialing).
"""
import asyncio

from netcore import session as _session
from netcore._version import __version__
from netcore.errors import (
    Disconnect,
    DisconnectReason,
    MalformedPacketError,
    ProtocolError,
    UnknownPacketError,
)
from netcore.framing import HEADER, MAX_PACKET_SIZE, split_frames
from netcore.jobqueue import JobQueue, JobTimer
from netcore.loop import new_event_loop, resolve_loop_kind, run
from netcore.sendbuffer import SendBuffer, SendBufferPool, copy_frames, default_pool, make_packet
from netcore.service import ClientService, ServerService
from netcore.stats import LATENCY_BOUNDS, LatencyHistogram
from netcore.session import send_to_all


# The Cython cores cannot inherit from a Python class; these add the
# BufferedProtocol base that stdlib transports check with isinstance to pick
# their zero-copy get_buffer/buffer_updated read path.
class Session(_session.Session, asyncio.BufferedProtocol):
    __slots__ = ()


class PacketSession(_session.PacketSession, asyncio.BufferedProtocol):
    __slots__ = ()


__all__ = [
    "ClientService", "Disconnect", "DisconnectReason", "HEADER", "JobQueue", "JobTimer",
    "LATENCY_BOUNDS", "LatencyHistogram", "MAX_PACKET_SIZE",
    "MalformedPacketError", "PacketSession", "ProtocolError", "SendBuffer",
    "SendBufferPool", "ServerService", "Session", "UnknownPacketError",
    "copy_frames", "default_pool", "make_packet", "new_event_loop", "resolve_loop_kind", "run",
    "send_to_all", "split_frames", "__version__",
]
