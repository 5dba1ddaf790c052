"""What the coverage-guided fuzz targets (tests/fuzz/fuzz_*.py) found, each
as a plain test of the behaviour it broke. Their inputs are kept in the
targets' corpora too, so the replay in test_fuzz.py runs them again."""
import pytest

from netcore_cluster import wire


# fuzz_wire.py, within 300 runs: a slot name with a byte >= 0x80 in a JOINED,
# LEFT, ACK or REFUSED segment (or an upstream header) raised
# UnicodeDecodeError from the readers, which promise WireError for anything
# that does not parse.
@pytest.mark.parametrize("message", [
    wire.up_header(1, 1, "node-1").replace(b"node-1", b"n\xf3de-1"),
    wire.down_header(1, 1, 0, 1, 0)
    + wire.member_segment(wire.JOINED, 5, 1, "node-2").replace(b"node-2", b"n\xf3de-2"),
    wire.down_header(1, 1, 0, 1, 0) + wire.ack_segment(1, 1, "x-1").replace(b"x-1", b"\xff-1"),
])
def test_a_slot_name_that_is_not_ascii_is_a_wire_error(message):
    reader = wire.read_up if message[:1] == b"U" else wire.read_down
    with pytest.raises(wire.WireError, match="not ASCII"):
        parts = reader(message)
        list(parts[-1])


def test_a_job_name_that_is_not_ascii_is_a_wire_error():
    with pytest.raises(wire.WireError):
        wire.decode_job(b"\x02\xc3\xa9")
