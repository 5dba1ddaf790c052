"""A resumable session's sent log (netcore.sentlog, Session.keep_sent/hold/
resume_from): every packet queued is numbered and kept within a bound, a
held session keeps what it is sent, and a new session takes the log over and
is sent exactly the packets after a count, whole runs split where needed."""
import asyncio

import pytest

import netcore
from netcore import make_packet, send_to_all_coalesced

from support import FakeTransport, Recorder, feed


def session():
    s = Recorder()
    t = FakeTransport()
    s.connection_made(t)
    return s, t


def chat(i, size=0):
    return make_packet(1005, b"%d" % i + b"." * size)


def wire(t):
    """The packets a transport was written, as (id, payload)."""
    data, out = b"".join(t.written), []
    while data:
        n = int.from_bytes(data[:2], "little")
        out.append((int.from_bytes(data[2:4], "little"), data[4:n]))
        data = data[n:]
    return out


def test_numbering_starts_at_keep_sent_and_counts_every_packet(run):
    async def go():
        s, t = session()
        s.send(chat(-1))                                # before: not numbered
        assert (s.keep_bytes, s.packets_numbered) == (0, 0)
        s.keep_sent(1 << 16)
        for i in range(5):
            s.send(chat(i))
        assert (s.packets_numbered, s.first_kept) == (5, 1)
        assert s.kept_bytes == sum(len(chat(i)) for i in range(5))
        await asyncio.sleep(0)                          # written, and still kept
        assert len(wire(t)) == 6 and s.kept_bytes > 0
        s.stop_keeping()
        assert (s.keep_bytes, s.kept_bytes, s.packets_numbered) == (0, 0, 0)
    run(go())


