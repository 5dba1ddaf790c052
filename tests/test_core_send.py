"""Send side: the chunk pool, broadcast without copies, coalescing, slow consumers."""
import asyncio
import socket

import pytest

import netcore
from netcore import (
    ClientService, DisconnectReason, SendBufferPool, ServerService, send_to_all,
    send_to_all_coalesced,
)
from support import FakeTransport, Recorder, ServerSessions, packet


def test_the_pool_recycles_its_chunks_over_a_million_packets():
    pool = SendBufferPool(4096)
    in_flight = []
    for i in range(1_000_000):
        in_flight.append(pool.write(1005, b"chat message %d" % i))
        if len(in_flight) == 100:       # a flush drops a batch of buffers at once
            in_flight.clear()
    assert pool.regions_opened == 1_000_000
    assert pool.chunks_created <= 3, "chunks must be reused, not allocated per packet"


def test_a_buffer_keeps_its_bytes_while_the_pool_moves_on():
    pool = SendBufferPool(64)
    first = pool.write(1000, b"a" * 40)
    later = [pool.write(1001, bytes([i]) * 40) for i in range(20)]   # forces new chunks
    assert bytes(first) == packet(1000, b"a" * 40)
    assert [bytes(b) for b in later] == [packet(1001, bytes([i]) * 40) for i in range(20)]


def test_a_packet_larger_than_a_chunk_works():
    pool = SendBufferPool(1024)
    big = pool.write(1004, b"z" * 6001)     # the original crashed past 6,000 bytes
    assert bytes(big) == packet(1004, b"z" * 6001)
    assert pool.oversize_created == 1
    small = pool.write(1004, b"after")
    assert bytes(small) == packet(1004, b"after")


def test_packets_that_cannot_be_framed_are_refused():
    with pytest.raises(ValueError, match="uint16 size"):
        netcore.make_packet(1004, b"x" * 65532)
    with pytest.raises(ValueError, match="uint16 id"):
        netcore.make_packet(70000, b"")
    assert len(netcore.make_packet(1004, b"x" * 65531)) == 65535
    assert memoryview(netcore.make_packet(1, b"")).readonly


