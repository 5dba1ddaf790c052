"""One dummy run: ramp the connections up, get every client in game, chat at
a steady rate, drain, report.

Phases:
  connect  clients dial at `connect_rate` per second (a ramp, not a stampede
           of SYNs into the server's backlog); each logs in as a guest and
           enters room `index % rooms`. A client not in game within
           `enter_timeout` is failed.
  chat     every in-game client sends `rate` chats per second for `duration`
           seconds, the sends of all clients interleaved evenly over time by
           one pacer (not a timer per client).
  drain    wait until every expected delivery arrived, or `drain_timeout`.
A chat sent by a client of room r is expected once at every in-game client of
room r, the sender included.

The field scenario (`scenario="field"`, netcore-dummy --scenario field) walks
instead of chatting: in the walk phase every client sends C_MOVE at
`move_rate` a second to a random point within `max_step` (and the field),
one move in flight each (a client whose last move is not answered yet skips
its turn, counted late); each field packet it reads is checked in C
(walk.pxd) and any violation fails the run; drain waits for every move's
answer.

Shards: one process's reads top out near 30 M deliveries/s (one core), so a
load bigger than that is split over K processes, `shard` I of `shards` K
running clients I, I+K, I+2K, ... of the same `clients` and `rooms`. Each
shard expects every chat of every client of its rooms (its own and the other
shards'), so the sum of the shards' `lost` is the run's. For the chats to
start after every shard's clients are in game, a caller passes `before_chat`
(netcore-dummy --go-on-stdin: wait for a line), and `epoch_us`, one for all
shards, so that latency is measured across processes.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
from dataclasses import asdict, dataclass, field

from netcore import ClientService
from netcore.loop import wait_for

import random

from netcore_dummy.session import DummySession
from netcore_dummy.tally import UNKNOWN_PLAYER_ID, Tally, now_us
from netcore_dummy.walk import FieldTally, Walker

MAX_CHAT_SIZE = 512             # the server's default chat limit, in UTF-8 bytes
# Every client is a connection from this host to one server address, told
# apart by its source port: there cannot be more.
MAX_CLIENTS = 65535
# The tally numbers each client's chats with a uint32 (tally.pxd).
MAX_CHATS_PER_CLIENT = 2**32 - 2
PACER_TICK = 0.001              # the pacers fire at most once per millisecond
CLOSE_TIMEOUT = 5.0
MAX_ERRORS_KEPT = 5             # failure reasons quoted in the report
TRANSPORTS = ("tcp", "ws")      # ws: the server's --ws-port, binary WebSocket messages
SCENARIOS = ("chat", "field")


class DummyError(Exception):
    """The run could not start (e.g. nothing listens); a one-line message."""


@dataclass
class DummyConfig:
    host: str = "127.0.0.1"
    port: int = 7777
    clients: int = 100
    rate: float = 1.0               # chats per client per second
    duration: float = 10.0          # seconds of chatting
    rooms: int = 1
    size: int = 32                  # chat msg length in ASCII characters
    connect_rate: float = 1000.0    # new connections per second
    enter_timeout: float = 10.0     # connect + login + enter, per client
    drain_timeout: float = 5.0
    hold: bool = False              # stay in game idle for `duration`, no chat
    resumable: bool = False         # enter with C_ENTER_GAME{resumable: true} (the cost of it)
    drop_every: float = 0.0         # each client cuts its connection (RST) and resumes,
                                    # every this many seconds on average; 0: never
    rolling_restart: int = 0        # SIGHUP this pid (a netcore-server --workers N) halfway
                                    # through the chat: its workers restart, ours resume
    transport: str = "tcp"          # or "ws": the same packets in WebSocket messages
    shard: int = 0                  # this process runs clients shard, shard + shards, ...
    shards: int = 1
    epoch_us: int | None = None     # send stamps count from here (now_us(); default: now)
    scenario: str = "chat"          # or "field": walk (move_rate) instead of chatting
    move_rate: float = 10.0         # moves per client per second (field)
    field_size: float = 1000.0      # the server's --field-size, --max-step, --view-radius
    max_step: float = 10.0
    view_radius: float = 50.0

    @property
    def local_clients(self) -> int:
        """How many of the clients this shard runs."""
        return len(range(self.shard, self.clients, self.shards))

    def room_members(self, room: int) -> int:
        """Clients of every shard in room `room`."""
        return len(range(room, self.clients, self.rooms))

    @property
    def chats_per_client(self) -> int:
        return max(1, round(self.rate * self.duration))

    def validate(self) -> None:
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"--clients must be between 1 and {MAX_CLIENTS:,} (each client "
                             f"is a connection from one source port to one server address)")
        if not 1 <= self.rooms <= self.clients:
            raise ValueError("--rooms must be between 1 and --clients")
        if not (1 <= self.shards <= self.clients and 0 <= self.shard < self.shards):
            raise ValueError(f"--shard must be I/K with 0 <= I < K <= --clients, "
                             f"not {self.shard}/{self.shards}")
        if not 1 <= self.port <= 65535:
            raise ValueError("--port must be between 1 and 65535")
        for flag, value in (("--rate", self.rate), ("--duration", self.duration),
                            ("--connect-rate", self.connect_rate),
                            ("--enter-timeout", self.enter_timeout)):
            if not (value > 0 and math.isfinite(value)):       # NaN fails both
                raise ValueError(f"{flag} must be a finite number > 0, not {value}")
        if not (self.drain_timeout >= 0 and math.isfinite(self.drain_timeout)):
            raise ValueError(f"--drain-timeout must be a finite number >= 0, "
                             f"not {self.drain_timeout}")
        if self.rate * self.duration > MAX_CHATS_PER_CLIENT:
            raise ValueError(f"--rate x --duration is more than {MAX_CHATS_PER_CLIENT:,} "
                             f"chats per client (the tally numbers them with 32 bits)")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"--scenario must be one of {', '.join(SCENARIOS)}, "
                             f"not {self.scenario!r}")
        for flag, value in (("--move-rate", self.move_rate), ("--field-size", self.field_size),
                            ("--max-step", self.max_step), ("--view-radius", self.view_radius)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{flag} must be a finite number > 0, not {value}")
        if not (self.drop_every >= 0 and math.isfinite(self.drop_every)):
            raise ValueError(f"--drop-every must be a finite number >= 0, not {self.drop_every}")
        for flag, value in (("--drop-every", self.drop_every),
                            ("--rolling-restart", self.rolling_restart)):
            if value and not (self.resumable and self.transport == "tcp"
                              and self.scenario == "chat" and self.shards == 1):
                raise ValueError(f"{flag} needs --resumable, and resumes TCP chat clients of "
                                 "one dummy process (--transport tcp, --scenario chat, "
                                 "no --shard)")
        if self.rolling_restart < 0:
            raise ValueError(f"--rolling-restart must be a process id, not "
                             f"{self.rolling_restart}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"--transport must be one of {', '.join(TRANSPORTS)}, "
                             f"not {self.transport!r}")
        if not 0 <= self.size <= MAX_CHAT_SIZE:
            raise ValueError(f"--size must be between 0 and {MAX_CHAT_SIZE} "
                             f"(the server's chat limit)")
        # Send stamps count up from the epoch: one later than now (a wall-clock
        # reading, say) would make them negative mid-run.
        if self.epoch_us is not None and not 0 < self.epoch_us <= now_us():
            raise ValueError(f"--epoch-us must be a CLOCK_MONOTONIC reading in microseconds "
                             f"no later than now ({now_us()}; time.monotonic_ns() // 1000), "
                             f"not {self.epoch_us}")


@dataclass
class Report:
    clients: int
    connected: int = 0
    in_game: int = 0
    failed: int = 0
    sent: int = 0
    expected: int = 0
    received: int = 0               # every S_CHAT, duplicates and foreign ones included
    unique: int = 0
    lost: int = 0                   # expected - unique
    duplicated: int = 0
    out_of_order: int = 0
    wrong_sender: int = 0
    malformed: int = 0
    foreign: int = 0
    deliveries_per_s: float = 0.0   # unique deliveries over the chat phase
    logins_per_s: float = 0.0       # clients in game / seconds from first dial to last enter
    latency_ms: dict = field(default_factory=dict)   # p50 p90 p99 max
    errors: list = field(default_factory=list)       # a few failure reasons
    errors_not_listed: int = 0      # failures past the MAX_ERRORS_KEPT quoted in `errors`
    # --drop-every: connections cut, resumed, resumes refused, and the gap
    # from a cut to its S_RESUME (empty without drops).
    resumes: dict = field(default_factory=dict)
    # The field scenario (empty in the chat's): moves sent, acked, corrected,
    # late (skipped, the last one unanswered), unanswered at the end; what was
    # seen (moves of others, spawned, despawned); violations by kind; rates
    # over the walk phase; latencies (move to its answer, move to observers).
    field: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        if self.field:
            return (self.failed == 0 and not sum(self.field["violations"].values())
                    and self.field["moves"]["unanswered"] == 0)
        return (self.failed == 0 and self.lost == 0 and self.duplicated == 0
                and self.wrong_sender == 0 and self.malformed == 0
                and not self.resumes.get("failed"))

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def as_dict(self) -> dict:
        """The report for --json: rates to 0.1/s and latencies to the microsecond
        (the tally measures no finer), so a line reads as it is meant."""
        d = {**asdict(self), "ok": self.ok}
        d["deliveries_per_s"] = round(self.deliveries_per_s, 1)
        d["logins_per_s"] = round(self.logins_per_s, 1)
        d["latency_ms"] = {k: round(v, 3) for k, v in self.latency_ms.items()}
        if self.field:
            for key in ("moves_per_s", "deliveries_per_s"):
                d["field"][key] = round(self.field[key], 1)
        return d


async def paced(total: int, rate: float, fire, first: int = 0, t0: float | None = None) -> None:
    """Call fire(start, stop) for events [start, stop) as they fall due, event
    k at t0 + k / rate (t0: loop.time(), default now), from event `first` on.
    One timer for all events, batched to at most one fire per PACER_TICK; a
    late wake-up catches up at once."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() if t0 is None else t0
    done = first
    while done < total:
        due = min(total, int((loop.time() - t0) * rate) + 1)
        if due > done:
            fire(done, due)
            done = due
        if done < total:
            await asyncio.sleep(max(t0 + done / rate - loop.time(), PACER_TICK))


