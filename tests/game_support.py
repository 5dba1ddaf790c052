"""A real netcore-server process and a small, independent test client."""
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS, make_send_buffer

from netcore import ClientService, PacketSession
from netcore_dummy.session import reset as reset_transport
from support import until_changed

MESSAGE_BY_ID = {pkt_id: getattr(pb, name) for name, pkt_id in PACKET_IDS.items()}


class ServerProcess:
    """`python -m netcore_game.cli` (what netcore-server runs) on a free port."""

    def __init__(self, tmp_path: Path, loop_kind: str, *args: str, preexec_fn=None, db=None,
                 env=None, module="netcore_game.cli"):
        """db: what --db says (default: game.db in tmp_path; a PostgreSQL URL works too);
        env: variables beside this process's (settings: NETCORE_<NAME>); module: the
        game's command (`python -m` it)."""
        self.log_path = tmp_path / "server.log"
        self.db = tmp_path / "game.db" if db is None else db
        self.args = [sys.executable, "-m", module, "--port", "0", "--db", str(self.db),
                     "--loop", loop_kind, *args]
        self.preexec_fn = preexec_fn        # run in the child before exec (limits, privileges)
        self.env = None if env is None else {**os.environ, **env}
        self.proc = None
        self.port = None
        self.banner = None

    def start(self, timeout=20.0):
        if sys.platform == "win32":
            pytest.skip("POSIX only: these tests stop the server with SIGTERM, which "
                        "Windows carries out as TerminateProcess, not as a signal")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     preexec_fn=self.preexec_fn, env=self.env)
        self.banner = self.proc.stdout.readline()     # blocks until it listens (or dies)
        if "listening on" not in self.banner:
            self.proc.wait(timeout)
            raise RuntimeError(f"server did not start: {self.banner!r}\n{self.log_text()}")
        self.port = int(self.banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.ws_port = None         # with --ws-port: the banner's "websocket ... on http://H:P/"
        if "websocket and chat page on http://" in self.banner:
            web = self.banner.split("websocket and chat page on http://")[1].split("/")[0]
            self.ws_port = int(web.rsplit(":", 1)[1])
        return self

    def log_text(self):
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Send sig unless the server has exited (None: send nothing), wait, return its exit code."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stdout.close()
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop(signal.SIGKILL)


class GameClient(PacketSession):
    """Parses every packet with the protobuf classes and lets tests await them."""

    def __init__(self):
        self.inbox = []           # (name, message) in arrival order
        self.chats = []           # (playerId, msg) from S_CHAT
        self.reason = None
        self._changed = asyncio.Event()

    def on_recv_packet(self, pkt_id, payload):
        cls = MESSAGE_BY_ID[pkt_id]
        msg = cls.FromString(payload)
        self.inbox.append((cls.__name__, msg))
        if cls is pb.S_CHAT:
            self.chats.append((msg.playerId, msg.msg))
        self._changed.set()

    def on_disconnected(self, reason):
        self.reason = reason
        self._changed.set()

    def send_pkt(self, pkt):
        self.send(make_send_buffer(pkt))

    async def until(self, predicate, timeout=10.0):
        await until_changed(self._changed, predicate, timeout)

    async def expect(self, name, timeout=10.0):
        """The next packet of this type (consumed from the inbox)."""
        def found():
            return any(n == name for n, _ in self.inbox) or self.reason is not None
        await self.until(found, timeout)
        for i, (n, msg) in enumerate(self.inbox):
            if n == name:
                del self.inbox[i]
                return msg
        raise AssertionError(f"disconnected ({self.reason}) while waiting for {name}")

    async def login(self, account="", password=""):
        self.send_pkt(pb.C_LOGIN(account=account, password=password))
        return await self.expect("S_LOGIN")

    async def enter(self, index=0, room=0):
        self.send_pkt(pb.C_ENTER_GAME(playerIndex=index, roomId=room))
        return await self.expect("S_ENTER_GAME")

    async def wait_chats(self, n, timeout=10.0):
        await self.until(lambda: len(self.chats) >= n or self.reason is not None, timeout)
        assert len(self.chats) >= n, f"{len(self.chats)} of {n} chats ({self.reason})"
        return self.chats[:n]


async def connect(port, count=1, transport="tcp"):
    """count GameClients; transport "ws" dials a --ws-port with the same packets."""
    service = ClientService(GameClient, port=port, count=count, transport=transport)
    sessions = await service.start()
    assert len(sessions) == count, service.failures
    return sessions


async def leave(*clients):
    """Close clients and wait until they are gone. Left open when a test's loop
    ends, they would keep a server's closing sessions lingering for an answer."""
    for c in clients:
        c.disconnect()
    for c in clients:
        await c.wait_closed()


async def in_game(port, count=1, room=0, transport="tcp"):
    """count clients, each logged in as a guest and entered into `room`."""
    clients = await connect(port, count, transport)
    for c in clients:
        assert (await c.login()).success
        entered = await c.enter(0, room)
        assert entered.success
        c.player_id = entered.playerId
    return clients


def reset(client):
    """Close with an RST: the server sees the client gone at once."""
    reset_transport(client.transport)


async def connect_from(port, host, factory=GameClient):
    """One client whose connection comes from `host` (loopback has many
    addresses: 127.0.0.2, 127.0.0.3, ...), as per-address limits see it."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(factory, "127.0.0.1", port, local_addr=(host, 0))
    return client
