"""A rolling restart's successor, piece by piece (netcore_cluster.link,
"Successors"): what it hears before it takes over is kept and handled
after, what its predecessor handled is a repeat, and the two subscriptions
it has for a moment deliver one room's messages in two orders, which it
puts back in one. The whole restart, over real processes:
test_cluster_rolling.py."""
import asyncio
import json
import types

import pytest

from netcore import make_packet

from netcore_cluster import wire
from netcore_cluster.link import ClusterLink, read_address
from netcore_cluster.placement import ClusterMap

EPOCH = 77
ROOM = 5


def link():
    cmap = ClusterMap.single("t", 2)
    lk = ClusterLink(cmap, "t-0", [], epoch=11)
    lk.placement = types.SimpleNamespace(owner=lambda room: "t-1")
    lk.known["t-1"] = EPOCH
    lk.subscribe = lk.unsubscribe = lambda room: None
    return lk


def remote_room(lk, expected):
    """A room of t-1 that t-0's gateway has seen up to message expected - 1."""
    rr = lk.gateway.room(ROOM)
    rr.stream_key, rr.expected, rr.packets_seen = (EPOCH, 1), expected, expected - 1
    rr.got = []
    rr.fan_out = lambda buf: rr.got.append(bytes(buf)[4:].decode()) or 1
    rr.lost = lambda packets: rr.got.append(f"lost {packets}")
    return rr


def message(seq, text):
    packet = bytes(make_packet(1005, text.encode()))
    return (wire.down_header(ROOM, EPOCH, 1, seq, seq - 1)
            + wire.data_segment_head(1, len(packet)) + packet)


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:7777", ("127.0.0.1", 7777)), ("[::1]:80", ("::1", 80)),
    ("game-3.example.net:65535", ("game-3.example.net", 65535)),
])
def test_a_machine_says_where_its_game_port_is(text, address):
    # In every control message (--advertise-host): where a resume that
    # lands on another machine is relayed (netcore_server.relay). The bad
    # ones: test_cluster_forged.py.
    assert read_address(text) == address
    lk = link()
    lk._on_ctl(json.dumps({"op": "hello", "slot": "t-1", "epoch": EPOCH,
                           "cluster": str(lk.cmap), "addr": text}).encode())
    assert lk.addresses == {"t-1": address}


def test_a_message_seen_already_is_a_repeat_not_a_gap():
    lk = link()
    rr = remote_room(lk, expected=4)
    for seq in (2, 3, 4, 3, 5):
        lk.gateway.on_stream(message(seq, f"m{seq}"))
    assert rr.got == ["m4", "m5"]
    assert lk.stats["stream_repeats"] == 3 and lk.stats["stream_gaps"] == 0


def test_while_transitioning_a_message_ahead_waits_for_the_ones_before_it():
    lk = link()
    rr = remote_room(lk, expected=4)
    lk.transitioning = True
    for seq in (6, 5, 4, 5, 7):         # the room's own subscription ran ahead
        lk.gateway.on_stream(message(seq, f"m{seq}"))
    assert rr.got == ["m4", "m5", "m6", "m7"] and rr.early == {}
    assert lk.stats["stream_gaps"] == 0


def test_what_still_waits_when_the_transition_ends_is_a_gap():
    lk = link()
    rr = remote_room(lk, expected=4)
    lk.transitioning = True
    lk.gateway.on_stream(message(6, "m6"))
    assert rr.got == [] and set(rr.early) == {6}
    lk.transitioning = False
    lk.gateway.end_reordering()
    assert rr.got == ["lost 2", "m6"] and lk.stats["stream_gaps"] == 1


def test_out_of_order_outside_a_transition_is_a_gap_at_once():
    lk = link()
    rr = remote_room(lk, expected=4)
    lk.gateway.on_stream(message(6, "m6"))
    assert rr.got == ["lost 2", "m6"]


def test_a_successor_keeps_what_it_hears_and_a_frozen_worker_handles_nothing():
    lk = link()
    handled = []
    msg = types.SimpleNamespace(subject="netcore.w.t-0", data=b"op")
    lk._heard = []
    lk._handle(handled.append, msg)
    assert handled == [] and lk._heard == [(handled.append, "netcore.w.t-0", b"op")]
    lk.max_outbox_bytes = 3                 # bounded: past it, dropped and counted
    lk._handle(handled.append, types.SimpleNamespace(subject="x", data=b"more"))
    assert len(lk._heard) == 1 and lk.stats["heard_dropped"] == 1
    lk._tasks = []
    lk.take_over()                          # now handled, in the order heard
    assert handled == [b"op"] and lk._heard is None
    lk.freeze()
    lk._handle(handled.append, msg)
    assert handled == [b"op"] and lk.stats["left_to_successor"] == 1


