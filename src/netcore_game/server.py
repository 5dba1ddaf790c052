"""GameServer: the game's state (rooms, player ids, database) around a ServerService."""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from dataclasses import dataclass

from netcore import HEADER, MAX_PACKET_SIZE, ServerService
from netcore.loop import LOOP_KINDS
from netcore_packets.server_dispatch import ServerPacketDispatcher

from netcore_game import server_handlers
from netcore_game.db import Database
from netcore_game.metrics import MetricsServer
from netcore_game.room import Rooms
from netcore_game.session import GameSession
from netcore_game.settings import ConfigError, checked, setting

log = logging.getLogger("netcore_game.server")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# Each field is a setting of netcore-server (a flag, a key of its TOML file and
# a NETCORE_<NAME> variable); setting() holds the checks of its value, applied
# wherever it comes from (settings.py). validate() adds how values combine.
def workers_from_text(text: str) -> int:
    """`--workers auto`: one per core."""
    return (os.cpu_count() or 1) if text.strip().lower() == "auto" else int(text)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = setting(7777, min=0, max=65535)
    db: str = "netcore.db"
    max_sessions: int = setting(20000, min=1)
    max_chat_bytes: int = setting(512, min=1)
    # Client packets are small; the largest legal one is a maximal chat.
    max_packet_size: int = setting(4096, min=HEADER + 1, max=MAX_PACKET_SIZE)
    max_pending_bytes: int = setting(1 << 20, min=1)
    # Per client, packets/s in bursts of up to packet_burst (rate 0: no limit):
    # a chat flood is cut after its burst, while players, and netcore-dummy at
    # its 1 chat/s, stay far below.
    packet_rate: float = setting(100.0, min=0)
    packet_burst: int = setting(200, min=0)
    # Packets handled per client read before the rest waits a loop iteration:
    # a flooding client gets its turn, not the whole loop. Players send a few.
    max_packets_per_read: int = setting(64, min=0)
    login_timeout: float = setting(10.0, min=0)         # seconds from connect to a login; 0 is none
    idle_timeout: float = setting(0.0, min=0)           # seconds without a packet once logged in
    db_busy_timeout: float = setting(10.0, min=0)       # seconds to wait for another process's lock
    room_announce_seconds: float = setting(0.0, min=0)  # a room tick example; 0 is off
    flush_interval_ms: float = setting(0.0, min=0)      # see netcore SendFlusher: pacing under load
    metrics_port: int = setting(0, min=0, max=65535)    # Prometheus /metrics; 0 is off
    metrics_host: str = "127.0.0.1"
    loop: str | None = setting(None, choices=LOOP_KINDS)    # None: uvloop when installed
    log_level: str = setting("INFO", choices=LOG_LEVELS, normalize=str.upper)
    # Scale-out (netcore_cluster): worker processes on this machine, the NATS
    # servers that join them to each other and to other machines ("" with one
    # worker: no broker; "" with several: a private nats-server), this node's
    # name, and every node's worker count when there are several machines.
    workers: int = setting(1, min=1, max=1024, parse=workers_from_text)
    nats: str = ""
    node_id: str = ""
    cluster: str = ""
    cluster_prefix: str = "netcore"

    def validate(self) -> None:
        """Every value within its field's checks (ValueError naming it), and
        the values fit together."""
        try:
            checked(self)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.packet_rate > 0 and self.packet_burst < 1:
            raise ValueError(f"packet-burst {self.packet_burst}: must be >= 1 when there is a "
                             f"packet rate")
        if self.max_packet_size < self.max_chat_bytes + 16:
            raise ValueError(f"max-packet-size {self.max_packet_size} cannot carry a chat of "
                             f"max-chat-bytes {self.max_chat_bytes} (needs "
                             f"{self.max_chat_bytes + 16})")


class StartupError(Exception):
    """The server could not start; the message says what failed, in one line."""


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(what: str, host: str, port: int, exc: OSError) -> StartupError:
    """`cannot listen on 127.0.0.1:7777 (game port): address already in use`."""
    if isinstance(exc, socket.gaierror):
        why = f"host {host!r} does not resolve ({exc.strerror or exc})"
    elif exc.errno:
        why = os.strerror(exc.errno)
    else:
        why = str(exc)
    return StartupError(f"cannot listen on {host_port(host, port)} ({what}): "
                        f"{why[:1].lower()}{why[1:]}")


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
        """Open the database, then listen: the metrics port first, so that a
        server whose metrics cannot be served never accepts a player. Each
        failure is a StartupError (or DatabaseError) saying what failed, with
        whatever was started already stopped again."""
        await self.db.open()
        try:
            if self.link is not None:
                await self.link.start(self.rooms)
            if self.config.metrics_port:
                self.metrics = MetricsServer(self, self.config.metrics_host,
                                             self.config.metrics_port)
                try:
                    self.metrics.start()
                except OSError as exc:
                    raise listen_error("metrics port", self.config.metrics_host,
                                       self.config.metrics_port, exc) from None
                log.info("metrics on http://%s/metrics", host_port(self.config.metrics_host,
                                                                   self.metrics.port))
            try:
                await self.service.start()
            except OSError as exc:
                raise listen_error("game port", self.config.host, self.config.port,
                                   exc) from None
        except BaseException:
            if self.metrics is not None:
                self.metrics.stop()
                self.metrics = None
            if self.link is not None:
                await self.link.close()
            await self.db.close()
            raise
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
