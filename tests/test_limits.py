"""Limits on hostile clients: the inbound packet rate, login and idle deadlines,
the session cap, running out of file descriptors."""
import asyncio
import math
import sys
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netcore
from netcore import ClientService, DisconnectReason, ServerService
from netcore.session import rate_limit_admits
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import make_send_buffer

from netcore_game.cli import parse_args
from game_support import ServerProcess, connect, in_game, leave
from support import FakeTransport, Recorder, ServerSessions, packet, raw_client

T0 = 10 ** 15          # a monotonic clock reading well after boot, in ns


# -- the token bucket's arithmetic -----------------------------------------------

def reference_admits(interval_ns, burst, reads):
    """An independent token bucket in exact arithmetic: `burst` tokens, one more
    every interval_ns, one per packet; the first packet without one ends it."""
    tokens, last, closed, out = Fraction(burst), None, False, []
    for now, n in reads:
        if last is not None:
            tokens = min(Fraction(burst), tokens + Fraction(now - last, interval_ns))
        last = now
        k = 0
        while not closed and k < n:
            if tokens >= 1:
                tokens -= 1
                k += 1
            else:
                closed = True
        out.append(k)
    return out


@settings(max_examples=300, deadline=None)
@given(interval=st.integers(1, 10 ** 10), burst=st.integers(1, 60),
       reads=st.lists(st.tuples(st.floats(0, 3), st.integers(0, 80)), max_size=25))
def test_the_bucket_agrees_with_an_exact_token_bucket(interval, burst, reads):
    # Gaps in units of the time a full bucket takes to refill, so every regime
    # (starved, partly refilled, full) comes up whatever the interval.
    now, timed = T0, []
    for gap, n in reads:
        now += int(gap * interval * burst)
        timed.append((now, n))
    assert rate_limit_admits(1e9 / interval, burst, timed) == reference_admits(
        interval, burst, timed)


