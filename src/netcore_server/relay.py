"""Relaying a resume the connection cannot be handed over for.

A C_RESUME whose token names a worker this one cannot pass the connection
to (netcore_server.handover passes TCP descriptors within one machine) is
relayed instead: this worker opens a TCP connection to the game port of
the holder's machine, sends the client's C_RESUME as that connection's
first packet, and from then on forwards packets both ways, whole, in
order. Where it lands there, the machine's own handover takes it to the
holder, which resumes it as its own. So a resume works wherever the client
lands:

- a WebSocket connection on another worker of the same machine (its
  framing state is picows's, in this process): relayed to this machine's
  game port;
- any connection on another machine of the deployment (a descriptor does
  not cross machines): relayed to the address that machine's workers say
  in their control messages (--advertise-host, netcore_cluster.link).

The cost: one hop more for that client, for as long as its connection
lasts (each packet framed again here, in Python: a relayed client is the
exception, not the load). The holder sees this worker's address as the
peer: put the deployment's machines in --exempt-networks so that no
per-address limit counts the resumes they relay. Limits on what the client
sends (its packet rate, sizes) apply here as for any client, and again at
the holder.
"""
from __future__ import annotations

import asyncio
import logging

import netcore
from netcore import DisconnectReason, make_packet

from netcore_server.session import State

log = logging.getLogger("netcore_server.relay")

CONNECT_TIMEOUT = 5.0
UPSTREAM_MAX_PACKET = 65535     # what the holder sends may be anything a uint16 size allows


class Upstream(netcore.PacketSession):
    """The connection to the holder's machine for one relayed client."""

    def __init__(self, client):
        self.client = client

    def on_recv_packet(self, pkt_id, payload):
        client = self.client
        if client is not None and client.connected:
            client.send(make_packet(pkt_id, payload))

    def on_disconnected(self, reason):
        client, self.client = self.client, None
        if client is not None and client.connected:
            # The holder ended it (or its machine is gone): the client's
            # connection ends too, and it may resume again.
            client.disconnect(DisconnectReason.CLOSED, f"the relayed connection ended ({reason})")


async def relay(session, address: tuple[str, int], slot: str, token: str, received: int) -> bool:
    """Relay `session`'s resume to the machine at `address` (the holder is
    `slot`): True once the upstream connection is open and has the C_RESUME
    (its answer, S_RESUME, comes back through it); else S_RESUME{success: false}."""
    server = session.server
    session.state = State.RESUMING
    loop = asyncio.get_running_loop()
    host, port = address
    try:
        _, upstream = await asyncio.wait_for(
            loop.create_connection(lambda: Upstream(session), host, port), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        why = "timed out" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or str(exc))
        session.resume_refused("not_resumable", "resume refused: the session is held by worker "
                               "%s, whose machine (%s:%d) could not be reached: %s", slot, host,
                               port, why)
        return False
    if not session.connected:
        upstream.disconnect()               # the client went meanwhile
        return False
    upstream.set_limits(max_packet_size=UPSTREAM_MAX_PACKET, packet_rate=0)
    upstream.mark_logged_in()
    session.relay = upstream
    session.state = State.RELAYED
    session.mark_logged_in()
    protocol = server.protocol
    upstream.send(make_packet(protocol.packet_ids["C_RESUME"], protocol.messages.C_RESUME(
        token=token, received=received).SerializeToString()))
    server.relays += 1
    log.info("session %d: its resume is relayed to %s:%d, the machine of worker %s, which "
             "holds its session", session.session_id, host, port, slot)
    return True
