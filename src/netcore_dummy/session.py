"""DummySession: one simulated player. It logs in as a guest on connect,
enters its room with the guest's first character, then chats when told to.

S_CHAT is tallied in C by the DummySessionCore base (dummy/tally.pyx); the
login and enter replies come through the generated client dispatch to the
handlers in dummy/client_handlers.py, which call back into this class.
"""
import asyncio
import socket
import struct

from netcore_packets.Protocol_pb2 import C_CHAT, C_LOGIN, C_RESUME
from netcore_packets.client_dispatch import ClientPacketDispatcher, make_send_buffer

from netcore_dummy import client_handlers
from netcore_dummy.tally import DummySessionCore, format_chat, now_us


def reset(transport):
    """End a connection with an RST (a zero linger, then abort): what a
    network change or a crashed peer looks like to the server."""
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# The Cython core cannot inherit from a Python class; the BufferedProtocol base
# is what makes stdlib transports use its zero-copy get_buffer/buffer_updated.
class DummySession(DummySessionCore, asyncio.BufferedProtocol):
    """`ready` resolves to True once in game (`player_id` set), or to False
    with `error` saying why: refused, disconnected, or a bad packet."""

    dispatcher = ClientPacketDispatcher(client_handlers)

    def __init__(self, tally=None, index=0, rooms=1):
        super().__init__(tally, index, index % rooms)
        self.ready = asyncio.get_running_loop().create_future()
        self.player_id = None
        self.login_player_id = 0
        self.error = None
        self.seq = 0                    # chats sent so far: the next chat's seq
        self.untallied_chats = 0        # S_CHATs that reached Python (no Tally)
        self.field_packets = 0          # S_MOVE, S_SPAWN, S_DESPAWN: the chat walks nowhere
        self.resumable = False          # enter asking for a resume token (DummyConfig.resumable)
        self.resume_token = ""          # S_ENTER_GAME's (then each S_RESUME's)
        self.counted_from = 0           # packets_received when the count of packets began
        # A resume (--drop-every): the session it takes over, the token and
        # count it resumes with, and when S_RESUME came.
        self.resuming = None
        self.resume_count = 0
        self.resumed_at = 0.0
        # Called with this session when the server ends its connection while
        # in game (a rolling restart's worker handing over): the run resumes it.
        self.on_lost = None
        self.quiet = False              # about to be cut: the run sends it nothing more

    # -- netcore callbacks ---------------------------------------------------------

    def on_connected(self):
        if self.resuming is not None:   # a new connection's first packet: resume
            self.send_packet(C_RESUME(token=self.resume_token, received=self.resume_count))
        else:
            self.send_packet(C_LOGIN())     # empty: the server makes us a guest

    def on_recv_packet(self, pkt_id, payload):
        self.dispatcher.dispatch(self, pkt_id, payload)

    def on_disconnected(self, reason):
        lost, self.on_lost = self.on_lost, None
        if lost is not None and self.ready.done() and self.ready.result():
            lost(self)
        self.fail(f"disconnected ({reason})")

    # -- called by the handlers and the run ----------------------------------------

    def send_packet(self, pkt):
        self.send(make_send_buffer(pkt))

    @property
    def received(self):
        """Packets received since S_ENTER_GAME (a resume counts on)."""
        return self.packets_received - self.counted_from

    def cut(self):
        """Drop the connection with an RST, as a network change does."""
        self.on_lost = None             # our doing: the run resumes it itself
        reset(self.transport)

    def resume_after(self, old, token, count):
        """This connection resumes old's client: C_RESUME{token, count} first."""
        self.resuming = old
        self.resume_token = token
        self.resume_count = count
        self.resumable = True
        self.seq = old.seq

    def resumed(self, pkt):
        """S_RESUME: on success the client goes on here, its checks and count too."""
        old = self.resuming
        if old is None:
            self.fail("S_RESUME without a C_RESUME")
            return
        if not pkt.success:
            self.fail("resume refused")
            return
        self.resumed_at = asyncio.get_running_loop().time()
        self.replay_before_us = now_us()
        self.take_over(old)
        self.seq = old.seq
        self.resume_token = pkt.resumeToken
        # S_RESUME itself is not counted; what follows goes on from the count.
        self.counted_from = self.packets_received - self.resume_count
        self.login_player_id = old.login_player_id
        self.entered(old.player_id)

    def entered(self, player_id):
        self.player_id = player_id
        if not self.ready.done():
            self.ready.set_result(True)

    def fail(self, error):
        """Give up on getting in game (no effect once in game)."""
        if self.ready.done():
            return
        self.error = error
        self.ready.set_result(False)
        if self.connected:
            self.disconnect()

    def chat(self, sent_us, size):
        """Send the next chat, stamped sent_us (Tally.stamp())."""
        self.send_packet(C_CHAT(msg=format_chat(self.index, self.seq, sent_us, size)))
        self.seq += 1