def test_a_burst_then_the_rate_and_nothing_after_the_first_refusal():
    second = 10 ** 9
    assert rate_limit_admits(100, 200, [(T0, 1000)]) == [200]
    # Empty after its burst, the bucket gives 100 a second.
    assert rate_limit_admits(100, 200, [(T0, 200), (T0 + second, 150)]) == [200, 100]
    # Refused once is closed: a full bucket later admits nothing.
    assert rate_limit_admits(100, 200, [(T0, 201), (T0 + 60 * second, 5)]) == [200, 0]
    # A player's pace, 1/s for an hour or 100/s for a minute, never meets the limit.
    hour = [(T0 + i * second, 1) for i in range(3600)]
    assert rate_limit_admits(100, 200, hour) == [1] * 3600
    steady = [(T0 + i * second // 100, 1) for i in range(6000)]
    assert rate_limit_admits(100, 200, steady) == [1] * 6000
    # No limit.
    assert rate_limit_admits(0, 0, [(T0, 10 ** 6)]) == [10 ** 6]


@pytest.mark.parametrize("rate, burst", [(-1, 10), (math.nan, 10), (10, -5),
                                         (1e-12, 10), (1e-3, 2 ** 62)])
def test_a_bad_rate_or_burst_is_refused(rate, burst):
    with pytest.raises(ValueError):
        rate_limit_admits(rate, burst, [])
    with pytest.raises(ValueError):
        ServerService(Recorder, packet_rate=rate, packet_burst=burst)
    with pytest.raises(ValueError):
        rate_limit_admits(10, 0, [])            # a session needs a burst of at least 1


def test_a_service_defaults_the_burst_to_a_seconds_worth():
    assert ServerService(Recorder, packet_rate=50).packet_burst == 50
    assert ServerService(Recorder, packet_rate=0.5).packet_burst == 1
    assert ServerService(Recorder, packet_rate=math.inf).packet_burst == 2 ** 62
    assert ServerService(Recorder).packet_rate == 0       # netcore itself limits nothing
    s = Recorder()
    s.set_limits(packet_rate=30)
    assert (s.packet_rate, s.packet_burst) == (30, 30)


@pytest.mark.parametrize("flags, message", [
    (["--packet-rate", "-1"], "--packet-rate -1: must be >= 0"),
    (["--packet-rate", "nan"], "--packet-rate nan: must be a finite number"),
    (["--packet-burst", "0"], "packet-burst 0: must be >= 1 when there is a packet rate"),
    (["--login-timeout", "-0.5"], "--login-timeout -0.5: must be >= 0"),
    (["--idle-timeout", "inf"], "--idle-timeout inf: must be a finite number"),
    (["--db-busy-timeout", "-1"], "--db-busy-timeout -1: must be >= 0"),
    (["--max-sessions", "0"], "--max-sessions 0: must be >= 1"),
    (["--packet-rate", "fast"], "--packet-rate fast: must be a number"),
])
def test_the_server_refuses_a_bad_limit(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(flags)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_server_limits_by_default_and_0_turns_a_limit_off():
    d, _ = parse_args([])
    assert (d.packet_rate, d.packet_burst, d.login_timeout, d.idle_timeout) == (100, 200, 10, 0)
    assert parse_args(["--packet-rate", "0", "--packet-burst", "0"])[0].packet_rate == 0


# -- a PacketSession fed read by read, as a transport feeds it -------------------

def fed(rate, burst, *reads):
    """A Recorder limited to rate/burst, fed each of `reads` (bytes) as one read."""
    async def go():
        s = Recorder()
        s.set_limits(packet_rate=rate, packet_burst=burst)
        s.connection_made(FakeTransport())
        for data in reads:
            if s.close_reason is not None:
                break
            buf = s.get_buffer(-1)
            buf[:len(data)] = data
            s.buffer_updated(len(data))
        return s
    return netcore.run(go(), "asyncio")


def stream(n, start=0):
    return b"".join(packet(1004, b"%d" % i) for i in range(start, start + n))


def test_one_read_over_the_burst_delivers_the_burst_and_closes():
    s = fed(50, 20, stream(25))
    assert [p for _, p in s.packets] == [b"%d" % i for i in range(20)]
    assert s.close_reason.kind is DisconnectReason.RATE_LIMITED
    assert s.close_reason.detail == "more than 50 packets/s (burst 20)"
    assert s.transport.aborted and s.packets_received == 20


def test_the_bucket_spans_reads():
    # At one packet per 1000 s nothing refills between reads.
    s = fed(0.001, 5, stream(3), stream(3, 3))
    assert [p for _, p in s.packets] == [b"%d" % i for i in range(5)]
    assert s.close_reason.kind is DisconnectReason.RATE_LIMITED


def test_the_clock_is_read_once_per_read():
    # A packet per nanosecond refills between any two reads, never within one:
    # every packet of a read counts as arriving at the same instant.
    s = fed(1e9, 1, stream(2))
    assert len(s.packets) == 1 and s.close_reason.kind is DisconnectReason.RATE_LIMITED
    s = fed(1e9, 1, stream(1), stream(1, 1))
    assert len(s.packets) == 2 and s.close_reason is None


def test_no_rate_means_no_limit():
    s = fed(0, 0, stream(20000))
    assert len(s.packets) == 20000 and s.close_reason is None


def test_a_partial_packet_costs_nothing_until_whole():
    data = stream(3)
    s = fed(0.001, 3, data[:5], data[5:])
    assert len(s.packets) == 3 and s.close_reason is None


# -- over real sockets -----------------------------------------------------------

def test_a_flooding_client_is_cut_and_the_others_are_served(run, caplog):
    async def go():
        made = ServerSessions()
        async with ServerService(made, port=0, packet_rate=50, packet_burst=20) as server:
            (bystander,) = await ClientService(Recorder, port=server.port).start()
            await made.wait_count(1)
            reader, writer = await raw_client(server.port)
            (_, offender) = await made.wait_count(2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            writer.write(stream(100_000))
            reason = await offender.wait_gone()
            took = loop.time() - started
            assert reason.kind is DisconnectReason.RATE_LIMITED
            # The burst, plus what 50/s refilled while the flood was read
            # (however long a loaded machine took to read it).
            assert 20 <= len(offender.packets) <= 20 + 50 * took + 1
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass                                # aborted: the kernel may answer RST
            for i in range(10):
                bystander.send(netcore.make_packet(1004, b"%d" % i))
            await bystander.wait_packets(10)
            assert bystander.reason is None
            writer.close()
    run(go())
    assert "disconnected: rate limited: more than 50 packets/s (burst 20)" in caplog.text


def test_a_chat_flood_is_cut_within_its_burst(run, tmp_path, loop_kind):
    async def go(port):
        a, b, flooder = await in_game(port, 3)
        chat = make_send_buffer(pb.C_CHAT(msg="flood"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        flooder.transport.write(bytes(chat) * 200_000)      # 2.6 MB, one write
        await flooder.until(lambda: flooder.reason is not None)
        took = loop.time() - started
        a.send_pkt(pb.C_CHAT(msg="after"))
        await b.until(lambda: (a.player_id, "after") in b.chats)
        flood = [m for pid, m in b.chats if pid == flooder.player_id]
        # Its bucket: 200 less the login and enter, plus a refill of 100/s
        # for as long as the server took to read the flood up to the cut.
        assert 198 <= len(flood) <= 198 + 100 * took + 1
        assert b.reason is None and a.reason is None
        await leave(a, b)

    with ServerProcess(tmp_path, loop_kind) as server:
        run(go(server.port))
        assert server.stop() == 0
    log = server.log_text()
    assert "disconnected: rate limited: more than 100 packets/s (burst 200)" in log
    assert "Traceback" not in log


# -- login and idle deadlines ------------------------------------------------------

class Timed(Recorder):
    """Stamps its connection before the session's own clock reading (so an
    interval measured from here is never shorter than the session's), and
    its end; logs in at once when told to (in the callback that connects it,
    so that no sweep can come first)."""

    log_in_at_once = 0

    def connection_made(self, transport):
        self.connected_at = time.monotonic()
        super().connection_made(transport)

    def on_connected(self):
        if Timed.log_in_at_once:
            Timed.log_in_at_once -= 1
            self.mark_logged_in()
        super().on_connected()

    def on_disconnected(self, reason):
        self.gone_at = time.monotonic()
        super().on_disconnected(reason)


def test_the_login_deadline_spares_whoever_logged_in(run):
    async def go():
        made = ServerSessions(Timed)
        Timed.log_in_at_once = 2
        async with ServerService(made, port=0, login_timeout=0.2) as server:
            assert server.sweep_interval == pytest.approx(0.025)
            clients = await ClientService(Recorder, port=server.port, count=3).start()
            keeper, late, gone = await made.wait_count(3)
            assert keeper.logged_in and late.logged_in and not gone.logged_in
            assert await gone.wait_gone() == gone.reason
            assert gone.reason.kind is DisconnectReason.LOGIN_TIMEOUT
            assert gone.reason.detail == "not logged in within 0.2 s"
            assert gone.gone_at - gone.connected_at >= 0.2
            # Past its own deadline and still served: no idle timeout is set.
            sender = next(c for c in clients if c.transport.get_extra_info("sockname")
                          == keeper.peername)
            sender.send(netcore.make_packet(7, b"still here"))
            assert await keeper.wait_packets(1) == [(7, b"still here")]
            assert keeper.reason is None and late.reason is None
    run(go())


def test_the_idle_timeout_counts_from_the_last_packet(run):
    timeout = 0.3

    async def go():
        made = ServerSessions(Timed)
        # No login deadline: the idle timeout applies from connect.
        async with ServerService(made, port=0, idle_timeout=timeout) as server:
            talker, quiet = await ClientService(Recorder, port=server.port, count=2).start()
            await made.wait_count(2)
            active = next(s for s in made.made
                          if s.peername == talker.transport.get_extra_info("sockname"))
            idle = next(s for s in made.made if s is not active)
            # Packets 50 ms apart keep one side alive, until the other's timeout.
            sent_at = []
            while idle.reason is None and active.reason is None:
                sent_at.append(time.monotonic())
                talker.send(netcore.make_packet(7, b"%d" % len(sent_at)))
                n = len(sent_at)
                await active.until(lambda: len(active.packets) == n or active.reason is not None)
                await asyncio.sleep(0.05)           # the client's pace, not a wait for the server
            talked_through = active.reason is None
            assert (await idle.wait_gone()).kind is DisconnectReason.IDLE_TIMEOUT
            assert idle.reason.detail == f"no packet for {timeout:g} s"
            assert idle.gone_at - idle.connected_at >= timeout
            assert (await quiet.wait_gone()).kind is DisconnectReason.PEER_CLOSED
            # Closed no sooner than a timeout after the last packet it got was sent.
            assert (await active.wait_gone()).kind is DisconnectReason.IDLE_TIMEOUT
            got = len(active.packets)
            assert got >= 1 and active.gone_at - sent_at[got - 1] >= timeout
            # And not while it talked: unless this loop (client and server
            # alike) stalled for half a timeout between two of its packets.
            gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
            if max(gaps, default=0) < timeout / 2:
                assert talked_through and got == len(sent_at)
    run(go())


def test_a_connection_past_its_login_deadline_is_aborted_at_once(run):
    # Nothing is owed to a connection that never logged in: its descriptor
    # and slot are freed now, not after the 3 s linger of a graceful close.
    async def go():
        server = await ServerService(Recorder, login_timeout=0.05).start()
        try:
            s = server._accept()
            t = FakeTransport()
            s.connection_made(t)
            await asyncio.wait_for(t.ended.wait(), 10)
            assert t.aborted and not t.eof_written
            assert s.close_reason.kind is DisconnectReason.LOGIN_TIMEOUT
            s.connection_lost(None)         # what the transport does once aborted
            assert len(server) == 0
        finally:
            await server.close()
    run(go())


@pytest.mark.parametrize("field", ["login_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", [-1, math.inf, math.nan])
def test_a_bad_timeout_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ServerService(Recorder, **{field: value})


def test_the_game_closes_who_does_not_log_in_or_falls_silent(run, tmp_path, loop_kind):
    login, idle = 0.3, 1.0

    async def go(port):
        started = time.monotonic()
        reader, writer = await raw_client(port)             # never logs in
        chatter, idler = await in_game(port, 2)
        assert await reader.read() == b""
        assert time.monotonic() - started >= login
        # The chatter outlives the idle timeout by talking; the idler does not.
        sent_at = []
        while idler.reason is None and chatter.reason is None:
            sent_at.append(time.monotonic())
            chatter.send_pkt(pb.C_CHAT(msg=str(len(sent_at))))
            n = len(sent_at)
            await chatter.until(lambda: len(chatter.chats) == n or chatter.reason is not None)
            await asyncio.sleep(idle / 10)                  # the player's pace
        await idler.until(lambda: idler.reason is not None)
        # Unless this client stalled for half the timeout between two chats,
        # the chatter talked through.
        gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
        talked_through = max(gaps, default=0) < idle / 2
        if talked_through:
            assert chatter.reason is None
        writer.close()
        await leave(chatter)
        return talked_through

    with ServerProcess(tmp_path, loop_kind, "--login-timeout", str(login),
                       "--idle-timeout", str(idle)) as server:
        talked_through = run(go(server.port))
        assert server.stop() == 0
    log = server.log_text()
    assert "disconnected: login timeout: not logged in within 0.3 s" in log
    assert "disconnected: idle timeout: no packet for 1 s" in log
    if talked_through:
        assert log.count("idle timeout") == 1


# -- the session cap and the descriptor limit -------------------------------------

async def storm(port, count):
    """count connections at once; returns their (reader, writer) pairs."""
    async def one():
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
    return [c for c in await asyncio.gather(*[one() for _ in range(count)]) if c is not None]


async def closed_by_server(reader):
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def chat_round(players, tag):
    """Every player chats once; each hears every chat."""
    for p in players:
        p.send_pkt(pb.C_CHAT(msg=f"{tag}:{p.player_id}"))
    want = {(p.player_id, f"{tag}:{p.player_id}") for p in players}
    for p in players:
        await p.until(lambda: want <= set(p.chats))


async def fresh_player(port, others, attempts=100):
    """A new client that gets in, retrying while the server sheds it."""
    for _ in range(attempts):
        (c,) = await connect(port)
        c.send_pkt(pb.C_LOGIN())
        try:
            if (await c.expect("S_LOGIN")).success:
                entered = await c.enter(0)
                c.player_id = entered.playerId
                await chat_round(others + [c], "fresh")
                return c
        except AssertionError:          # closed before the answer: shed
            pass
        await asyncio.sleep(0.05)       # a client's back-off before it retries
    raise AssertionError("no fresh client got in")


def test_max_sessions_refuses_extras_and_keeps_serving(run, tmp_path, loop_kind):
    async def go(port):
        players = await in_game(port, 3)
        await chat_round(players, "before")
        extras = await storm(port, 200)
        assert all(await asyncio.gather(*[closed_by_server(r) for r, _ in extras]))
        await chat_round(players, "during")
        for _, w in extras:
            w.close()
        await leave(players.pop())
        await leave(*players, await fresh_player(port, players))

    with ServerProcess(tmp_path, loop_kind, "--max-sessions", "3") as server:
        run(go(server.port), timeout=60)
        assert server.stop() == 0
    assert "server full: 3 sessions" in server.log_text()


def limit_open_files(n):
    def preexec():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptor limits")
def test_out_of_descriptors_sheds_the_storm_and_keeps_serving(run, tmp_path, loop_kind):
    async def go(port):
        players = await in_game(port, 3)
        await chat_round(players, "before")
        extras = await storm(port, 300)
        # Some are accepted and held (not logged in yet), the rest shed at once.
        shed = [asyncio.ensure_future(closed_by_server(r)) for r, _ in extras]
        done, _ = await asyncio.wait(shed, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done, "no connection was shed"
        await chat_round(players, "during")
        for _, w in extras:
            w.close()
        await asyncio.gather(*shed)
        fresh = await fresh_player(port, players)
        await chat_round(players, "after")
        await leave(fresh, *players)

    with ServerProcess(tmp_path, loop_kind, "--max-sessions", "1000",
                       preexec_fn=limit_open_files(64)) as server:
        run(go(server.port), timeout=60)
        assert server.stop() == 0
    log = server.log_text()
    assert "the open-files limit is 64, below max sessions 1000" in log
    # Both loops accept through netcore's ListenSocket or TcpAcceptor, which
    # say what they shed (uvloop's own transports, --tcp-transport loop, shed
    # inside libuv, silently).
    assert "out of file descriptors: closed" in log
    assert "Traceback" not in log and "out of system resource" not in log
