"""GameServer: the game's state (rooms, player ids, database) around a ServerService."""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
from dataclasses import dataclass

from netcore import ServerService
from netcore_packets.server_dispatch import ServerPacketDispatcher

from netcore_game import server_handlers
from netcore_game.db import Database
from netcore_game.metrics import MetricsServer
from netcore_game.room import Rooms
from netcore_game.session import GameSession

log = logging.getLogger("netcore_game.server")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7777
    db: str = "netcore.db"
    max_sessions: int = 20000
    max_chat_bytes: int = 512
    # Client packets are small; the largest legal one is a maximal chat.
    max_packet_size: int = 4096
    max_pending_bytes: int = 1 << 20
    # Per client, packets/s in bursts of up to packet_burst (rate 0: no limit):
    # a chat flood is cut after its burst, while players, and netcore-dummy at
    # its 1 chat/s, stay far below.
    packet_rate: float = 100.0
    packet_burst: int = 200
    # Packets handled per client read before the rest waits a loop iteration:
    # a flooding client gets its turn, not the whole loop. Players send a few.
    max_packets_per_read: int = 64
    login_timeout: float = 10.0             # seconds from connect to a login; 0 is none
    idle_timeout: float = 0.0               # seconds without a packet once logged in; 0 is none
    db_busy_timeout: float = 10.0           # seconds to wait for a lock another process holds
    room_announce_seconds: float = 0.0      # a room tick example; 0 is off
    flush_interval_ms: float = 0.0          # see netcore SendFlusher: pacing under load
    metrics_port: int = 0                   # Prometheus /metrics; 0 is off
    metrics_host: str = "127.0.0.1"
    loop: str | None = None
    log_level: str = "INFO"
    # Scale-out (netcore_cluster): worker processes on this machine, the NATS
    # servers that join them to each other and to other machines ("" with one
    # worker: no broker; "" with several: a private nats-server), this node's
    # name, and every node's worker count when there are several machines.
    workers: int = 1
    nats: str = ""
    node_id: str = ""
    cluster: str = ""
    cluster_prefix: str = "netcore"

    def validate(self) -> None:
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name.replace('_', ' ')} {getattr(self, name)} is not in 0..65535")
        if self.max_sessions < 1:
            raise ValueError("max sessions must be >= 1")
        if not 1 <= self.workers <= 1024:
            raise ValueError(f"workers {self.workers}: must be 1..1024")
        if self.max_packets_per_read < 0:
            raise ValueError("max packets per read must be >= 0")
        for name in ("packet_rate", "login_timeout", "idle_timeout", "db_busy_timeout"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name.replace('_', ' ')} must be a number >= 0, not {value}")
        if self.packet_rate > 0 and self.packet_burst < 1:
            raise ValueError("packet burst must be >= 1 when there is a packet rate")
        if self.max_chat_bytes < 1:
            raise ValueError("max chat length must be >= 1")
        if self.max_packet_size < self.max_chat_bytes + 16:
            raise ValueError(f"max packet size {self.max_packet_size} cannot carry a chat of "
                             f"{self.max_chat_bytes} bytes (needs {self.max_chat_bytes + 16})")


class GameServer:
    """The game around one ServerService. With `link` (a netcore_cluster
    ClusterLink) it is one worker of several: rooms owned elsewhere are reached
    through the link, and the port is shared with the other workers."""

    def __init__(self, config: ServerConfig, db: Database, link=None, player_id_base: int = 0):
        config.validate()
        self.config = config
        self.db = db
        self.link = link
        self.rooms = Rooms(config.room_announce_seconds, cluster=link)
        self.dispatcher = ServerPacketDispatcher(server_handlers)
        self.service = ServerService(
            lambda: GameSession(self), config.host, config.port,
            max_sessions=config.max_sessions, max_packet_size=config.max_packet_size,
            max_pending_bytes=config.max_pending_bytes,
            flush_interval_ms=config.flush_interval_ms,
            packet_rate=config.packet_rate, packet_burst=config.packet_burst,
            login_timeout=config.login_timeout, idle_timeout=config.idle_timeout,
            max_packets_per_read=config.max_packets_per_read, reuse_port=link is not None)
        self.metrics = None
        # In-game ids: unique in the whole cluster (each worker incarnation has
        # its own base) and never reused while it runs.
        self._player_ids = itertools.count(player_id_base + 1)
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        return self.service.port

    def next_player_id(self) -> int:
        return next(self._player_ids)

    def spawn(self, coro) -> asyncio.Task:
        """Run a coroutine for a session (a login); cancelled on shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> "GameServer":
        await self.db.open()
        if self.link is not None:
            await self.link.start(self.rooms)
        await self.service.start()
        if self.config.metrics_port:
            self.metrics = MetricsServer(self, self.config.metrics_host, self.config.metrics_port)
            self.metrics.start()
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host, self.metrics.port)
        return self

    async def quiesce(self) -> None:
        """Stop taking input and run what was accepted: every room's jobs, and
        (with a link) every op forwarded to other workers, acknowledged."""
        self.service.stop_accepting()
        self.service.pause_reading()
        if self.link is not None:
            await self.link.quiesce()
        await self.rooms.drain()        # every accepted packet's jobs run and queue their sends

    async def stop(self) -> None:
        """Stop accepting, deliver what is queued, close sessions, close the database."""
        await self.quiesce()
        if self.link is not None:
            await self.link.drain_incoming()    # what other owners streamed to our players
            await self.rooms.drain()
        await self.service.close()
        self.rooms.close()
        if self.link is not None:
            await self.link.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.close()
        if self.metrics is not None:
            self.metrics.stop()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()