def test_a_live_session_lets_its_oldest_packets_go_past_the_bound(run):
    async def go():
        s, _ = session()
        s.keep_sent(100)
        size = len(chat(0, 20))                         # 27 bytes
        for i in range(10):
            s.send(chat(i, 20))
        assert s.packets_numbered == 10
        assert s.kept_bytes <= 100 and s.kept_bytes == (100 // size) * size
        assert s.first_kept == 10 - 100 // size + 1
    run(go())


def test_a_new_session_gets_exactly_the_packets_after_the_count_then_goes_on(run):
    async def go():
        old, _ = session()
        old.keep_sent(1 << 16)
        for i in range(8):
            old.send(chat(i))
        new, t = session()
        new.send(make_packet(1011, b"resumed"))         # S_RESUME: not numbered
        assert new.resume_from(old, 3) == 5
        new.send(chat(8))
        await asyncio.sleep(0)
        assert wire(t) == [(1011, b"resumed")] + [(1005, b"%d" % i) for i in range(3, 9)]
        assert (new.packets_numbered, new.first_kept) == (9, 1)
        assert old.keep_bytes == 0 and old.kept_bytes == 0
        # Everything received: nothing to send again, numbering goes on.
        newer, t2 = session()
        assert newer.resume_from(new, 9) == 0
        newer.send(chat(9))
        await asyncio.sleep(0)
        assert wire(t2) == [(1005, b"9")] and newer.packets_numbered == 10
    run(go())


def test_a_coalesced_run_is_one_entry_and_is_split_at_the_count(run):
    async def go():
        old, _ = session()
        old.keep_sent(1 << 16)
        targets = [old]
        for i in range(6):                              # one job slice's broadcasts
            send_to_all_coalesced(targets, chat(i))
        assert old.packets_numbered == 0                # the run is still open
        old.send(chat(6))                               # closes it: one entry, then this
        assert old.kept_bytes == sum(len(chat(i)) for i in range(7))
        assert old.packets_numbered == 7
        new, t = session()
        assert new.resume_from(old, 4) == 3             # packets 5, 6 of the run, and 7
        await asyncio.sleep(0)
        assert wire(t) == [(1005, b"4"), (1005, b"5"), (1005, b"6")]
    run(go())


@pytest.mark.parametrize("received, error", [
    (8, "8 received, but 7 were sent"),
    (2 ** 64 - 1, "were sent"),
])
def test_a_count_past_what_was_sent_is_refused_and_changes_nothing(run, received, error):
    async def go():
        old, _ = session()
        old.keep_sent(1 << 16)
        for i in range(7):
            old.send(chat(i))
        new, _ = session()
        with pytest.raises(ValueError, match=error):
            new.resume_from(old, received)
        assert (old.packets_numbered, old.first_kept, old.keep_bytes) == (7, 1, 1 << 16)
        assert new.packets_numbered == 0 and new.keep_bytes == 0
    run(go())


def test_a_gap_no_longer_kept_is_refused(run):
    async def go():
        old, _ = session()
        old.keep_sent(64)
        for i in range(10):
            old.send(chat(i, 20))
        new, _ = session()
        first = old.first_kept
        assert first > 2
        with pytest.raises(ValueError, match=f"packet {first - 1} is no longer kept"):
            new.resume_from(old, first - 2)
        assert new.resume_from(old, first - 1) == 10 - first + 1
        with pytest.raises(ValueError, match="nothing is kept"):
            new.resume_from(old, 0)                     # old's log is gone to new
    run(go())


class Held(Recorder):
    def __init__(self):
        super().__init__()
        self.overflowed = asyncio.Event()

    def on_hold_overflow(self):
        self.overflowed.set()


def test_a_held_session_keeps_what_it_is_sent_and_drops_only_what_came_before(run):
    async def go():
        s = Held()
        t = FakeTransport()
        s.connection_made(t)
        s.keep_sent(100)
        for i in range(3):
            s.send(chat(i, 22))                         # 3 x 27 = 81 bytes before the hold
        s.connection_lost(ConnectionResetError("reset"))
        s.hold()
        assert s.held and not s.connected
        s.send(chat(3, 22))                             # 108: the oldest (before) goes
        send_to_all_coalesced([s], chat(4, 22))         # a held member of a broadcast
        await asyncio.sleep(0)                          # the flusher closes the run
        assert (s.packets_numbered, s.first_kept, s.kept_bytes) == (5, 3, 81)
        assert not s.overflowed.is_set()
        s.send(chat(5, 22))
        s.send(chat(6, 22))                             # 3 and 4 and 5 and 6: 108 of its own
        assert s.keep_bytes == 0 and s.kept_bytes == 0 and s.packets_numbered == 0
        await asyncio.wait_for(s.overflowed.wait(), 5)
        assert t.written == []                          # a held session writes nothing
    run(go())


def test_hold_needs_numbering_and_keep_sent_a_bound(run):
    async def go():
        s, _ = session()
        with pytest.raises(ValueError, match="keeps nothing"):
            s.hold()
        with pytest.raises(ValueError, match="max_bytes"):
            s.keep_sent(0)
        assert isinstance(s, netcore.PacketSession)
    run(go())


# -- a rolling restart: the peer told by our FIN, and a hold carried over ------

def test_shut_output_sends_our_fin_and_still_handles_what_the_peer_sends(run):
    # A worker handing its players over (netcore_server.restart): what was
    # queued goes, then the FIN; the client's packets until it closes are
    # still handled (none lost), and what is queued later is kept, never written.
    async def go():
        s, t = session()
        s.keep_sent(1 << 16)
        s.send(chat(0))
        s.send(chat(1))
        s.shut_output()
        assert t.eof_written and s.output_shut and s.connected
        assert wire(t) == [(1005, b"0"), (1005, b"1")]
        s.send(chat(2))
        await asyncio.sleep(0)
        assert wire(t) == [(1005, b"0"), (1005, b"1")]     # kept, not written
        assert s.packets_numbered == 3
        feed(s, bytes(make_packet(1004, b"sent before it saw the FIN")))
        assert s.packets == [(1004, b"sent before it saw the FIN")]
        s.shut_output()                                     # once is enough
    run(go())


def test_shut_output_closes_a_transport_that_cannot_half_close(run):
    async def go():
        s, t = session()
        t.can_write_eof = lambda: False
        s.send(chat(0))
        s.shut_output()
        assert t.closed and not s.output_shut and not s.connected
        assert wire(t) == [(1005, b"0")]
    run(go())


def test_a_hold_carried_to_another_session_object_resumes_as_the_original(run):
    # restart.py moves a hold between processes as (first_kept, kept_run):
    # restored, it is held, numbers on, and replays exactly what the
    # original would have, a coalesced run split at the count.
    async def go():
        old, _ = session()
        old.keep_sent(1 << 16)
        old.send(chat(0))
        for i in range(1, 5):
            send_to_all_coalesced([old], chat(i))
        old.send(chat(5))
        old.hold()
        carried = Recorder()
        carried.restore_kept(old.first_kept, netcore.copy_frames(old.kept_run()), 1 << 16)
        assert (carried.held, carried.packets_numbered, carried.first_kept,
                carried.kept_bytes) == (True, 6, 1, old.kept_bytes)
        carried.send(chat(6))                               # held: numbered and kept
        assert carried.packets_numbered == 7
        new, t = session()
        assert new.resume_from(carried, 2) == 5
        await asyncio.sleep(0)
        assert wire(t) == [(1005, b"%d" % i) for i in range(2, 7)]
        assert new.packets_numbered == 7
    run(go())


def test_a_carried_hold_with_nothing_kept_numbers_on_from_its_count(run):
    async def go():
        carried = Recorder()
        carried.restore_kept(41, None, 1 << 10)             # 40 sent, all of them read
        assert (carried.packets_numbered, carried.first_kept, carried.kept_bytes) == (40, 41, 0)
        carried.send(chat(41))
        new, t = session()
        assert new.resume_from(carried, 40) == 1
        await asyncio.sleep(0)
        assert wire(t) == [(1005, b"41")]
        live, _ = session()
        with pytest.raises(ValueError):
            live.restore_kept(1, None, 1 << 10)             # a connected session: no
        with pytest.raises(ValueError):
            Recorder().restore_kept(0, None, 1 << 10)        # packets are numbered from 1
    run(go())
