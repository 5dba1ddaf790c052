"""The rolling restart's handover (netcore_server.restart) and the room
hooks it runs: plain data only, in and out; a room whose on_handover fails
still goes over with its members and starts its own state afresh. The whole
restart, over real processes: tests/cluster/test_cluster_rolling.py."""
import asyncio
import pickle
import types

import pytest

from netcore_server import Room
from netcore_server.player import Player
from netcore_server.restart import VERSION, check_plain, read, snapshot, take_over, write
from netcore_server.room import Rooms


@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, "text", b"raw", [1, (2, "x")], {"a": {1: [b"", None]}},
])
def test_plain_data_passes(value):
    check_plain(value, "here")


@pytest.mark.parametrize("value, named", [
    (object(), "object"), ({1, 2}, "set"), ([1, {"k": Player(1, 0, "p", 1)}], "Player"),
    (bytearray(b"x"), "bytearray"),
])
def test_anything_else_is_refused_with_what_it_is(value, named):
    with pytest.raises(TypeError, match=f"here: {named} is not plain data"):
        check_plain(value, "here")


def test_the_file_round_trips_plain_data_and_is_private(tmp_path):
    path = str(tmp_path / "w-0.handoff")
    state = {"version": VERSION, "rooms": [{"id": 1, "state": {"chats": 7}}], "kept": b"\x06\0"}
    write(path, state)
    assert read(path) == state
    assert (tmp_path / "w-0.handoff").stat().st_mode & 0o777 == 0o600


def test_a_file_that_names_a_class_is_refused(tmp_path):
    # Whatever wrote it, loading it can run no code: only plain data loads.
    path = tmp_path / "w-0.handoff"
    path.write_bytes(pickle.dumps({"version": VERSION, "x": types.SimpleNamespace(a=1)}))
    with pytest.raises(pickle.UnpicklingError, match="only plain data"):
        read(str(path))


@pytest.mark.parametrize("state", [{"version": VERSION + 1, "slot": "w-0"},
                                   {"version": VERSION, "slot": "w-1"}])
def test_a_handover_of_another_version_or_slot_is_refused(tmp_path, state):
    path = str(tmp_path / "w-0.handoff")
    write(path, state)
    server = types.SimpleNamespace(link=types.SimpleNamespace(slot="w-0"))
    with pytest.raises(ValueError, match=f"not {VERSION} for w-0"):
        take_over(server, path)


class Counting(Room):
    kind = "counting"
    tick_rate = 0

    def on_create(self):
        self.chats, self.how = 0, "created"

    def on_restore(self, state):
        self.chats, self.how = state["chats"], "restored"


def test_a_room_is_restored_with_its_members_and_its_state_or_afresh(run):
    async def go():
        rooms = Rooms(Counting)
        players = [Player(i, 0, f"p{i}", 1) for i in (5, 6)]
        carried = rooms.restore(1, players, {"chats": 41}, 4, carried=True)
        fresh = rooms.restore(2, [Player(7, 0, "p7", 1)], None, 0, carried=False)
        await rooms.drain()
        assert (carried.how, carried.chats, sorted(carried.players)) == ("restored", 41, [5, 6])
        assert all(p.room is carried for p in players)
        assert carried.ticker is not None and carried.tick_rate == 4    # the rate is carried
        assert (fresh.how, fresh.chats, list(fresh.players)) == ("created", 0, [7])
        rooms.close()
    run(go())


class Careless(Counting):
    def on_handover(self):
        if self.room_id == 2:
            raise RuntimeError("forgot something")
        if self.room_id == 3:
            return {"when": asyncio.get_running_loop()}     # not plain data
        return {"chats": self.chats}


def test_a_room_whose_on_handover_fails_goes_over_to_start_afresh(run, caplog):
    async def go():
        rooms = Rooms(Careless)
        for room_id in (1, 2, 3):
            rooms.restore(room_id, [Player(room_id, 0, "p", 1)], {"chats": room_id}, 0)
        await rooms.drain()
        server = types.SimpleNamespace(
            rooms=rooms, holds=types.SimpleNamespace(sessions=lambda: []),
            link=types.SimpleNamespace(slot="w-0", export_state=lambda: {"epoch": 9}))
        state = snapshot(server)
        rooms.close()
        return {r["id"]: (r["carried"], r["state"]) for r in state["rooms"]}
    assert run(go()) == {1: (True, {"chats": 1}), 2: (False, None), 3: (False, None)}
    assert "room 2 (counting): on_handover failed" in caplog.text
    assert "room 3 (counting): on_handover failed" in caplog.text
