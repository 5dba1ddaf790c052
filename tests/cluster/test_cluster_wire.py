"""The cluster's pure parts: who owns a room, and the two message formats."""
import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcore import make_packet
from netcore_cluster import wire
from netcore_cluster.placement import ClusterMap, Placement


def test_every_worker_computes_the_same_owner_whatever_the_map_order():
    a = Placement(ClusterMap.parse("b=3,a=2"))
    b = Placement(ClusterMap.from_dict({"a": 2, "b": 3}))
    assert a.cmap.slots == ("a-0", "a-1", "b-0", "b-1", "b-2")
    assert [a.owner(r) for r in range(2000)] == [b.owner(r) for r in range(2000)]


def test_rooms_spread_over_every_slot():
    p = Placement(ClusterMap.single("n", 4))
    counts = collections.Counter(p.owner(r) for r in range(4000))
    assert set(counts) == {"n-0", "n-1", "n-2", "n-3"}
    assert min(counts.values()) > 800            # about 1000 each


def test_adding_a_node_moves_only_the_rooms_its_slots_win():
    before = Placement(ClusterMap.parse("a=2,b=2"))
    after = Placement(ClusterMap.parse("a=2,b=2,c=2"))
    moved = [r for r in range(6000) if before.owner(r) != after.owner(r)]
    assert all(after.owner(r).startswith("c-") for r in moved)
    assert 1500 < len(moved) < 2500             # about a third


@pytest.mark.parametrize("text, error", [
    ("a", "expected node=workers"), ("a=0", "workers must be >= 1"), ("a=x", "expected"),
    ("a=1,a=2", "given twice"), ("a.b=1", "node id"), ("=1", "node id"),
    ("a=2000", "at most 1024"),
])
def test_bad_cluster_maps_are_refused_with_a_reason(text, error):
    with pytest.raises(ValueError, match=error):
        ClusterMap.parse(text)


def test_slot_indexes_are_unique_and_dense():
    cmap = ClusterMap.parse("x=2,y=3")
    assert [cmap.slot_index(s) for s in cmap.slots] == list(range(5))


@given(st.lists(st.tuples(st.sampled_from([wire.JOIN, wire.LEAVE, wire.JOB]),
                          st.integers(0, 2**32 - 1), st.integers(1, 2**32 - 1),
                          st.integers(0, 2**64 - 1), st.binary(max_size=64)), max_size=20),
       st.integers(1, 2**64 - 1), st.integers(1, 2**64 - 1))
def test_upstream_round_trip(ops, to_epoch, from_epoch):
    data = wire.up_header(to_epoch, from_epoch, "node-3") + b"".join(wire.up_op(*op) for op in ops)
    got_to, got_from, slot, got_ops = wire.read_up(data)
    assert (got_to, got_from, slot) == (to_epoch, from_epoch, "node-3")
    assert list(got_ops) == ops


def test_downstream_round_trip_keeps_segment_order():
    frames = bytes(make_packet(1005, b"ab")) + bytes(make_packet(1005, b"cde"))
    data = (wire.down_header(7, 99, 3, 12, 40) + wire.data_segment_head(2, len(frames)) + frames
            + wire.member_segment(wire.JOINED, 5, 77, "a-1")
            + wire.ack_segment(9, 77, "a-1")
            + wire.unicast_segment(5, 1, bytes(make_packet(1003, b"")))
            + wire.member_segment(wire.LEFT, 5, 77, "a-1"))
    room, epoch, inc, seq, before, segs = wire.read_down(data)
    assert (room, epoch, inc, seq, before) == (7, 99, 3, 12, 40)
    segs = [tuple(bytes(x) if isinstance(x, memoryview) else x for x in s) for s in segs]
    assert segs == [(wire.DATA, 2, frames), (wire.JOINED, 5, 77, "a-1"), (wire.ACK, 9, 77, "a-1"),
                    (wire.UNICAST, 5, 1, bytes(make_packet(1003, b""))),
                    (wire.LEFT, 5, 77, "a-1")]


@given(st.binary(max_size=80))
def test_garbage_is_a_wire_error_never_another_exception(data):
    for reader in (lambda d: list(wire.read_up(d)[3]), lambda d: list(wire.read_down(d)[5]),
                   wire.decode_job):
        try:
            reader(data)
        except wire.WireError:
            pass


@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                          st.floats(allow_nan=False), st.text(), st.binary()), max_size=6))
def test_job_arguments_round_trip(args):
    assert wire.decode_job(wire.encode_job("chat", tuple(args))) == ("chat", tuple(args))


def test_a_job_argument_of_another_type_is_refused_at_the_gateway():
    with pytest.raises(TypeError, match="chat got list"):
        wire.encode_job("chat", ([1],))


@pytest.mark.parametrize("kind", [wire.JOINED, wire.LEFT, wire.ACK])
def test_a_segment_cut_before_its_name_is_a_wire_error(kind):
    whole = (wire.member_segment(kind, 5, 7, "a-1") if kind != wire.ACK
             else wire.ack_segment(9, 7, "a-1"))
    data = wire.down_header(1, 2, 3, 4, 0) + whole[:-4]      # no name length, no name
    with pytest.raises(wire.WireError):
        list(wire.read_down(data)[5])
