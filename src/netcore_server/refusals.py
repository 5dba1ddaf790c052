"""Per-client refusals: every login refused, enter refused and job dropped is
counted by what and why (metrics, the periodic summary) and logged as one
line through netcore's per-peer line budget (netcore.logs), so a client that
provokes a refusal per packet is counted in full but cannot flood the log.

The layer's own kinds are below; a game adds its own (Game.refusals, and the
wrong_state and room_queue_full of each of its room's client jobs), so that
every series exists from the start. Reasons are the game's constants, never
text a client chose: the number of series stays fixed.
"""
from __future__ import annotations

import logging

from netcore.logs import peer_line

log = logging.getLogger("netcore_server.handlers")

# Every (what, reason) of the layer's own.
REASONS = {
    "login": ("wrong_state", "server_busy", "address_busy", "address_failures",
              "wrong_password", "no_new_account", "database_error", "bad_account_name",
              "no_player_ids"),
    # room_refused: the room's on_join_attempt said no (its reason is logged).
    "enter": ("wrong_state", "bad_index", "bad_room", "room_full", "room_refused"),
    # S_RESUME{success: false} (netcore_server.resume): a server that does
    # not resume, not a new connection's first packet, the address's failure
    # budget spent, a token not known (or spent), a count past what was
    # sent, a gap no longer kept, the session gone before the room's job.
    "resume": ("not_resumable", "wrong_state", "address_failures", "unknown_token",
               "wrong_count", "gap_lost", "gone"),
    "leave": ("wrong_state",),
}
# What a client's job into its room is dropped for (Room.client_jobs).
JOB_REASONS = ("wrong_state", "room_queue_full")


class Refusals:
    def __init__(self, more: dict[str, tuple[str, ...]] | None = None):
        """more: a game's own kinds, {what: (reason, ...)}, beside the layer's."""
        kinds = {what: list(reasons) for what, reasons in REASONS.items()}
        for what, reasons in (more or {}).items():
            kinds.setdefault(what, [])
            kinds[what] += [r for r in reasons if r not in kinds[what]]
        self.counts: dict[tuple[str, str], int] = {
            (what, reason): 0 for what, reasons in kinds.items() for reason in reasons}

    def refuse(self, session, what: str, reason: str, fmt: str, *args,
               level: int = logging.INFO) -> None:
        """Count one refusal; log `session N: <fmt % args>` if the budget allows."""
        key = (what, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        if peer_line(log, level):
            log.log(level, "session %d: " + fmt, session.session_id, *args)

    def count(self, what: str, reason: str, n: int = 1) -> None:
        """Count refusals with no session to name (a room's, on the room's
        owner, for a player that may be connected to another worker)."""
        key = (what, reason)
        self.counts[key] = self.counts.get(key, 0) + n

    def total(self) -> int:
        return sum(self.counts.values())
