"""netcore-dummy --scenario field: walkers that check every field packet in C
(netcore_dummy.walk) catch each rule a server could break, and a run against
netcore-server walks clean."""
import json
import subprocess
import sys

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.Struct_pb2 import Player
from netcore_packets.client_dispatch import PACKET_IDS

from netcore_dummy.walk import VIOLATIONS, FieldTally, Walker

from game_support import ServerProcess

MOVE, SPAWN, DESPAWN = PACKET_IDS["S_MOVE"], PACKET_IDS["S_SPAWN"], PACKET_IDS["S_DESPAWN"]


def walker(radius=50.0, me=1, at=(100.0, 100.0)):
    w = Walker(FieldTally(radius))
    w.start(me, *at)
    return w


def spawn(*players):
    return SPAWN, pb.S_SPAWN(players=[Player(id=i, x=x, y=y) for i, x, y in players])


def move(i, x, y):
    return MOVE, pb.S_MOVE(playerId=i, x=x, y=y)


def despawn(*ids):
    return DESPAWN, pb.S_DESPAWN(playerIds=list(ids))


def feed(w, *packets):
    for pkt_id, msg in packets:
        w.feed(pkt_id, msg.SerializeToString())
    return {k: v for k, v in w.tally.violations().items() if v}


def test_a_correct_stream_is_clean_and_builds_the_view():
    w = walker()
    assert w.move(105.0, 100.0)
    assert not w.move(110.0, 100.0)                  # one in flight
    assert feed(w, move(1, 105, 100), spawn((2, 120, 100), (3, 90, 90)), move(2, 125, 100),
                despawn(3), spawn((3, 80, 80))) == {}
    assert w.position() == (105.0, 100.0) and not w.in_flight
    assert w.seen() == {2: (125.0, 100.0), 3: (80.0, 80.0)}
    t = w.tally
    assert (t.moves_sent, t.acked, t.seen, t.spawned, t.despawned) == (1, 1, 1, 3, 1)


def test_a_correction_to_the_unchanged_position_is_no_violation():
    w = walker()
    w.move(190.0, 100.0)                             # too far: the server corrects it
    assert feed(w, move(1, 100, 100)) == {}
    assert w.tally.corrected == 1 and w.position() == (100.0, 100.0)


@pytest.mark.parametrize("packets, kind", [
    ([spawn((1, 100, 100))], "spawn_self"),
    ([spawn((2, 101, 100)), spawn((2, 101, 100))], "spawn_twice"),
    ([spawn((2, 151, 100))], "spawn_far"),
    ([move(2, 101, 100)], "move_unseen"),
    ([spawn((2, 101, 100)), move(2, 151, 100)], "move_far"),
    ([despawn(2)], "despawn_unseen"),
    ([move(1, 101, 100)], "ack_unasked"),
])
def test_each_rule_a_server_breaks_is_caught(packets, kind):
    assert feed(walker(), *packets) == {kind: 1}


def test_an_answer_to_neither_the_target_nor_the_old_place_is_wrong():
    w = walker()
    w.move(105.0, 100.0)
    assert feed(w, move(1, 103, 100)) == {"ack_wrong": 1}


@pytest.mark.parametrize("pkt_id, payload", [
    (MOVE, b"\x15\x00\x00"), (SPAWN, b"\x0a\x05\x08"), (DESPAWN, b"\x0a\x02\xff"),
    (MOVE, b"\x0f"),
])
def test_a_packet_that_does_not_parse_is_malformed(pkt_id, payload):
    w = walker()
    w.feed(pkt_id, payload)
    assert {k: v for k, v in w.tally.violations().items() if v} == {"malformed": 1}
    assert set(VIOLATIONS) == set(w.tally.violations())


def test_unknown_fields_and_unpacked_ids_are_read_as_protobuf_reads_them():
    w = walker()
    extra = pb.S_SPAWN(players=[Player(id=2, name="Orc", playerType=4, x=101, y=100)])
    w.feed(SPAWN, extra.SerializeToString() + b"\x10\x07")      # unknown field 2
    w.feed(DESPAWN, b"\x08\x02")                                 # one id, unpacked
    assert {k: v for k, v in w.tally.violations().items() if v} == {} and w.seen() == {}


@pytest.mark.parametrize("npcs", [0, 10])
def test_walkers_against_netcore_server_walk_clean(tmp_path, loop_kind, npcs):
    with ServerProcess(tmp_path, loop_kind, "--field-size", "200", "--view-radius", "30",
                       "--npcs", str(npcs), "--tick-rate", "20") as server:
        out = subprocess.run(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(server.port),
             "--scenario", "field", "--clients", "60", "--rooms", "2", "--duration", "2",
             "--field-size", "200", "--view-radius", "30", "--json", "--loop", loop_kind],
            capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    field = report["field"]
    assert report["ok"] and report["in_game"] == 60
    assert field["moves"]["acked"] > 0 and field["moves"]["unanswered"] == 0
    assert field["seen"]["moves"] > 0 and field["seen"]["spawned"] > 0
    assert not any(field["violations"].values())
    assert field["ack_ms"]["p99"] > 0 and field["observers_ms"]["p99"] > 0


def test_a_server_with_another_radius_is_caught(tmp_path, loop_kind):
    """The walkers check distances with their own --view-radius: a server
    that shows them farther entities breaks the rule they were told."""
    with ServerProcess(tmp_path, loop_kind, "--field-size", "100", "--view-radius", "60") as server:
        out = subprocess.run(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(server.port),
             "--scenario", "field", "--clients", "30", "--duration", "1",
             "--field-size", "100", "--view-radius", "10", "--json", "--loop", loop_kind],
            capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    violations = json.loads(out.stdout)["field"]["violations"]
    assert violations["spawn_far"] > 0
