"""GameServer: the game's state (rooms, player ids, database) around a ServerService."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
from importlib import resources
import socket
import time
from dataclasses import dataclass

from netcore import HEADER, MAX_PACKET_SIZE, DisconnectReason, ServerService
from netcore import logs as netcore_logs
from netcore.addresses import DEFAULT_EXEMPT, parse_networks
from netcore.origins import DEFAULT_ORIGINS, OriginPolicy
from netcore.loop import LOOP_KINDS
from netcore import tcp
from netcore.service import TCP_TRANSPORTS
from netcore_packets.server_dispatch import ServerPacketDispatcher

from netcore_game import server_handlers
from netcore_game.db import GUEST_CHARACTERS, Database, check_db_setting
from netcore_game.logins import LoginGate
from netcore_game.metrics import MetricsServer
from netcore_game.player import PlayerIdAllocator
from netcore_game.refusals import Refusals
from netcore_game.replies import replies_for
from netcore_game.room import Rooms
from netcore_game.session import GameSession, State
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
    db_busy_timeout: float = setting(10.0, min=0)       # SQLite: seconds to wait for another
    #                                                     process's lock
    # PostgreSQL (db = "postgresql://..."): connections of each worker process,
    # and the bounds on every wait for the database (netcore_game.db_postgres).
    db_pool_size: int = setting(4, min=1, max=1000)
    db_connect_timeout: float = setting(5.0, min=0)     # seconds; also for a free connection
    db_statement_timeout: float = setting(5.0, min=0)   # seconds per statement
    room_announce_seconds: float = setting(0.0, min=0)  # a room tick example; 0 is off
    flush_interval_ms: float = setting(0.0, min=0)      # see netcore SendFlusher: pacing under load
    metrics_port: int = setting(0, min=0, max=65535)    # Prometheus /metrics; 0 is off
    metrics_host: str = "127.0.0.1"
    loop: str | None = setting(None, choices=LOOP_KINDS)    # None: uvloop when installed
    log_level: str = setting("INFO", choices=LOG_LEVELS, normalize=str.upper)
    # Per source address (an IPv4 address, an IPv6 /64). Clients from these
    # networks are not counted by any per-address limit: loopback, where
    # tests, benchmarks and a proxy on the same host connect from. "" is none.
    exempt_networks: str = DEFAULT_EXEMPT
    # A game cafe or a carrier NAT puts many honest players behind one
    # address: the per-address defaults are generous.
    max_sessions_per_address: int = setting(1000, min=0)        # 0 is no cap
    # TCP keepalive: a vanished peer is found after idle + 3 * interval
    # seconds (90 s); a silent but alive one stays (see idle_timeout).
    keepalive_idle: float = setting(60.0, min=0, max=32767)    # 0 is off
    keepalive_interval: float = setting(10.0, min=1, max=32767)
    # Whose transports carry the TCP connections (netcore.tcp.pxd): netcore's
    # own (accept4, a descriptor, no transport object of the loop's), the
    # event loop's, or auto: netcore's under uvloop on Linux, else the loop's.
    tcp_transport: str = setting("auto", choices=TCP_TRANSPORTS)
    # Listening sockets per address (SO_REUSEPORT group): with uvloop's own
    # transports libuv accepts one connection per socket per loop iteration,
    # so a login storm is accepted this many per iteration
    # (netcore.service.pxd). 0: 16 for uvloop's transports on Linux, else 1.
    listen_sockets: int = setting(0, min=0, max=64)
    max_pending_bytes_total: int = setting(256 << 20, min=0)    # all clients' unsent; 0 no bound
    # Named logins (scrypt on the database pool; see netcore_game.logins).
    max_logins_in_flight: int = setting(64, min=1)
    max_logins_in_flight_per_address: int = setting(8, min=1)
    max_failed_logins: int = setting(3, min=0)      # per connection, then closed; 0 no limit
    address_window: float = setting(600.0, min=0)   # seconds the two budgets below count over
    max_failed_logins_per_address: int = setting(100, min=0)    # 0 is no limit
    max_new_accounts_per_address: int = setting(50, min=0)      # 0 is no limit
    max_room_players: int = setting(5000, min=1)
    max_room_queue: int = setting(10000, min=1)     # jobs waiting in one room; a chat past it
    #                                                 is dropped
    peer_log_rate: float = setting(20.0, min=0)     # log lines/s about single clients; 0 none
    log_summary_seconds: float = setting(60.0, min=0)   # an INFO summary this often; 0 is off
    # S_LOGIN and S_ENTER_GAME success replies laid out by hand, not through
    # protobuf (netcore_game.replies): the same bytes, cheaper in a login
    # storm. false builds them through protobuf, to rule them out.
    fast_replies: bool = True
    # Scale-out (netcore_cluster): worker processes on this machine, the NATS
    # servers that join them to each other and to other machines ("" with one
    # worker: no broker; "" with several: a private nats-server), this node's
    # name, and every node's worker count when there are several machines.
    # WebSocket (netcore.websocket): browsers and web builds of game engines
    # speak the same packets in binary messages on this port, which also
    # serves the chat page at GET /. 0 is off.
    ws_port: int = setting(0, min=0, max=65535)
    # Pages of which origins may open a WebSocket (netcore.origins): the
    # server's own page and loopback ones by default; "*" is any.
    ws_origins: str = DEFAULT_ORIGINS
    # Largest WebSocket message a client may send (whole packets, or the
    # fragments of one message put together); a larger one closes it (1009).
    ws_max_message_bytes: int = setting(65536, min=HEADER + 1, max=16 << 20)
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
        for name in ("db_connect_timeout", "db_statement_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} {getattr(self, name)}: must be > 0 "
                                 f"seconds")
        check_db_setting(self.db)
        if self.address_window <= 0:
            raise ValueError(f"address-window {self.address_window}: must be > 0 seconds")
        if 0 < self.keepalive_idle < 1:
            raise ValueError(f"keepalive-idle {self.keepalive_idle}: must be 0 (off) or "
                             f"1..32767 s")
        if self.tcp_transport == "netcore" and not tcp.AVAILABLE:
            raise ValueError("tcp-transport netcore: needs Linux; auto or loop work everywhere")
        try:
            parse_networks(self.exempt_networks)
        except ValueError as exc:
            raise ValueError(f"exempt-networks {self.exempt_networks!r}: {exc}") from None
        try:
            OriginPolicy(self.ws_origins)
        except ValueError as exc:
            raise ValueError(f"ws-origins {self.ws_origins!r}: {exc}") from None
        if self.ws_max_message_bytes < self.max_packet_size:
            raise ValueError(f"ws-max-message-bytes {self.ws_max_message_bytes} cannot carry a "
                             f"packet of max-packet-size {self.max_packet_size}")
        if self.ws_port and self.ws_port == self.port:
            raise ValueError(f"ws-port {self.ws_port}: the game port is {self.port}; "
                             f"they must differ")


def chat_page() -> tuple[str, bytes]:
    """The chat page the WebSocket port serves at GET / (netcore_game/web/chat.html)."""
    return ("text/html; charset=utf-8",
            resources.files("netcore_game").joinpath("web/chat.html").read_bytes())


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

    def __init__(self, config: ServerConfig, db: Database, link=None, player_id_base: int = 0,
                 *, player_ids: PlayerIdAllocator | None = None):
        """player_ids: where in-game ids come from; by default from
        player_id_base + 1 on (a worker of several passes an allocator over
        an id space of its own)."""
        config.validate()
        self.config = config
        self.db = db
        self.link = link
        self.replies = replies_for(config.fast_replies, GUEST_CHARACTERS)
        self.rooms = Rooms(config.room_announce_seconds, cluster=link,
                           max_players=config.max_room_players, max_queue=config.max_room_queue,
                           replies=self.replies)
        self.player_ids = (PlayerIdAllocator(first=player_id_base + 1) if player_ids is None
                           else player_ids)
        self.logins = LoginGate(config, workers=max(1, db.workers))
        self.refusals = Refusals()
        self.logins_done = 0                # logins that succeeded, guests included
        self.dispatcher = ServerPacketDispatcher(server_handlers)
        self.service = ServerService(
            # A partial, not a lambda: no Python frame of ours per connection.
            functools.partial(GameSession, self), config.host, config.port,
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
            reuse_port=link is not None, listen_sockets=config.listen_sockets,
            tcp_transport=config.tcp_transport)
        self.ws = None
        if config.ws_port:
            from netcore.websocket import WebSocketListener
            self.ws = WebSocketListener(
                self.service, config.host, config.ws_port, origins=config.ws_origins,
                max_message_size=config.ws_max_message_bytes, pages={"/": chat_page()},
                reuse_port=link is not None, listen_sockets=config.listen_sockets)
        self.metrics = None
        self._tasks: set[asyncio.Task] = set()
        self._summary_task: asyncio.Task | None = None
        self._last_summary: dict | None = None

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def ws_port(self) -> int:
        """The WebSocket port it listens on; 0 when it has none."""
        return self.ws.port if self.ws is not None else 0

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
            if self.ws is not None:
                try:
                    await self.ws.start()
                except OSError as exc:
                    await self.service.close()
                    raise listen_error("websocket port", self.config.host, self.config.ws_port,
                                       exc) from None
        except BaseException:
            if self.metrics is not None:
                self.metrics.stop()
                self.metrics = None
            if self.link is not None:
                await self.link.close()
            await self.db.close()
            raise
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
        await self.service.drain_backlogs()     # packets read before the pause reach their rooms
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