def test_the_owner_side_carries_numberings_and_stream_positions():
    # Exported by the predecessor, imported by the successor: the ops it
    # accepted stay repeats there, and a room's stream goes on at its
    # message number, not at 1.
    async def go():
        old, new = link(), link()
        room = types.SimpleNamespace(room_id=ROOM, link=None)
        stream = old.owner.attach(room)
        stream.seq, stream.packets, stream.sent = 41, 90, 88
        old.owner.applied[("t-1", EPOCH)] = {ROOM: [1000, 1010, 1010]}
        state = old.export_state()
        new.import_state(state, {})
        assert new.epoch == old.epoch and new.known["t-1"] == EPOCH
        carried = new.owner.attach(types.SimpleNamespace(room_id=ROOM, link=None))
        assert (carried.incarnation, carried.seq, carried.packets, carried.sent) == \
            (stream.incarnation, 41, 90, 88)
        assert new.owner.applied[("t-1", EPOCH)][ROOM] == [1000, 1010, 1010]
        assert new.owner.held is None               # no rebuild barrier: nothing changed
        fresh = new.owner.attach(types.SimpleNamespace(room_id=ROOM + 1, link=None))
        assert fresh.seq == 0 and fresh.incarnation == stream.incarnation + 1
    asyncio.run(go())


# -- a successor in one process: a field room and its holds, carried ------------------

from netcore_packets import Protocol_pb2 as pb  # noqa: E402

from netcore_game.server import GameServer, ServerConfig  # noqa: E402
from netcore_server.db import SQLiteDatabase  # noqa: E402

from cluster_support import PAIR_MAP, NatsProcess, Pair, wait_until  # noqa: E402
from game_support import leave  # noqa: E402
from resume_support import ResumeClient, dial  # noqa: E402
from test_field_game import FieldClient  # noqa: E402


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    with NatsProcess(tmp_path_factory.mktemp("nats")) as server:
        yield server


class Walker(FieldClient, ResumeClient):
    """A field client that counts what it receives, for its resume."""

    def __init__(self, received=None):
        super().__init__()
        self.counting = received is not None
        self.received = received or 0


async def resumed(port, old):
    """old's player on a new connection: C_RESUME, then its view carries on."""
    new = await dial(port, lambda: Walker(old.received))
    new.send_pkt(pb.C_RESUME(token=old.token, received=old.received))
    answer = await new.expect("S_RESUME")
    assert answer.success and answer.playerId == old.my_id
    new.view, new.my_id, new.position = old.view, old.my_id, old.position
    return new


def test_a_successor_goes_on_with_the_field_and_the_holds_as_they_were(run, nats, tmp_path):
    # w-0 owns the room: two resumable players there, two on w-1, three
    # monsters on the room's tick. w-0 hands over to a successor; its
    # players resume there. Nobody was sent a spawn or a despawn, every view
    # is still exact, moves and chats go on both ways, and the successor is
    # the same incarnation.
    config = ServerConfig(port=0, field_size=100.0, view_radius=200.0, npcs=3)

    async def go():
        async with Pair(nats, tmp_path, config=config) as pair:
            room = pair.owner_of["w-0"]
            here = [await dial(pair.servers["w-0"].port, Walker) for _ in range(2)]
            for c in here:
                c.token = (await c.enter_resumable(room)).resumeToken
            there = [await dial(pair.servers["w-1"].port, Walker) for _ in range(2)]
            for c in there:
                assert (await c.login()).success and (await c.enter(0, room)).success
            everyone = here + there
            for c in everyone:
                await c.until(lambda c=c: len(c.view) == 6)         # 3 players, 3 monsters
            told = [c.order.count("S_SPAWN") + c.order.count("S_DESPAWN") for c in there]

            successor = GameServer(config, SQLiteDatabase(tmp_path / "w-0b.db", scrypt_n=2 ** 10),
                                   link=pair.link("w-0").__class__(
                                       PAIR_MAP, "w-0", [nats.url], rebuild_timeout=0.5),
                                   player_id_base=3 << 32)
            await successor.start(successor=True)
            old_epoch = pair.link("w-0").epoch
            path = str(tmp_path / "w-0.handoff")
            counts = await pair.servers["w-0"].hand_off(path)
            pair.servers["w-0"] = successor
            assert (counts["rooms"], counts["holds"], counts["closed"]) == (1, 2, 0)
            await successor.take_over(path)
            assert successor.link.epoch == old_epoch

            for c in here:
                await c.wait_closed()                   # our FIN: they closed
            here = [await resumed(successor.port, c) for c in here]
            everyone = here + there
            walker, other = there[0], here[0]
            await walker.walk(3, -2)
            await other.walk(-2, 3)
            for c in everyone:
                for mover in (walker, other):
                    if c is not mover:
                        await c.until(lambda c=c, m=mover: c.view[m.my_id][:2] == m.position)
            there[1].send_pkt(pb.C_CHAT(msg="after"))
            for c in everyone:
                await c.until(lambda c=c: (there[1].my_id, "after") in c.chats)
            for c in everyone:
                assert c.violations == [] and len(c.view) == 6
                assert c.chats.count((there[1].my_id, "after")) == 1
            assert [c.order.count("S_SPAWN") + c.order.count("S_DESPAWN")
                    for c in there] == told
            await wait_until(lambda: all(c.order.count("S_MOVE") > 0 for c in everyone),
                             "monster moves")
            await leave(*everyone)
    run(go(), timeout=60)
