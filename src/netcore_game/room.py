"""The chat room: every chat reaches everyone in the room, the sender included.

Chat stands in for every game packet (move, attack, pick-up): received,
checked by its handler, run as a job of the room, fanned out to those who
should see it, serialized once whatever the room's size.
"""
from __future__ import annotations

from netcore_packets.Protocol_pb2 import S_CHAT
from netcore_packets.server_dispatch import make_send_buffer

from netcore_server import SYSTEM_PLAYER_ID, Room, client_job


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
