"""A player in the world: one character of one logged-in session."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from netcore_game.room import Room
    from netcore_game.session import GameSession


@dataclass(eq=False)
class Player:
    player_id: int          # in-game id, from the server's generator (not the database id)
    db_id: int              # the character row; 0 for a guest's characters
    name: str
    player_type: int
    # Player <-> session is a reference cycle while in game; GameSession breaks
    # it on disconnect so neither outlives the connection.
    session: Optional["GameSession"] = field(default=None, repr=False)
    room: Optional["Room"] = field(default=None, repr=False)
