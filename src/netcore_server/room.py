"""Rooms: where a game lives. A Room is a JobQueue; its state is touched only by its jobs.

A game subclasses Room (Game.room) and writes, as Colyseus's Room or
Nakama's match handler, its state, its jobs and the hooks it needs:

    class Arena(Room):
        kind = "arena"                  # the metrics label
        tick_rate = 20                  # on_tick 20 times a second (1..60; 0: none)

        def on_create(self): ...                    # the first job of the room
        def on_join_attempt(self, player): ...      # None accepts; a reason refuses
        def on_join(self, player): ...              # in, its S_ENTER_GAME sent
        def on_rejoin(self, player): ...            # its client resumed on a new connection
        def on_leave(self, player): ...             # out (left or disconnected)
        def on_tick(self, dt): ...                  # dt: seconds since the last tick
        def on_dispose(self): ...                   # the last job: the room goes
        def on_handover(self): ...                  # a rolling restart: the state to carry
        def on_restore(self, state): ...            # ... and, in the successor, instead of on_create

        @client_job
        def fire(self, player, x, y): ...           # session.room_job("fire", x, y)

Every hook and job runs on the room's queue, one at a time, in push order,
on the worker that owns the room (netcore_cluster): a player connected to
another worker is a member here like any other (its `gateway` is set), its
client jobs are forwarded here by name with their plain arguments (None,
bool, a 64-bit int, float, str, bytes: netcore_cluster.wire), and what the
room sends it (broadcast, player.send) streams back, in the room's one order.
A hook may touch the room's state, broadcast and send, push jobs and timers
on its own queue; it may not block, await, or touch another room's state
(push a job to that room instead).

The tick (tick_rate, or set self.tick_rate in on_create) is a fixed-rate
timer whose job runs on the queue with every other job and within the same
time budget: a tick never runs twice to catch up; one that could not start
before the next was due is counted late and the slots it overran are
skipped (JobTicker, netcore.jobqueue), and the counts are metrics by kind.

Bounds. A room admits at most `max_players` (players in it plus enters
accepted here whose job has not run yet, so the answer is immediate and
exact); a further enter is refused. Client jobs wait in the room's queue at
most `max_queue` deep; past it a job is dropped and counted, never queued
(enters and leaves are never dropped: each session makes at most one of
each). Both are checked by the handlers of this worker for the rooms it
owns; a room owned by another worker is bounded there by the cluster layer's
own limits, and its owner checks max_players again.

A room with no player, none entering and no job left is dropped (on_dispose,
then its queue is closed): checked after every job that can leave it so (a
leave, a drain, a refused enter), so a tick or a drain queued behind the
last leave does not keep it alive.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, TypeVar

from netcore import JobQueue, LatencyHistogram, send_to_all_coalesced

from netcore_server.player import Player
from netcore_server.replies import ENTER_REFUSED, replies_for

log = logging.getLogger("netcore_server.room")

MAX_TICK_RATE = 60
_Job = TypeVar("_Job", bound=Callable[..., Any])


def client_job(fn: _Job) -> _Job:
    """Mark a Room method `fn(self, player, *args)` as a job a client's
    session may push (GameSession.room_job), here or from another worker."""
    fn.netcore_client_job = True  # type: ignore[attr-defined]
    return fn


class Room(JobQueue):
    """One room of a game: a JobQueue whose state only its own jobs touch.

    A game subclasses it (Game.room) and overrides the hooks it needs. Every
    hook and job runs on the room's owner, one at a time, in push order.
    Its state for the game: ``room_id``; ``players``, the members by player
    id (players of other workers among them); ``config``, the server's
    settings. Made by the layer as ``Room(room_id, rooms)`` when the first
    player enters; dropped when the last one has left.
    """

    #: The room kind: the ``kind`` label of the room metrics.
    kind = "room"
    #: Ticks per second, 1 to 60; 0: no tick (set_tick_rate changes it).
    tick_rate: float = 0
    # Set by __init_subclass__ from the @client_job methods: what a session
    # may push (client_jobs), and what the cluster layer lets a member of
    # another worker run here (REMOTE_JOBS: those and refuse_enter).
    client_jobs: frozenset = frozenset()
    REMOTE_JOBS: frozenset = frozenset({"refuse_enter"})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        names = {name for klass in cls.__mro__ for name, value in vars(klass).items()
                 if getattr(value, "netcore_client_job", False)}
        cls.client_jobs = frozenset(names)
        cls.REMOTE_JOBS = frozenset(names | {"refuse_enter"})
        check_tick_rate(cls.tick_rate, cls.__name__)

    def __init__(self, room_id: int, rooms: "Rooms"):
        super().__init__()
        self.room_id = room_id
        self.rooms = rooms
        self.players: dict[int, Player] = {}
        self.entering = 0                   # enters admitted here whose job has not run
        self._sessions: list | None = []    # fan-out list, rebuilt after a change
        self._drains: list | None = None    # futures of Rooms.drain waiting on this room
        self.ticker = None                  # the JobTicker, while it ticks
        # With several workers: this room's stream to the members connected
        # elsewhere (netcore_cluster.owner.RoomStream); None in one process.
        self.link = None

    def __len__(self) -> int:
        return len(self.players)

    @property
    def config(self):
        """The server's configuration (the game's ServerConfig subclass), or
        None for rooms made without a server."""
        return self.rooms.config

    # -- the game's hooks: each runs as a job of this room -------------------------

    def on_create(self) -> None:
        """The room was made (its first job): set up its state, timers, tick rate."""

    def on_join_attempt(self, player: Player) -> str | None:
        """A player asks to enter: None lets it in; a reason (a short text for
        the log) refuses it, and it gets S_ENTER_GAME{success: false}."""
        return None

    def on_join(self, player: Player) -> None:
        """The player is a member: its S_ENTER_GAME is sent, broadcasts reach it."""

    def on_rejoin(self, player: Player) -> None:
        """The player's client resumed on a new connection (netcore_server.resume):
        player.session is the new one. Nobody else noticed a thing; a room
        that keeps sessions of its own (a field's) points them at it here.
        Only for a player connected to this worker (a member of another
        worker's has no session here)."""

    def on_leave(self, player: Player) -> None:
        """The player left (C_LEAVE, disconnect, its worker gone): no longer a member."""

    def on_tick(self, dt: float) -> None:
        """Once per tick, at tick_rate: dt is the seconds since the last tick began."""

    def on_dispose(self) -> None:
        """The room goes (its last player left, or the server stops): its last job."""

    def on_handover(self) -> Any:
        """A rolling restart (netcore_server.restart): this worker hands the
        room to its successor, which goes on with it as it is. Return the
        room's own state as plain data (None, bool, int, float, str, bytes,
        and lists, tuples and dicts of them); its members go by themselves.
        Runs once every job queued before it has run, as the room's last job here."""
        return None

    def on_restore(self, state: Any) -> None:
        """In the successor, instead of on_create: `state` is what
        on_handover returned; self.players are the members as they were
        (this worker's held for their resume, other workers' as their cards
        say), and nobody was told anything. Timers are not carried (set
        them again here); the tick rate is. By default on_create()."""
        self.on_create()

    def enter_reply(self, player: Player):
        """The S_ENTER_GAME success reply the player gets (a SendBuffer): by
        default {success, playerId}; a game with more in it overrides this."""
        return self.rooms.replies.enter(player.player_id)

    # -- what the game's code calls ----------------------------------------------------

    def broadcast(self, buf) -> int:
        """Queue one send buffer to every member, wherever it is connected, the sender included."""
        if self._sessions is None:
            self._sessions = [p.session for p in self.players.values() if p.session is not None]
        if self.link is not None:
            self.link.publish(buf)      # members on other workers: one message per iteration
        # The broadcasts of one job slice reach each member as one queue entry
        # (netcore.send_to_all_coalesced); the list is replaced, never changed.
        return send_to_all_coalesced(self._sessions, buf)

    def set_tick_rate(self, rate: float) -> None:
        """Tick `rate` times a second from now on (0 stops it)."""
        check_tick_rate(rate, type(self).__name__)
        self.tick_rate = rate
        if self.ticker is not None:
            self.rooms.retire_ticker(self)
        if rate and not self.closed:
            # A method of the room itself: the ticker keeps it unbound and
            # holds the room only weakly (no cycle through room.ticker).
            self.ticker = self.do_tick(rate, self._run_tick,
                                       histogram=self.rooms.totals(self.kind).durations)

    # -- admission: from handlers, before the job is pushed ---------------------------

    def admit(self) -> bool:
        """Take a place for an enter about to be queued; False when full."""
        if len(self.players) + self.entering >= self.rooms.max_players:
            return False
        self.entering += 1
        return True

    def drop_if_unused(self) -> bool:
        """Drop the room if nobody is in it or entering and no job is left."""
        if self.players or self.entering or self.pending:
            return False
        self.rooms.drop(self)
        return True

    def _run_tick(self, dt: float) -> None:
        self.on_tick(dt)

    def member_from_card(self, card: bytes, gateway: tuple) -> Player:
        """A player of another worker, as its card says (netcore_cluster)."""
        return self.rooms.player_class.from_card(card, gateway)

    # -- the layer's jobs: run only from this room's queue ----------------------------

    def enter(self, player: Player) -> None:
        player.room = self
        if player.gateway is None:
            if self.entering:
                self.entering -= 1          # admitted by admit() on this worker
        elif len(self.players) + self.entering >= self.rooms.max_players:
            # From another worker, admitted here: the room is full.
            self._refuse(player, "room_full", "full")
            return
        try:
            reason = self.on_join_attempt(player)
        except Exception:
            log.exception("room %d (%s): on_join_attempt raised; the enter is refused",
                          self.room_id, self.kind)
            reason = "on_join_attempt raised"
        if reason is not None:
            self._refuse(player, "room_refused", str(reason))
            return
        # The answer goes first, so the player knows its id before anything
        # else arrives (with a resume token, when its session asked).
        if player.session is not None:
            player.session.answer_enter(self.enter_reply(player))
        else:
            player.send(self.enter_reply(player))
        self.players[player.player_id] = player
        self._sessions = None
        if player.gateway is not None:
            self.link.joined(player)
        self.on_join(player)

    def _refuse(self, player: Player, why: str, detail: str) -> None:
        player.send(ENTER_REFUSED)
        if player.gateway is not None:
            # Its worker takes it out of the room and back to choosing one.
            self.link.refused(player, why)
        elif player.session is not None:
            player.session.enter_refused(player, why, "enter refused by room %d: %s",
                                         self.room_id, detail)
            player.session = None
        self.drop_if_unused()

    def refuse_enter(self, player: Player) -> None:
        """A player in this room asked to enter again."""
        player.send(ENTER_REFUSED)

    def resume_member(self, player: Player, session, old, received: int) -> None:
        """A C_RESUME (netcore_server.resume): `session` takes `old`'s place
        as the player's connection, here in the room's order, so that what
        was sent to the player before this job is old's (kept, and sent
        again after `received`) and what is sent after it is the new one's."""
        if self.players.get(player.player_id) is player and player.session is old:
            if session.take_over(old, received):
                self._sessions = None
                self.on_rejoin(player)
        elif session.connected:
            session.resume_refused("gone", "resume refused: the player left meanwhile")

    def leave(self, player: Player) -> None:
        if self.players.get(player.player_id) is player:
            del self.players[player.player_id]
            self._sessions = None
            if player.gateway is not None:
                self.link.left(player)
            self.on_leave(player)
        player.session = None           # the last link of the player <-> session cycle
        self.drop_if_unused()


def check_tick_rate(rate: Any, where: str) -> None:
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool)
            and (rate == 0 or 1 <= rate <= MAX_TICK_RATE)):
        raise ValueError(f"{where}: tick_rate {rate!r} must be 0 (no tick) or 1..{MAX_TICK_RATE}")


