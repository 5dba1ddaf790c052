"""GameServer: the game's state (rooms, player ids, database) around a ServerService."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from netcore import DisconnectReason, ServerService
from netcore import logs as netcore_logs
from netcore.addresses import DEFAULT_EXEMPT, parse_networks
from netcore_packets.server_dispatch import ServerPacketDispatcher

from netcore_game import server_handlers
from netcore_game.db import Database
from netcore_game.logins import LoginGate
from netcore_game.metrics import MetricsServer
from netcore_game.player import PlayerIdAllocator
from netcore_game.refusals import Refusals
from netcore_game.room import Rooms
from netcore_game.session import GameSession, State

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
    # Per source address (an IPv4 address, an IPv6 /64). Clients from these
    # networks are not counted by any per-address limit: loopback, where
    # tests, benchmarks and a proxy on the same host connect from. "" is none.
    exempt_networks: str = DEFAULT_EXEMPT
    # A game cafe or a carrier NAT puts many honest players behind one
    # address: the per-address defaults are generous.
    max_sessions_per_address: int = 1000    # 0 is no cap
    # TCP keepalive: a vanished peer is found after idle + 3 * interval
    # seconds (90 s); a silent but alive one stays (see idle_timeout).
    keepalive_idle: float = 60.0            # 0 is off
    keepalive_interval: float = 10.0
    max_pending_bytes_total: int = 256 << 20   # unsent bytes of all clients; 0 is no bound
    # Named logins (scrypt on the database pool; see netcore_game.logins).
    max_logins_in_flight: int = 64
    max_logins_in_flight_per_address: int = 8
    max_failed_logins: int = 3              # per connection, then it is closed; 0 is no limit
    address_window: float = 600.0           # seconds the two budgets below count over
    max_failed_logins_per_address: int = 100    # 0 is no limit
    max_new_accounts_per_address: int = 50      # 0 is no limit
    max_room_players: int = 5000
    max_room_queue: int = 10000             # jobs waiting in one room; a chat past it is dropped
    peer_log_rate: float = 20.0             # log lines/s about single clients; 0 is no limit
    log_summary_seconds: float = 60.0       # an INFO summary this often; 0 is off
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
        for name in ("max_sessions_per_address", "max_pending_bytes_total", "max_failed_logins",
                     "max_failed_logins_per_address", "max_new_accounts_per_address"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 0 (0: no limit)")
        for name in ("max_logins_in_flight", "max_logins_in_flight_per_address",
                     "max_room_players", "max_room_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 1")
        for name in ("peer_log_rate", "log_summary_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name.replace('_', ' ')} must be a number >= 0, not {value}")
        if not (self.address_window > 0 and math.isfinite(self.address_window)):
            raise ValueError(f"address window must be a number of seconds > 0, "
                             f"not {self.address_window}")
        if not (self.keepalive_idle == 0 or 1 <= self.keepalive_idle <= 32767):
            raise ValueError(f"keepalive idle must be 0 (off) or 1..32767 s, "
                             f"not {self.keepalive_idle}")
        if not 1 <= self.keepalive_interval <= 32767:
            raise ValueError(f"keepalive interval must be 1..32767 s, not {self.keepalive_interval}")
        try:
            parse_networks(self.exempt_networks)
        except ValueError as exc:
            raise ValueError(f"exempt networks: {exc}") from None


class GameServer:
    """The game around one ServerService. With `link` (a netcore_cluster
    ClusterLink) it is one worker of several: rooms owned elsewhere are reached
    through the link, and the port is shared with the other workers."""

    def __init__(self, config: ServerConfig, db: Database, link=None, player_id_base: int = 0,
                 *, player_ids: PlayerIdAllocator | None = None):
        """player_ids: where in-game ids come from; by default from
        player_id_base + 1 on (a worker of several passes an allocator over
        an id space of its own)."""
        config.validate()
        self.config = config
        self.db = db
        self.link = link
        self.rooms = Rooms(config.room_announce_seconds, cluster=link,
                           max_players=config.max_room_players, max_queue=config.max_room_queue)
        self.player_ids = (PlayerIdAllocator(first=player_id_base + 1) if player_ids is None
                           else player_ids)
        self.logins = LoginGate(config, workers=max(1, db.workers))
        self.refusals = Refusals()
        self.logins_done = 0                # logins that succeeded, guests included
        self.dispatcher = ServerPacketDispatcher(server_handlers)
        self.service = ServerService(
            lambda: GameSession(self), config.host, config.port,
            max_sessions=config.max_sessions, max_packet_size=config.max_packet_size,
            max_pending_bytes=config.max_pending_bytes,
            flush_interval_ms=config.flush_interval_ms,
            packet_rate=config.packet_rate, packet_burst=config.packet_burst,
            login_timeout=config.login_timeout, idle_timeout=config.idle_timeout,
            max_packets_per_read=config.max_packets_per_read,
            max_pending_bytes_total=config.max_pending_bytes_total,
            max_sessions_per_address=config.max_sessions_per_address,
            exempt_networks=config.exempt_networks,
            keepalive_idle=config.keepalive_idle, keepalive_interval=config.keepalive_interval,
            reuse_port=link is not None)
        self.metrics = None
        self._tasks: set[asyncio.Task] = set()
        self._summary_task: asyncio.Task | None = None
        self._last_summary: dict | None = None

    @property
    def port(self) -> int:
        return self.service.port

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
        if self.config.log_summary_seconds > 0:
            self.summary()                  # the baseline the first summary counts from
            self._summary_task = asyncio.get_running_loop().create_task(self._log_summaries())
        return self

    # -- the periodic summary -------------------------------------------------------------

    def _counters(self) -> dict:
        packets_in = packets_out = 0
        for pin, _, pout, _ in self.service.packet_stats.snapshot().values():
            packets_in += pin
            packets_out += pout
        refusals = dict(self.refusals.counts)
        for kind in (DisconnectReason.SERVER_FULL, DisconnectReason.ADDRESS_FULL):
            refusals["connect", kind.name.lower()] = self.service.disconnects.get(kind.value, 0)
        return {"time": time.monotonic(), "logins": self.logins_done, "in": packets_in,
                "out": packets_out, "refusals": refusals,
                "suppressed": netcore_logs.PEER_LINES.suppressed,
                "dropped": netcore_logs.dropped_records(),
                "shed": self.service.shed_sessions}

    def summary(self) -> str:
        """One line on what happened since the last call: INFO every
        log_summary_seconds. Rates are per second over that span."""
        now, last = self._counters(), self._last_summary
        self._last_summary = now
        if last is None:
            last = {**now, "time": now["time"] - 1e-9, "refusals": {}}
        span = max(now["time"] - last["time"], 1e-9)
        in_game = sum(1 for s in list(self.service.sessions.values())
                      if s.state is State.IN_GAME)
        refused = ", ".join(f"{what}/{why} {n - last['refusals'].get((what, why), 0)}"
                            for (what, why), n in sorted(now["refusals"].items())
                            if n - last["refusals"].get((what, why), 0))
        line = (f"{len(self.service)} sessions ({in_game} in game), {len(self.rooms)} rooms, "
                f"{(now['logins'] - last['logins']) / span:.1f} logins/s, packets/s in "
                f"{(now['in'] - last['in']) / span:.0f} out {(now['out'] - last['out']) / span:.0f}, "
                f"{self.service.pending_bytes} bytes unsent; refusals: {refused or 'none'}")
        extra = [f"{now[k] - last[k]} {text}" for k, text in (
            ("shed", "slow consumers cut off at the server-wide bound"),
            ("suppressed", "per-client log lines suppressed"),
            ("dropped", "log records dropped (the log writer fell behind)")) if now[k] - last[k]]
        return line + ("; " + ", ".join(extra) if extra else "")

    async def _log_summaries(self) -> None:
        while True:
            await asyncio.sleep(self.config.log_summary_seconds)
            log.info("summary: %s", self.summary())

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
        if self._summary_task is not None:
            self._summary_task.cancel()
            self._summary_task = None
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
