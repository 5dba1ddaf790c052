"""Logins: what bounds them, and the S_LOGIN reply.

A named login costs a scrypt hash (about 16 MiB and tens of milliseconds on
a database worker); a guest login costs nothing. So named logins are the
cheap way to deny service, and each is admitted through a LoginGate:

- in flight (admitted, database answer not back yet), at most
  `max_logins_in_flight` server-wide and `max_logins_in_flight_per_address`
  per source address, so one address can never take every slot; past either
  bound the login is answered S_LOGIN{success=false} at once;
- failed logins (wrong password) per source address: at most
  `max_failed_logins_per_address` per `address_window` seconds; past it the
  address's named logins are refused at once until the window lets more;
- new accounts per source address: at most `max_new_accounts_per_address` per
  window; past it, a login for an unknown account is refused without any
  hashing, while existing accounts log in as usual.

Admitted logins then take turns for the database's workers (Database.workers
at a time), round robin over source addresses: a flooding address has its
few logins in line like any other address, so a returning player from
elsewhere waits for one worker to come free, not for the flood's queue. A
login whose client has gone by its turn is not started, and the database
skips one that goes while it waits for a worker thread (Database.login's
`wanted`): nothing is hashed for a client that left.

Per-address counts skip exempt networks (netcore.addresses; loopback by
default); exempt clients share one turn among themselves.
"""
from __future__ import annotations

import asyncio
import collections
import time

PRUNE_EVERY = 1024          # charges between sweeps of expired address entries


class AddressBudget:
    """At most `limit` events per `window` seconds per address key: a token
    bucket per key (GCRA, one float each), forgotten once full again."""

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._interval = window / limit if limit else 0.0
        # The last event allowed in a window lands exactly on the tolerance,
        # where `tat - now` can round a hair above it (now + 300.0 - now is
        # 300.00000000000006 for some clock readings): a microsecond per
        # interval of slack keeps the limit-th event allowed whatever the clock.
        self._tolerance = window - self._interval + self._interval * 1e-6
        self._tat: dict[str, float] = {}
        self._charges = 0

    def __len__(self) -> int:
        return len(self._tat)

    def available(self, key: str | None, now: float) -> bool:
        """Whether one more event from `key` is within the budget."""
        if key is None or not self.limit:
            return True
        tat = self._tat.get(key)
        return tat is None or tat - now <= self._tolerance

    def used(self, key: str | None, now: float) -> int:
        """Events of `key` still counted in the window (for the log)."""
        tat = self._tat.get(key) if key is not None else None
        if tat is None or tat <= now or not self._interval:
            return 0
        return min(self.limit, round((tat - now) / self._interval))

    def charge(self, key: str | None, now: float) -> None:
        if key is None or not self.limit:
            return
        tat = self._tat.get(key, now)
        self._tat[key] = (tat if tat > now else now) + self._interval
        self._charges += 1
        if self._charges % PRUNE_EVERY == 0:
            self.prune(now)

    def prune(self, now: float) -> None:
        """Forget keys whose bucket is full again: memory follows the active addresses."""
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


class LoginGate:
    """Admission of named logins (see the module docstring)."""

    def __init__(self, config, workers: int = 4, clock=time.monotonic):
        self.workers = workers              # logins handed to the database at once
        self.working = 0
        self._lanes: dict[str | None, collections.deque] = {}   # waiting logins by address
        self._turns = 0
        self._last_turn: dict[str | None, int] = {}   # when each address last got a worker
        self.max_in_flight = config.max_logins_in_flight
        self.max_in_flight_per_address = config.max_logins_in_flight_per_address
        self.failures = AddressBudget(config.max_failed_logins_per_address, config.address_window)
        self.new_accounts = AddressBudget(config.max_new_accounts_per_address,
                                          config.address_window)
        self.clock = clock
        self.in_flight = 0
        self.in_flight_by_address: dict[str, int] = {}

    def refusal(self, key: str | None, address: str) -> tuple[str, str, tuple] | None:
        """Why a named login from `key` cannot start now, as (reason, log
        format, args); None when it may."""
        if self.in_flight >= self.max_in_flight:
            return ("server_busy", "login refused: %d named logins in flight (max %d)",
                    (self.in_flight, self.max_in_flight))
        if key is None:
            return None
        n = self.in_flight_by_address.get(key, 0)
        if n >= self.max_in_flight_per_address:
            return ("address_busy", "login refused: %d named logins in flight from %s (max %d)",
                    (n, address, self.max_in_flight_per_address))
        now = self.clock()
        if not self.failures.available(key, now):
            return ("address_failures", "login refused: %d failed logins from %s in %g s",
                    (self.failures.used(key, now), address, self.failures.window))
        return None

    def may_create(self, key: str | None) -> bool:
        return self.new_accounts.available(key, self.clock())

    def acquire(self, key: str | None) -> None:
        self.in_flight += 1
        if key is not None:
            self.in_flight_by_address[key] = self.in_flight_by_address.get(key, 0) + 1

    def release(self, key: str | None) -> None:
        self.in_flight -= 1
        if key is not None:
            n = self.in_flight_by_address.pop(key) - 1
            if n:
                self.in_flight_by_address[key] = n
            else:
                self._last_turn.pop(key, None)   # nothing of it in line: no turn to remember

    async def turn(self, key: str | None) -> None:
        """Wait until a database worker is ours, taking turns with the other
        addresses that wait; call done() after the database has answered."""
        if self.working < self.workers and not self._lanes:
            self.working += 1
            self._took_turn(key)
            return
        fut = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = collections.deque()
        lane.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.done()                 # given the worker, cancelled before using it
            else:
                self._forget(key, fut)
            raise

    def done(self) -> None:
        """A worker is free: the next address in turn gets it."""
        self.working -= 1
        while self.working < self.workers and self._lanes:
            # The address served longest ago goes next: round robin, in which
            # an address that just had a worker is at the back.
            key = min(self._lanes, key=lambda k: self._last_turn.get(k, -1))
            lane = self._lanes[key]
            fut = lane.popleft()
            if not lane:
                del self._lanes[key]
            if not fut.done():
                self.working += 1
                self._took_turn(key)
                fut.set_result(None)

    def _took_turn(self, key) -> None:
        self._turns += 1
        self._last_turn[key] = self._turns

    def _forget(self, key, fut) -> None:
        lane = self._lanes.get(key)
        if lane is not None and fut in lane:
            lane.remove(fut)
            if not lane:
                del self._lanes[key]

    def failed(self, key: str | None) -> None:
        self.failures.charge(key, self.clock())

    def created(self, key: str | None) -> None:
        self.new_accounts.charge(key, self.clock())