def test_one_serialization_reaches_a_thousand_sessions(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            clients = ClientService(Recorder, port=server.port, count=1000)
            sessions = await clients.start()
            assert len(sessions) == 1000 and not clients.failures
            await made.wait_count(1000)
            pool = netcore.default_pool()
            before = pool.regions_opened
            buf = netcore.make_packet(1005, b"to everyone")
            assert send_to_all(made.made, buf) == 1000
            assert pool.regions_opened - before == 1
            for s in sessions:
                assert await s.wait_packets(1) == [(1005, b"to everyone")]
            await clients.close()
    run(go(), timeout=60)


def test_a_burst_in_one_iteration_leaves_in_one_write(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            (client,) = await ClientService(Recorder, port=server.port).start()
            (peer,) = await made.wait_count(1)
            writes = peer.writes
            for i in range(1000):                       # all in one callback
                peer.send(netcore.make_packet(1005, b"%d" % i))
            got = await client.wait_packets(1000)
            assert got == [(1005, b"%d" % i) for i in range(1000)]
            assert peer.writes - writes == 1
            assert peer.packets_sent == 1000
            client.disconnect()
    run(go())


def test_service_broadcast_reaches_every_session(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            sessions = await ClientService(Recorder, port=server.port, count=20).start()
            await made.wait_count(20)
            assert server.broadcast(netcore.make_packet(1003, b"all")) == 20
            for s in sessions:
                assert await s.wait_packets(1) == [(1003, b"all")]
    run(go())


def test_a_reader_that_stalls_is_cut_off_and_the_others_get_everything(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made, max_pending_bytes=256 * 1024) as server:
            (healthy,) = await ClientService(Recorder, port=server.port).start()
            await made.wait_count(1)
            stalled = socket.create_connection(("127.0.0.1", server.port))
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow = (await made.wait_count(2))[1]
            payload = b"p" * 1000
            sent = 0
            # Broadcast a round per loop iteration until the stalled reader's
            # pending bytes pass the bound (kernel buffers fill first).
            while slow.reason is None:
                assert sent < 100_000, "the stalled session was never disconnected"
                send_to_all(made.made, netcore.make_packet(1005, payload))
                sent += 1
                await asyncio.sleep(0)      # let the flusher run: one iteration
            assert slow.reason.kind is DisconnectReason.SLOW_CONSUMER
            got = await healthy.wait_packets(sent, timeout=30)
            assert got == [(1005, payload)] * sent
            assert healthy.reason is None
            stalled.close()
    run(go(), timeout=60)


def test_a_paced_flusher_batches_under_load_and_not_when_idle(run):
    async def go():
        loop = asyncio.get_running_loop()
        made = ServerSessions(Recorder)
        async with ServerService(made, flush_interval_ms=20) as server:
            (client,) = await ClientService(Recorder, port=server.port).start()
            (peer,) = await made.wait_count(1)
            # Idle: the first packet still leaves in the next iteration, not 20 ms later.
            writes = peer.writes
            peer.send(netcore.make_packet(1005, b"first"))
            await client.wait_packets(1)
            assert peer.writes - writes == 1
            # Under load, a packet per iteration: writes are at least 20 ms apart.
            writes, start = peer.writes, loop.time()
            for i in range(300):
                peer.send(netcore.make_packet(1005, b"%d" % i))
                await asyncio.sleep(0)          # one loop iteration per packet
            got = await client.wait_packets(301)
            elapsed = loop.time() - start
            assert [p for _, p in got[1:]] == [b"%d" % i for i in range(300)]
            assert peer.writes - writes <= elapsed / 0.020 + 2
            assert peer.writes - writes < 300
    run(go())


def test_a_reserved_region_is_written_in_place_and_sent_only_once_committed(run):
    async def go():
        s = Recorder()
        t = FakeTransport()
        s.connection_made(t)
        pool = SendBufferPool(256)
        buf = pool.reserve(32)
        assert buf.is_open and len(buf) == 0
        # Open, its size is unknown and its bytes may still change: refused.
        with pytest.raises(ValueError, match="still open"):
            s.send(buf)
        with pytest.raises(ValueError, match="still open"):
            send_to_all([s], buf)
        wire = packet(1005, b"written in place")
        with memoryview(buf) as view:
            assert not view.readonly and len(view) == 32
            view[:len(wire)] = wire
            with pytest.raises(BufferError, match="release every memoryview"):
                buf.commit(len(wire))
        buf.commit(len(wire))
        assert not buf.is_open and bytes(buf) == wire and memoryview(buf).readonly
        with pytest.raises(RuntimeError, match="already closed"):
            buf.commit(len(wire))
        s.send(buf)
        assert s.pending_bytes == len(wire) and t.written == []
        await asyncio.sleep(0)          # the flusher runs in the next loop iteration
        assert t.written == [wire]
        # Nothing written before the refusals was queued.
        assert s.packets_sent == 1
    run(go())


def test_a_flush_writes_to_the_socket_itself_and_the_transport_only_gets_the_rest(run):
    # The kernel takes part of a flush (a small send buffer, a reader that
    # waits): the rest goes to the transport, and until the transport has
    # written it every later flush goes behind it, so no byte overtakes another.
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            (client,) = await ClientService(Recorder, port=server.port).start()
            (peer,) = await made.wait_count(1)
            peer.send(netcore.make_packet(1005, b"first"))
            await client.wait_packets(1)
            assert peer.direct_writes == 1 and peer.writes == 1     # the kernel took it whole
            peer.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            client.transport.pause_reading()
            payload = b"y" * 1000
            sent = [(1005, b"first")]
            for i in range(40):                 # 40 flushes of 20 KB: more than the kernel holds
                for k in range(20):
                    msg = payload + b"%d.%d" % (i, k)
                    peer.send(netcore.make_packet(1005, msg))
                    sent.append((1005, msg))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            assert peer.transport.get_write_buffer_size() > 0       # the transport holds a rest
            client.transport.resume_reading()
            assert await client.wait_packets(len(sent)) == sent
            assert peer.direct_writes < peer.writes     # later flushes went through the transport
            client.disconnect()
    run(go())


def test_a_long_queue_is_gathered_into_one_direct_write_and_a_huge_one_goes_through_the_transport(run):
    # 300 packets in one flush (a busy room's iteration): copied into the
    # flusher's gather buffer and written by the session itself, in order.
    # Over GATHER_MAX bytes (4 MiB) the transport takes the queue, joined.
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made, max_pending_bytes=8 << 20) as server:
            (client,) = await ClientService(Recorder, port=server.port).start()
            (peer,) = await made.wait_count(1)
            sent = [(1005, b"chat %d" % i) for i in range(300)]
            for pkt_id, msg in sent:
                peer.send(netcore.make_packet(pkt_id, msg))
            assert await client.wait_packets(300) == sent
            assert (peer.direct_writes, peer.writes, peer.packets_sent) == (1, 1, 300)
            assert peer.transport.get_write_buffer_size() == 0
            big = [(1005, bytes([65 + i % 26]) * 60_000) for i in range(80)]   # 4.8 MB
            for pkt_id, msg in big:
                peer.send(netcore.make_packet(pkt_id, msg))
            assert await client.wait_packets(380) == sent + big
            assert (peer.direct_writes, peer.writes) == (1, 2)
            client.disconnect()
    run(go())


# -- coalesced fan-out -----------------------------------------------------------------

async def pairs(server, made, n):
    """n (client, server-side session) pairs, connected one at a time."""
    out = []
    for i in range(n):
        (client,) = await ClientService(Recorder, port=server.port).start()
        peers = await made.wait_count(i + 1)
        out.append((client, peers[i]))
    return out


def chat(i, tag=b"c"):
    return (1005, tag + b"%d" % i)


def test_coalesced_broadcasts_reach_each_member_as_one_queue_entry_in_order(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            pp = await pairs(server, made, 3)
            members = [peer for _, peer in pp]
            for i in range(50):                 # one job slice's chats
                assert send_to_all_coalesced(members, netcore.make_packet(*chat(i))) == 3
            for client, peer in pp:
                assert await client.wait_packets(50) == [chat(i) for i in range(50)]
                # One queue entry, one write: not 50 pushes per member.
                assert (peer.packets_sent, peer.writes) == (1, 1)
                client.disconnect()
    run(go())


def test_a_direct_send_or_another_list_never_overtakes_a_coalesced_broadcast(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            (c0, p0), (c1, p1), (c2, p2) = await pairs(server, made, 3)
            room_a, room_b = [p0, p1], [p1, p2]
            send_to_all_coalesced(room_a, netcore.make_packet(*chat(1, b"a")))
            send_to_all_coalesced(room_a, netcore.make_packet(*chat(2, b"a")))
            p0.send(netcore.make_packet(*chat(0, b"direct")))
            send_to_all_coalesced(room_a, netcore.make_packet(*chat(3, b"a")))
            send_to_all_coalesced(room_b, netcore.make_packet(*chat(1, b"b")))
            send_to_all_coalesced(room_a, netcore.make_packet(*chat(4, b"a")))
            assert await c0.wait_packets(5) == [chat(1, b"a"), chat(2, b"a"), chat(0, b"direct"),
                                                chat(3, b"a"), chat(4, b"a")]
            assert await c1.wait_packets(5) == [chat(1, b"a"), chat(2, b"a"), chat(3, b"a"),
                                                chat(1, b"b"), chat(4, b"a")]
            assert await c2.wait_packets(1) == [chat(1, b"b")]
            for c in (c0, c1, c2):
                c.disconnect()
    run(go())


def test_a_member_closed_after_a_coalesced_broadcast_still_gets_it_first(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            (c0, p0), (c1, p1) = await pairs(server, made, 2)
            for i in range(3):
                send_to_all_coalesced([p0, p1], netcore.make_packet(*chat(i)))
            p0.disconnect()                     # graceful: what was queued leaves first
            await c0.gone.wait()
            assert c0.packets == [chat(i) for i in range(3)]
            assert await c1.wait_packets(3) == [chat(i) for i in range(3)]
            c1.disconnect()
    run(go())


def test_a_run_larger_than_its_buffer_is_split_and_stays_in_order(run):
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            ((client, peer),) = await pairs(server, made, 1)
            sent = [(1005, b"%05d" % i + b"x" * 200) for i in range(1000)]     # 209 KB
            members = [peer]                    # one list: one run (a new list starts another)
            for pkt in sent:
                send_to_all_coalesced(members, netcore.make_packet(*pkt))
            assert await client.wait_packets(1000) == sent
            assert peer.packets_sent < 10               # a few runs of up to 64 KiB
            client.disconnect()
    run(go())


def test_coalescing_refuses_an_open_buffer_and_takes_an_empty_list():
    pool = SendBufferPool(64)
    with pytest.raises(ValueError, match="still open"):
        send_to_all_coalesced([], pool.reserve(8))
    assert send_to_all_coalesced([], netcore.make_packet(1, b"")) == 0


def test_a_transport_without_a_plain_socket_is_always_written_through():
    from netcore import session as _session

    class Tls(FakeTransport):
        def get_extra_info(self, name, default=None):
            return {"sslcontext": object(), "socket": socket.socket()}.get(name, default)

    with socket.socket() as plain:
        class Tcp(FakeTransport):
            def get_extra_info(self, name, default=None):
                return plain if name == "socket" else default
        assert _session._direct_fd(Tcp()) == plain.fileno()
    tls = Tls()
    assert _session._direct_fd(tls) == -1
    tls.get_extra_info("socket").close()
    assert _session._direct_fd(FakeTransport()) == -1       # no socket at all
