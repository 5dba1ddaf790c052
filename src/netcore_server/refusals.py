"""Per-client refusals: every login refused, enter refused and chat dropped is
counted by what and why (metrics, the periodic summary) and logged as one
line through netcore's per-peer line budget (netcore.logs), so a client that
provokes a refusal per packet is counted in full but cannot flood the log.
"""
from __future__ import annotations

import logging

from netcore.logs import peer_line

log = logging.getLogger("netcore_game.handlers")

# Every (what, reason) there is, so that each series exists from the start.
REASONS = {
    "login": ("wrong_state", "server_busy", "address_busy", "address_failures",
              "wrong_password", "no_new_account", "database_error", "bad_account_name"),
    "enter": ("wrong_state", "bad_index", "room_full"),
    "chat": ("wrong_state", "too_long", "room_queue_full"),
}


class Refusals:
    def __init__(self):
        self.counts: dict[tuple[str, str], int] = {
            (what, reason): 0 for what, reasons in REASONS.items() for reason in reasons}

    def refuse(self, session, what: str, reason: str, fmt: str, *args,
               level: int = logging.INFO) -> None:
        """Count one refusal; log `session N: <fmt % args>` if the budget allows."""
        self.counts[what, reason] += 1
        if peer_line(log, level):
            log.log(level, "session %d: " + fmt, session.session_id, *args)

    def total(self) -> int:
        return sum(self.counts.values())
