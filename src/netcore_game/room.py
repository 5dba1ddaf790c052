"""netcore-server's rooms: the chat, and the field.

Chat stands in for every game packet that goes to the whole room: received,
checked by its handler, run as a job of the room, fanned out to everyone in
it, the sender included, serialized once whatever the room's size.

The field (--field-size above 0, the default) is the second example of the
server layer: each room is a square field, each player has a position, sees
what is within --view-radius and gets only those moves (netcore.field keeps
the grid and the view sets in C); monsters (--npcs) wander on the room's
tick. docs/protocol.md, "The field", is the specification.
"""
from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass

from netcore import make_packet
from netcore.field import Field, player_tail
from netcore_packets.Enum_pb2 import PLAYER_TYPE_MONSTER
from netcore_packets.Protocol_pb2 import S_CHAT, S_ENTER_GAME
from netcore_packets.server_dispatch import (PKT_S_DESPAWN, PKT_S_ENTER_GAME, PKT_S_MOVE,
                                             PKT_S_SPAWN, make_send_buffer)

from netcore_server import SYSTEM_PLAYER_ID, Player, Room, client_job

_FLOAT = struct.Struct("<f")


class ChatRoom(Room):
    kind = "chat"

    def on_create(self) -> None:
        seconds = getattr(self.config, "room_announce_seconds", 0)
        if seconds > 0:
            # A timer of the room's own: its job runs on the room's queue.
            self.do_timer(seconds * 1000, self.announce, interval_ms=seconds * 1000)

    @client_job
    def chat(self, player, msg: str) -> None:
        # Serialized once, whatever the room size.
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=msg)))

    def announce(self) -> None:
        """Every --room-announce-seconds: tell everyone how many are here."""
        if self.drop_if_unused():
            return
        self.broadcast(make_send_buffer(S_CHAT(
            playerId=SYSTEM_PLAYER_ID, msg=f"room {self.room_id}: {len(self.players)} players")))


@dataclass(eq=False, slots=True)
class FieldPlayer(Player):
    """A player with its place in its room's field (slot -1: none, the
    field is off or it has not joined). x, y: where it entered; the field
    holds where it is now (room.field.position(slot))."""
    x: float = 0.0
    y: float = 0.0
    slot: int = -1


def monster_tail(k: int) -> bytes:
    return player_tail(f"Monster{k + 1}", PLAYER_TYPE_MONSTER)


def float32(value: float) -> float:
    return _FLOAT.unpack(_FLOAT.pack(value))[0]


def _fixed32(tag: int, value: float) -> bytes:
    """A proto3 float field: left out where its bits are 0."""
    raw = _FLOAT.pack(value)
    return b"" if raw == b"\0\0\0\0" else bytes((tag,)) + raw


def enter_reply_payload(player_id: int, x: float, y: float) -> bytes:
    """S_ENTER_GAME{success, playerId, x, y}, as protobuf lays it out."""
    out = bytearray(b"\x08\x01\x10")
    while player_id >= 0x80:
        out.append(player_id & 0x7F | 0x80)
        player_id >>= 7
    out.append(player_id)
    return bytes(out) + _fixed32(0x1D, x) + _fixed32(0x25, y)


class FieldRoom(ChatRoom):
    """The chat room with a field in it (--field-size 0: the chat room alone)."""

    kind = "field"

    def on_create(self) -> None:
        super().on_create()
        if self._make_field() and self.config.npcs:
            ids = self.rooms.player_ids.take(self.config.npcs)
            for k, monster_id in enumerate(ids):
                slot = self.field.add(monster_id, *self.spot(), monster_tail(k),
                                      observer=False)
                self.monsters[slot] = monster_id
            self.set_tick_rate(self.config.tick_rate)

    def _make_field(self) -> bool:
        config = self.config
        self.field = None
        self.monsters: dict[int, int] = {}          # slot -> monster id
        if config is None or not getattr(config, "field_size", 0):
            return False
        self.field = Field(config.field_size, config.view_radius, config.max_step,
                           move_id=PKT_S_MOVE, spawn_id=PKT_S_SPAWN, despawn_id=PKT_S_DESPAWN)
        if self.link is not None:           # members on other workers: through the room's stream
            self.field.remote_sink = self.link.multicast
        self.rng = random.Random()
        return True

    def on_handover(self):
        """Where everyone is: the field is rebuilt from it, as it was."""
        field = self.field
        if field is None:
            return None
        return {"players": {pid: field.position(p.slot) for pid, p in self.players.items()
                            if p.slot >= 0},
                "monsters": sorted((mid, *field.position(slot))
                                   for slot, mid in self.monsters.items())}

    def on_restore(self, state) -> None:
        ChatRoom.on_create(self)
        if not self._make_field():
            return
        field, state = self.field, state or {"players": {}, "monsters": []}
        # Nobody is told: everyone already sees exactly these (a view is
        # what lies within the radius, so the same places make the same views).
        for k, (monster_id, x, y) in enumerate(state["monsters"]):
            self.monsters[field.add(monster_id, x, y, monster_tail(k), observer=False,
                                    quiet=True)] = monster_id
        for pid, player in self.players.items():
            x, y = state["players"].get(pid, (player.x, player.y))
            player.slot = field.add(pid, x, y, player_tail(player.name, player.player_type),
                                    player.session, remote=player.gateway is not None,
                                    quiet=True)

    def spot(self) -> tuple[float, float]:
        size = self.field.size
        return float32(self.rng.uniform(0, size)), float32(self.rng.uniform(0, size))

    def on_join_attempt(self, player) -> str | None:
        if self.field is not None:
            player.x, player.y = self.spot()
        return None

    def enter_reply(self, player):
        if self.field is None:
            return super().enter_reply(player)
        if getattr(self.config, "fast_replies", True):
            return make_packet(PKT_S_ENTER_GAME,
                               enter_reply_payload(player.player_id, player.x, player.y))
        return make_send_buffer(S_ENTER_GAME(success=True, playerId=player.player_id,
                                             x=player.x, y=player.y))

    def on_join(self, player) -> None:
        if self.field is not None:
            player.slot = self.field.add(player.player_id, player.x, player.y,
                                         player_tail(player.name, player.player_type),
                                         player.session, remote=player.gateway is not None)

    def on_rejoin(self, player) -> None:
        if self.field is not None and player.slot >= 0:
            self.field.set_session(player.slot, player.session)     # its new connection

    def on_leave(self, player) -> None:
        if self.field is not None and player.slot >= 0:
            self.field.remove(player.slot)
            player.slot = -1

    @client_job
    def move(self, player, x: float, y: float) -> None:
        if self.field is None or player.slot < 0:
            return
        refused = self.field.move(player.slot, x, y)    # the field holds where it is now
        if refused:
            self.rooms.refusals.count("move", refused)

    def on_tick(self, dt: float) -> None:
        """Every monster wanders: a step of at most max-step, inside the field."""
        field, rng = self.field, self.rng
        reach = field.max_step * 0.99           # float32 rounding stays within max-step
        size = field.size
        for slot in self.monsters:
            x, y = field.position(slot)
            angle = rng.uniform(0, 2 * math.pi)
            step = rng.uniform(0, reach)
            field.move(slot, min(max(x + step * math.cos(angle), 0.0), size),
                       min(max(y + step * math.sin(angle), 0.0), size))

    def on_dispose(self) -> None:
        if self.monsters:
            self.rooms.player_ids.release(tuple(self.monsters.values()), heard=True)
            self.monsters = {}
