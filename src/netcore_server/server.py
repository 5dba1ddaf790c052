"""GameServer: a game's state (rooms, player ids, accounts) around a ServerService.

One process's server, for any game (a Game, game.py): the sessions and their
login state machine, the login gate, player ids, the rooms (the game's Room
class), the WebSocket port with the game's pages, the metrics endpoint, and
the orderly stop. With a ClusterLink (`link`) it is one worker of several,
sharing the port with the others (workers.py starts them).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time

from netcore import DisconnectReason, ServerService
from netcore import logs as netcore_logs

from netcore_server.config import ServerConfig
from netcore_server.db import GUEST_CHARACTERS, Database
from netcore_server.game import Game
from netcore_server.listen import host_port, listen_error
from netcore_server.logins import LoginGate
from netcore_server.metrics import MetricsServer
from netcore_server.player import PlayerIdAllocator
from netcore_server.refusals import Refusals
from netcore_server.replies import replies_for
from netcore_server import restart
from netcore_server.handover import Handover
from netcore_server.resume import RESUME_PACKETS, Holds
from netcore_server.room import Rooms
from netcore_server.session import State

log = logging.getLogger("netcore_server.server")


class GameServer:
    """A game (`game`, or the class's own `game` attribute: a game's
    GameServer subclass names it once) around one ServerService. With `link`
    (a netcore_cluster ClusterLink) it is one worker of several: rooms owned
    elsewhere are reached through the link, and the port is shared with the
    other workers."""

    game: Game | None = None

    def __init__(self, config: ServerConfig, db: Database, link=None, player_id_base: int = 0,
                 *, player_ids: PlayerIdAllocator | None = None, game: Game | None = None):
        """db: where named logins are checked (Game.accounts made it from the
        config, or any Database). player_ids: where in-game ids come from; by
        default from player_id_base + 1 on (a worker of several passes an
        allocator over an id space of its own)."""
        game = game if game is not None else self.game
        if game is None:
            raise TypeError("GameServer needs a game: GameServer(config, db, game=...) or a "
                            "subclass with a `game` attribute")
        if not isinstance(config, game.config):
            raise TypeError(f"the {game.name} game's settings are its {game.config.__name__}, "
                            f"not a {type(config).__name__}")
        config.validate()
        self.game = game
        self.protocol = game.protocol
        self.config = config
        self.db = db
        self.link = link
        self.replies = replies_for(config.fast_replies, GUEST_CHARACTERS, game.protocol)
        self.player_ids = (PlayerIdAllocator(first=player_id_base + 1) if player_ids is None
                           else player_ids)
        self.refusals = Refusals(game.all_refusals())
        self.rooms = Rooms(game.room, cluster=link, max_players=config.max_room_players,
                           max_queue=config.max_room_queue, replies=self.replies, config=config,
                           room_for=game.room_for, player_class=game.player_class,
                           refusals=self.refusals, player_ids=self.player_ids)
        self.logins = LoginGate(config, workers=max(1, db.workers))
        # Resumable sessions: one process, a window, and a protocol with
        # C_RESUME, S_RESUME and C_LEAVE (netcore_server.resume).
        self.holds = None
        self.handover = None                # with workers: netcore_server.handover
        self.sibling_slots: frozenset[str] = frozenset()
        self.stopping = False
        self.restarting = False             # handing its players to a successor (restart.py)
        self.relays = 0                     # resumes relayed to the holder's machine (relay.py)
        if (config.resume_window > 0
                and all(n in game.protocol.packet_ids for n in RESUME_PACKETS)):
            if link is None:
                self.holds = Holds(config.resume_window, config.resume_buffer_bytes)
            else:
                self.holds = Holds(config.resume_window, config.resume_buffer_bytes,
                                   slots=link.cmap.slots, slot=link.slot)
                node = link.slot.rsplit("-", 1)[0]
                self.sibling_slots = frozenset(s for s in link.cmap.slots if s != link.slot
                                               and s.rsplit("-", 1)[0] == node)
                self.handover = Handover(self, link.slot)
        # S_RESUME{success: false}, for every C_RESUME this server cannot take.
        self.resume_refused = (game.protocol.make_send_buffer(game.protocol.messages.S_RESUME())
                               if "S_RESUME" in game.protocol.packet_ids else None)
        self.logins_done = 0                # logins that succeeded, guests included
        self.dispatcher = game.protocol.dispatcher(game.handlers)
        self.service = ServerService(
            # A partial, not a lambda: no Python frame of ours per connection.
            functools.partial(game.session_class, self), config.host, config.port,
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
            tcp_transport=config.tcp_transport, trusted_proxies=config.trusted_proxies,
            proxy_header_timeout=config.proxy_header_timeout)
        self.ws = None
        if config.ws_port:
            from netcore.websocket import WebSocketListener
            self.ws = WebSocketListener(
                self.service, config.host, config.ws_port, origins=config.ws_origins,
                max_message_size=config.ws_max_message_bytes,
                pages={path: page() for path, page in game.pages.items()},
                reuse_port=link is not None, listen_sockets=config.listen_sockets,
                handshake_timeout=config.ws_handshake_timeout,
                max_upgrades=config.ws_max_upgrades,
                max_upgrades_per_address=config.ws_max_upgrades_per_address,
                proxy_protocol=config.ws_proxy_protocol)
        self.metrics = None
        self._tasks: set[asyncio.Task] = set()
        self._summary_task: asyncio.Task | None = None
        self._last_summary: dict | None = None

    def relay_address(self, slot: str) -> tuple[str, int] | None:
        """Where a resume for the worker at `slot` is relayed (relay.py):
        this machine's game port for a worker of this machine, the address
        its machine says for another; None where there is none known."""
        if self.link is None:
            return None
        if slot in self.sibling_slots:
            host = self.config.host
            host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            return host, self.config.port or self.port
        return self.link.addresses.get(slot)

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

    async def start(self, successor: bool = False) -> "GameServer":
        """Open the database, then listen: the metrics port first, so that a
        server whose metrics cannot be served never accepts a player. Each
        failure is a StartupError (or DatabaseError) saying what failed, with
        whatever was started already stopped again. successor: a rolling
        restart's new worker (netcore_server.restart), which connects to the
        cluster and listens only once it has taken over (take_over)."""
        await self.db.open()
        try:
            if self.link is not None:
                await self.link.start(self.rooms, successor=successor)
            if not successor:
                await self._listen()
        except BaseException:
            await self._unstart()
            raise
        if self.config.log_summary_seconds > 0:
            self.summary()                  # the baseline the first summary counts from
            self._summary_task = asyncio.get_running_loop().create_task(self._log_summaries())
        return self

    async def take_over(self, path: str | None) -> None:
        """A successor: become its predecessor from the handover at `path`
        (or, with none, a new incarnation of the slot), then listen."""
        try:
            if path is not None:
                restart.take_over(self, path)
            else:
                self.link.begin()
            await self._listen()
        except BaseException:
            await self._unstart()
            raise

    async def hand_off(self, path: str, written=None) -> dict:
        """Hand every player and room to the successor (restart.py), then
        let go of everything without a word more to anyone. written(counts):
        called once the handover is in place."""
        counts = await restart.hand_off(self, path, written)
        if self._summary_task is not None:
            self._summary_task.cancel()
        self.stopping = True
        if self.holds is not None:
            self.holds.close()
        await self.link.abandon()
        await self._close_the_rest()
        return counts

    async def _unstart(self) -> None:
        if self.handover is not None:
            self.handover.close()
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.link is not None:
            await self.link.close()
        await self.db.close()

    async def _listen(self) -> None:
        """The metrics port, the game port, the resume channel, the WebSocket port."""
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
        if self.handover is not None:
            try:
                self.handover.start()   # where the machine's other workers hand resumes
            except OSError as exc:
                # Resumes still work for the connections that land here.
                log.warning("no resume channel for the other workers (%s): a resume "
                            "that lands on another worker is refused", exc)
                self.handover = None
        if self.ws is not None:
            try:
                await self.ws.start()
            except OSError as exc:
                await self.service.close()
                raise listen_error("websocket port", self.config.host, self.config.ws_port,
                                   exc) from None

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
        self.stopping = True                # a connection that ends now is not held
        if self.handover is not None:
            self.handover.close()
        await self.quiesce()
        if self.link is not None:
            await self.link.drain_incoming()    # what other owners streamed to our players
            await self.rooms.drain()
        await self.service.close()
        if self.holds is not None:
            self.holds.close()
        self.rooms.close()
        if self.link is not None:
            await self.link.close()
        await self._close_the_rest()

    async def _close_the_rest(self) -> None:
        """The logins in flight, the database, the metrics port."""
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