def _created(room: Room) -> None:
    room.on_create()
    if room.tick_rate and room.ticker is None and not room.closed:
        room.set_tick_rate(room.tick_rate)


def _restored(room: Room, state: Any) -> None:
    room.on_restore(state)
    if room.tick_rate and room.ticker is None and not room.closed:
        room.set_tick_rate(room.tick_rate)


def member_job(room: Room, job: Callable, player: Player, args: tuple) -> None:
    """A client's job, run only while its player is still a member (an enter
    that the room refused, or a leave, may have come between)."""
    if room.players.get(player.player_id) is player:
        job(room, player, *args)


def _drained(room: Room, fut) -> None:
    if room._drains is not None and fut in room._drains:
        room._drains.remove(fut)
    if not fut.done():
        fut.set_result(None)
    room.drop_if_unused()


class TickTotals:
    """Ticks of every room of one kind, the dropped ones' included (metrics)."""

    __slots__ = ("ticks", "late", "skipped", "over_budget", "durations")

    def __init__(self):
        self.ticks = self.late = self.skipped = self.over_budget = 0
        self.durations = LatencyHistogram()     # each tick's run time, seconds

    def add(self, ticker) -> None:
        self.ticks += ticker.ticks
        self.late += ticker.late
        self.skipped += ticker.skipped
        self.over_budget += ticker.over_budget