class DummyRun:
    def __init__(self, config: DummyConfig):
        config.validate()
        self.config = config
        self.tally = Tally(config.clients, config.epoch_us)
        self.indices = itertools.count(config.shard, config.shards)
        self.service = ClientService(self._new_session, config.host, config.port,
                                     config.local_clients, transport=config.transport)
        self.phase = "connect"
        self.connected = 0
        self.failed = 0
        self.errors: list[str] = []
        self.players: list[DummySession] = []    # in game, by client index
        self.room_size: dict[int, int] = {}
        self.sent = 0
        self.expected = 0               # deliveries of this process's chats
        self.shard_expected = 0         # deliveries to this shard's players (shards > 1)
        self.chat_start_us = 0
        self.login_seconds = 0.0
        # The field scenario.
        self.field_tally = FieldTally(config.view_radius, config.field_size, config.max_step,
                                      random.getrandbits(64))
        self.walk_seconds = 0.0
        # --drop-every: the sessions of resumed connections (not the service's).
        self.resumed_sessions: list[DummySession] = []
        self._resuming: set[asyncio.Task] = set()
        self._busy: set[int] = set()        # players being resumed, by position
        self.drops = self.server_closes = self.resumed = self.resume_failures = 0
        self.gaps_ms: list[float] = []
        self.restart_signalled = False

    @property
    def resumes_on(self) -> bool:
        return bool(self.config.drop_every or self.config.rolling_restart)

    def _new_session(self):
        session = DummySession(self.tally, next(self.indices), self.config.rooms)
        session.resumable = self.config.resumable
        if self.resumes_on:
            session.on_lost = self._lost
        if self.config.scenario == "field":
            session.walker = Walker(self.field_tally)
        return session

    @property
    def in_game(self) -> int:
        return len(self.players)

    def _fail(self, why: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(why)

    # -- connect -------------------------------------------------------------------

    async def _dial(self) -> DummySession:
        return await wait_for(self.service.connect_one(), self.config.enter_timeout)

    async def _enter(self, session: DummySession) -> None:
        self.connected += 1
        try:
            await wait_for(asyncio.shield(session.ready), self.config.enter_timeout)
        except asyncio.TimeoutError:
            session.fail(f"not in game after {self.config.enter_timeout:g}s")
        if session.ready.result():
            self.players.append(session)
        else:
            self._fail(f"client {session.index}: {session.error}")

    async def _join(self) -> None:
        try:
            session = await self._dial()
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail(f"connect: {describe(exc)}")
            return
        await self._enter(session)

    async def connect(self) -> None:
        # The first client alone: when nothing listens, say so once and stop.
        t0 = asyncio.get_running_loop().time()
        try:
            first = await self._dial()
        except (OSError, asyncio.TimeoutError) as exc:
            raise DummyError(f"cannot connect to {self.config.host}:{self.config.port}: "
                             f"{describe(exc)}") from None
        tasks = [asyncio.ensure_future(self._enter(first))]

        def launch(start, stop):
            tasks.extend(asyncio.ensure_future(self._join()) for _ in range(start, stop))

        # Client k dials at k / connect_rate after the first, in its own task.
        await paced(self.config.local_clients, self.config.connect_rate, launch, first=1, t0=t0)
        await asyncio.gather(*tasks)
        self.login_seconds = asyncio.get_running_loop().time() - t0
        self.players.sort(key=lambda s: s.index)

    # -- chat ----------------------------------------------------------------------

    def arm(self) -> None:
        """Tell the tally who is in which room, and every player its room size."""
        if self.config.shards > 1:
            self._arm_shard()
            return
        rooms: dict[int, list[DummySession]] = {}
        for s in self.players:
            rooms.setdefault(s.room, []).append(s)
        for room, members in rooms.items():
            self.room_size[room] = len(members)
            for slot, s in enumerate(members):
                self.tally.set_member(s.index, room, slot, s.player_id)
        for s in self.players:
            s.arm(self.room_size[s.room])

    def _arm_shard(self) -> None:
        """Every client of the run in the table, numbered in its room as every
        shard numbers it (client i is member i // rooms of room i % rooms); this
        shard's players with their playerIds. A shard expects every chat of its
        rooms at each of its players, whichever shard sends it."""
        config = self.config
        for i in range(config.clients):
            self.tally.set_member(i, i % config.rooms, i // config.rooms, UNKNOWN_PLAYER_ID)
        for s in self.players:
            self.tally.set_member(s.index, s.room, s.index // config.rooms, s.player_id)
        for room in {s.room for s in self.players}:
            self.room_size[room] = config.room_members(room)
        for s in self.players:
            s.arm(self.room_size[s.room])
            self.shard_expected += self.room_size[s.room] * config.chats_per_client

    def _send(self, start: int, stop: int) -> None:
        players = self.players
        n = len(players)
        stamp = self.tally.stamp()          # one clock read per batch
        size = self.config.size
        for m in range(start, stop):
            s = players[m % n]
            if s.connected and not s.quiet:
                s.chat(stamp, size)
                self.sent += 1
                self.expected += self.room_size[s.room]

    async def chat(self) -> None:
        self.phase = "chat"
        n = len(self.players)
        self.chat_start_us = now_us()
        dropper = asyncio.ensure_future(self._drops()) if self.config.drop_every else None
        restart = None
        if self.config.rolling_restart:
            restart = asyncio.get_running_loop().call_later(
                self.config.duration / 2, self._signal_restart)
        try:
            await paced(n * self.config.chats_per_client, n * self.config.rate, self._send)
        finally:
            if restart is not None:
                restart.cancel()
            if dropper is not None:
                dropper.cancel()
                await asyncio.gather(dropper, return_exceptions=True)
            await asyncio.gather(*self._resuming, return_exceptions=True)

    def _signal_restart(self) -> None:
        try:
            os.kill(self.config.rolling_restart, signal.SIGHUP)
            self.restart_signalled = True
        except OSError as exc:
            self._fail(f"--rolling-restart {self.config.rolling_restart}: {describe(exc)}")

    # -- drops and resumes (--drop-every) ---------------------------------------------

    async def _drops(self) -> None:
        """Cut a random player's connection now and then: each player about
        once every drop_every seconds (a Poisson process over all of them)."""
        rng = random.Random()
        n = len(self.players)
        while True:
            await asyncio.sleep(rng.expovariate(n / self.config.drop_every))
            i = rng.randrange(n)
            if i not in self._busy and self.players[i].connected:
                self._start_resume(i, cut=True)

    def _lost(self, session) -> None:
        """The server ended a player's connection (a worker handing over)."""
        if self.phase not in ("chat", "drain"):
            return
        try:
            i = self.players.index(session)
        except ValueError:
            return
        if i not in self._busy:
            self._start_resume(i, cut=False)

    def _start_resume(self, i: int, cut: bool) -> None:
        self._busy.add(i)
        task = asyncio.ensure_future(self._resume(i, cut))
        self._resuming.add(task)
        task.add_done_callback(lambda t: (self._resuming.discard(t), self._busy.discard(i)))

    async def _resume(self, i: int, cut: bool) -> None:
        """Resume player i on a new connection (after cutting its own with an
        RST, as a network change makes, when `cut`); a connection that fails
        before its S_RESUME (a worker stopped accepting) is tried again,
        until enter_timeout."""
        old = self.players[i]
        loop = asyncio.get_running_loop()
        if cut:
            # Cut between chats: once its own last chat has come back, so
            # that every chat counted as sent reached the server (what a
            # drop takes on its way up is not resumption's to bring back:
            # the protocol resumes what the server sends).
            old.quiet = True
            deadline = loop.time() + self.config.enter_timeout
            while old.connected and old.own_chats_back < old.seq and loop.time() < deadline:
                await asyncio.sleep(0.001)
        count, token = old.received, old.resume_token
        if cut:
            old.cut()
            self.drops += 1
        else:
            self.server_closes += 1
        t0 = loop.time()
        deadline = t0 + self.config.enter_timeout
        while True:
            new = DummySession(self.tally, old.index, self.config.rooms)
            new.resume_after(old, token, count)
            try:
                await wait_for(loop.create_connection(lambda: new, self.config.host,
                                                      self.config.port),
                               max(0.001, deadline - loop.time()))
                self.resumed_sessions.append(new)
                await wait_for(asyncio.shield(new.ready), max(0.001, deadline - loop.time()))
            except (OSError, asyncio.TimeoutError) as exc:
                new.fail(f"resume: {describe(exc)}")
            if new.ready.result() or new.error == "resume refused" or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)           # not answered: the same resume again
        if new.ready.result():
            new.on_lost = self._lost if self.resumes_on else None
            self.players[i] = new
            self.resumed += 1
            self.gaps_ms.append((new.resumed_at - t0) * 1000)
        else:
            self.resume_failures += 1
            self._fail(f"client {old.index}: {new.error}")

    async def drain(self) -> None:
        self.phase = "drain"
        done = asyncio.get_running_loop().create_future()
        self.tally.expect(self.expected_here, lambda: done.done() or done.set_result(None))
        try:
            await wait_for(done, self.config.drain_timeout)
        except asyncio.TimeoutError:
            pass
        if self._resuming:          # resumes still under way (each bounded by enter_timeout)
            await asyncio.gather(*self._resuming, return_exceptions=True)

    @property
    def expected_here(self) -> int:
        """Deliveries this process's players should receive."""
        return self.shard_expected if self.config.shards > 1 else self.expected

    # -- walk (the field scenario) ---------------------------------------------------

    def _move(self, start: int, stop: int) -> None:
        players = self.players
        n = len(players)
        for m in range(start, stop):
            s = players[m % n]
            if s.connected and s.walker.step(s):       # in C: the target, the packet, the send
                self.sent += 1

    async def walk(self) -> None:
        self.phase = "walk"
        n = len(self.players)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.chat_start_us = now_us()
        await paced(round(n * self.config.move_rate * self.config.duration),
                    n * self.config.move_rate, self._move)
        self.walk_seconds = loop.time() - t0

    async def drain_moves(self) -> None:
        """Until every move has its answer, or drain_timeout."""
        self.phase = "drain"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        while any(s.walker.in_flight and s.connected for s in self.players):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(PACER_TICK)     # the walkers' answers arrive in C: no event

    def field_report(self) -> dict:
        t = self.field_tally
        seconds = max(self.walk_seconds, 1e-9)
        seen = t.seen + t.spawned + t.despawned
        return {
            "moves": {"sent": t.moves_sent, "acked": t.acked, "corrected": t.corrected,
                      "late": t.late,
                      "unanswered": sum(1 for s in self.players if s.walker.in_flight)},
            "seen": {"moves": t.seen, "timed": t.seen_timed, "spawned": t.spawned, "despawned": t.despawned},
            "violations": t.violations(),
            "moves_per_s": t.acked / seconds,
            "deliveries_per_s": seen / seconds,
            "ack_ms": {k: t.ack_latency_us(q) / 1000 for k, q in
                       (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
            "observers_ms": {k: t.seen_latency_us(q) / 1000 for k, q in
                             (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        }

    # -- the whole run ---------------------------------------------------------------

    async def run(self, progress=None, before_chat=None) -> Report:
        ticker = asyncio.ensure_future(self._tick(progress)) if progress else None
        try:
            await self.connect()
            if self.config.hold:
                # Shards hold together too: each one's clients stay in until
                # every shard's are in (and the caller has measured them).
                if before_chat is not None:
                    await before_chat(self.in_game, self.failed)
                self.phase = "hold"
                await asyncio.sleep(self.config.duration)   # idle in game: the point of a hold
            elif self.players and self.config.scenario == "field":
                if before_chat is not None:
                    await before_chat(self.in_game, self.failed)
                await self.walk()
                await self.drain_moves()
            elif self.players:
                self.arm()
                if before_chat is not None:
                    await before_chat(self.in_game, self.failed)
                await self.chat()
                await self.drain()
            # Anyone gone before we close has failed, whatever it had done.
            for s in self.players:
                if not s.connected:
                    self._fail(f"client {s.index}: {s.close_reason} during the run")
            return self.report()
        finally:
            if ticker is not None:
                ticker.cancel()
            self.phase = "close"
            for s in self.resumed_sessions:
                if s.connected:
                    s.disconnect()
            await self.service.close(timeout=CLOSE_TIMEOUT)

    async def _tick(self, progress) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + 1.0
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += 1.0
            window = self.tally.window_latency_us(0.99)
            progress({
                "phase": self.phase, "connected": self.connected, "in_game": self.in_game,
                "failed": self.failed, "sent": self.sent, "received": self.tally.unique,
                "p99_ms": None if window is None else window / 1000,
            })

    def resume_report(self) -> dict:
        if not self.resumes_on:
            return {}
        gaps = sorted(self.gaps_ms)

        def q(p):
            return round(gaps[min(len(gaps) - 1, int(p * len(gaps)))], 3) if gaps else 0.0
        return {"dropped": self.drops, "server_closed": self.server_closes,
                "resumed": self.resumed, "failed": self.resume_failures,
                "replayed": sum(s.replayed for s in self.resumed_sessions),
                "restart_signalled": self.restart_signalled,
                "gap_ms": {"p50": q(0.5), "p99": q(0.99), "max": gaps[-1] if gaps else 0.0}}

    def report(self) -> Report:
        c = self.tally.counts()
        t = self.tally
        elapsed_us = t.last_us - self.chat_start_us if c["unique"] and self.chat_start_us else 0
        return Report(
            clients=self.config.local_clients, connected=self.connected, in_game=self.in_game,
            failed=self.failed, sent=self.sent, expected=self.expected_here,
            received=c["received"], unique=c["unique"], lost=self.expected_here - c["unique"],
            duplicated=c["duplicates"], out_of_order=c["out_of_order"],
            wrong_sender=c["wrong_sender"], malformed=c["malformed"], foreign=c["foreign"],
            deliveries_per_s=c["unique"] * 1e6 / elapsed_us if elapsed_us > 0 else 0.0,
            logins_per_s=self.in_game / self.login_seconds if self.login_seconds > 0 else 0.0,
            latency_ms={name: t.latency_us(q) / 1000 for name, q in
                        (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))},
            errors=list(self.errors),
            resumes=self.resume_report(),
            errors_not_listed=self.failed - len(self.errors),
            field=self.field_report() if self.config.scenario == "field" else {},
        )


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    # asyncio words it "Connect call failed (host, port)", uvloop by errno.
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def run_dummy(config: DummyConfig, progress=None, before_chat=None) -> Report:
    """Run the dummy once; progress, when given, is called once a second
    with a dict of live figures; before_chat(in_game, failed), when given, is
    awaited once every client is in game (or failed), before the first chat."""
    return await DummyRun(config).run(progress, before_chat)
