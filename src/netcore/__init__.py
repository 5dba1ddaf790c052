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
from netcore.jobqueue import JobQueue, JobTicker, JobTimer
from netcore.loop import new_event_loop, resolve_loop_kind, run
from netcore.sendbuffer import SendBuffer, SendBufferPool, copy_frames, default_pool, make_packet
from netcore.service import ClientService, ServerService
from netcore.stats import LATENCY_BOUNDS, LatencyHistogram
from netcore.session import send_to_all, send_to_all_coalesced


# The Cython cores cannot inherit from a Python class; these add the
# BufferedProtocol base that stdlib transports check with isinstance to pick
# their zero-copy get_buffer/buffer_updated read path.
class Session(_session.Session, asyncio.BufferedProtocol):
    """A connection: lifecycle callbacks, the send queue, raw bytes in.

    Subclass it (for the 4-byte-header protocol, PacketSession) and override
    the on_* callbacks; a service makes one per connection from its session
    factory. send() queues a SendBuffer, which leaves with the next flush
    (once per event-loop iteration for all sessions of a service);
    disconnect() closes the session, after what is queued unless `abort`.
    Every limit that ends a session (see DisconnectReason) ends that session
    only.
    """

    __slots__ = ()


class PacketSession(_session.PacketSession, asyncio.BufferedProtocol):
    """A Session speaking netcore's wire protocol: a 4-byte header (uint16
    total size, uint16 packet id, little-endian), then the payload.

    Override on_recv_packet(pkt_id, payload). A ProtocolError raised from it
    closes the session as a protocol error; any other exception is logged
    with its traceback and closes it as a handler error. Either way only
    this session is affected.
    """

    __slots__ = ()


__all__ = [
    "ClientService", "Disconnect", "DisconnectReason", "HEADER", "JobQueue", "JobTicker",
    "JobTimer", "LATENCY_BOUNDS", "LatencyHistogram", "MAX_PACKET_SIZE",
    "MalformedPacketError", "PacketSession", "ProtocolError", "SendBuffer",
    "SendBufferPool", "ServerService", "Session", "UnknownPacketError",
    "copy_frames", "default_pool", "make_packet", "new_event_loop", "resolve_loop_kind", "run",
    "send_to_all", "send_to_all_coalesced", "split_frames", "__version__",
]