class Rooms:
    """Rooms by id: created on first use, dropped when the last player has left.

    With several workers (`cluster`, a netcore_cluster.ClusterLink) a room owned
    by another worker is a RemoteRoom of the cluster layer, which forwards the
    same jobs to its owner; only the rooms owned here are kept in this registry.
    """

    def __init__(self, room_class: type[Room] = Room, *, cluster=None, max_players: int = 5000,
                 max_queue: int = 10000, replies=None, config=None,
                 room_for: Callable[[int], type[Room]] | None = None,
                 player_class: type[Player] = Player, refusals=None, player_ids=None):
        """room_for: the room class of a room id, where a game has several
        (the same answer on every worker); by default room_class.
        replies: what builds S_ENTER_GAME (netcore_server.replies; by
        default the hand-laid ones). refusals and player_ids: the server's
        (Refusals, PlayerIdAllocator), for a room that counts what it refuses
        or gives ids to entities of its own (a field's monsters)."""
        self._rooms: dict[int, Room] = {}
        self.room_class = room_class
        self.room_for = room_for if room_for is not None else (lambda _room_id: room_class)
        self.player_class = player_class
        self.refusals = refusals
        self.player_ids = player_ids
        self.replies = replies_for(True, ()) if replies is None else replies
        self.config = config
        self.cluster = cluster
        self.max_players = max_players
        self.max_queue = max_queue
        # Every room's schedule-to-run waits, for the metrics (one histogram for all).
        self.delay_histogram = LatencyHistogram()
        # By kind: the dropped rooms' ticks, and every tick's run time.
        self.tick_totals: dict[str, TickTotals] = {room_class.kind: TickTotals()}

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, room_id: int) -> Room | None:
        return self._rooms.get(room_id)

    def all(self) -> list[Room]:
        return list(self._rooms.values())

    def get_or_create(self, room_id: int) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            if self.cluster is not None and not self.cluster.owns(room_id):
                return self.cluster.remote_room(room_id)
            room = self._rooms[room_id] = self.room_for(room_id)(room_id, self)
            if self.cluster is not None:
                self.cluster.attach(room)
            room.delay_histogram = self.delay_histogram
            room.do_async(_created, room)
        return room

    def restore(self, room_id: int, members: list, state: Any, tick_rate: float,
                carried: bool = True) -> Room:
        """A room handed over by a rolling restart (netcore_server.restart):
        made with its members in it, then on_restore(state) as its first job
        (on_create where its on_handover failed: `carried` False)."""
        room = self._rooms[room_id] = self.room_for(room_id)(room_id, self)
        room.tick_rate = tick_rate
        if self.cluster is not None:
            stream = self.cluster.attach(room)
        for player in members:
            player.room = room
            room.players[player.player_id] = player
            if player.gateway is not None:
                self.cluster.restored_member(stream, player)
        room._sessions = None               # the fan-out list: made at the first broadcast
        room.delay_histogram = self.delay_histogram
        if carried:
            room.do_async(_restored, room, state)
        else:
            room.do_async(_created, room)
        return room

    def totals(self, kind: str) -> TickTotals:
        totals = self.tick_totals.get(kind)
        if totals is None:
            totals = self.tick_totals[kind] = TickTotals()
        return totals

    def retire_ticker(self, room: Room) -> None:
        """Stop a room's ticker, its counts kept in its kind's totals."""
        ticker, room.ticker = room.ticker, None
        if ticker is not None:
            ticker.cancel()
            self.totals(room.kind).add(ticker)

    def drop(self, room: Room) -> None:
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
            if self.cluster is not None:
                self.cluster.detach(room)
        if not room.closed:
            try:
                room.on_dispose()
            except Exception:
                log.exception("room %d (%s): on_dispose raised", room.room_id, room.kind)
        self.retire_ticker(room)
        room.close()
        drains, room._drains = room._drains, None
        for fut in drains or ():
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        """Wait until every room has run the jobs pushed so far (or was dropped)."""
        loop = asyncio.get_running_loop()
        waits = []
        for room in self._rooms.values():
            fut = loop.create_future()
            if room._drains is None:
                room._drains = []
            room._drains.append(fut)
            room.do_async(_drained, room, fut)
            waits.append(fut)
        await asyncio.gather(*waits)

    def close(self) -> None:
        for room in list(self._rooms.values()):
            self.drop(room)
