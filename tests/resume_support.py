"""A resumable test client (docs/protocol.md, "Resuming a session") and the
moves of a resume: cut a connection with an RST, come back with C_RESUME."""
import asyncio

from netcore_packets import Protocol_pb2 as pb

from game_support import MESSAGE_BY_ID, GameClient, reset  # noqa: F401  (for the tests)


class ResumeClient(GameClient):
    """A client that counts what it receives after S_ENTER_GAME (S_RESUME
    not counted), as a resuming client must; `received` carries over."""

    def __init__(self, received=None):
        super().__init__()
        self.counting = received is not None
        self.received = received or 0

    def on_recv_packet(self, pkt_id, payload):
        name = MESSAGE_BY_ID[pkt_id].__name__
        if self.counting and name != "S_RESUME":
            self.received += 1
        super().on_recv_packet(pkt_id, payload)
        if name == "S_ENTER_GAME":
            self.counting = True

    async def enter_resumable(self, room=0):
        assert (await self.login()).success
        self.send_pkt(pb.C_ENTER_GAME(playerIndex=0, roomId=room, resumable=True))
        entered = await self.expect("S_ENTER_GAME")
        assert entered.success
        self.player_id = entered.playerId
        return entered


async def dial(port, factory=ResumeClient):
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(factory, "127.0.0.1", port)
    return client


async def resume(port, token, received):
    """A new connection whose first packet is C_RESUME: (client, S_RESUME)."""
    client = await dial(port, lambda: ResumeClient(received))
    client.send_pkt(pb.C_RESUME(token=token, received=received))
    return client, await client.expect("S_RESUME")


async def log_shows(server, text, timeout=10.0, count=1):
    """Wait until the server's log has `text` (a line it writes when it
    happens, through its log writer) `count` times."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.log_text().count(text) < count:
        assert loop.time() < deadline, f"{text!r} not in the server's log:\n{server.log_text()}"
        await asyncio.sleep(0.02)
