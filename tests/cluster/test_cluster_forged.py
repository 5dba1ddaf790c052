"""Forged and malformed messages on the broker (issue 26, "The broker").

Each forged message is published, as bytes, on a real nats-server that the
workers use, by a client of that broker that is no worker: what any process
that can reach an unauthenticated broker could do."""
import asyncio
import json
import math
import signal
import struct
import time

import pytest

from netcore_cluster import wire
from netcore_packets import Protocol_pb2 as pb

from cluster_support import (
    ClusterProcess, NatsProcess, Pair, assert_one_order, chat_rounds, clients_on_every_worker,
    wait_until,
)
from game_support import in_game, leave

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX processes")


def ctl(**fields):
    return json.dumps(fields).encode()


def forged_messages(prefix, node, real, other, room):
    """(subject, bytes): control messages with every field out of range, and
    upstream and stream messages that do not parse; `real` receives the
    upstream ones as if from `other`, in node `node` of 2 workers."""
    ctl_subject = f"{prefix}.ctl"
    cmap = f"{node}=2"
    bad_ctl = [
        ctl(op="hello", slot=real, epoch=2 ** 64, cluster=cmap),    # past u64
        ctl(op="hello", slot=f"{node}-7", epoch=2 ** 64, cluster=cmap),   # no such slot
        ctl(op="hello", slot=f"{node}-7", epoch=5, cluster=cmap),
        ctl(op="hello", slot=real, epoch=-1, cluster=cmap),
        ctl(op="hello", slot=real, epoch=0, cluster=cmap),
        ctl(op="hello", slot=real, epoch="12", cluster=cmap),
        ctl(op="hello", slot=real, epoch=True, cluster=cmap),
        ctl(op="hello", slot=real, epoch=1.5, cluster=cmap),
        ctl(op="who", slot=f"{real}.>", epoch=3, cluster=cmap),
        ctl(op="hello", slot=[real], epoch=3),
        ctl(op="down", slot=other, epoch=0),
        ctl(op="down", slot=other),
        ctl(op="reboot", slot=real, epoch=3),
        ctl(op="hello", slot=real, epoch=3, cluster=7),
        # Where a machine's game port is (a relayed resume goes there): host:port or nothing.
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr="no-port"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr="h:0"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr="h:65536"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr=":80"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr="bad host:80"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr="h/../x:80"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr="h" * 300 + ":80"),
        ctl(op="hello", slot=other, epoch=3, cluster=cmap, addr=8080),
        b"not json", b"[1, 2]", b"3", b"\xff\xfe", b"[" * 100000,
    ]
    up = wire.up_header(5, 6, other)
    bad_up = [
        up + wire.up_op(wire.JOB, room, 1, 1)[:-3],                       # truncated
        up + wire.up_op(9, room, 1, 1),                                   # unknown kind
        up + wire.up_op(wire.JOB, room, 0, 1, wire.encode_job("chat", ("x",))),  # seq 0
        up + wire.up_op(wire.JOB, room, 1, 1, b"\x04chat" + b"i\x01"),    # bad job
        up + wire.up_op(wire.JOB, room, 1, 1, b"\x05_exit"),              # not a job name
        wire.up_header(0, 6, other),                                      # epoch 0
        struct.pack("<cQQ", b"U", 5, 6) + b"\x03\xff\xfe\xfd",           # not ASCII
        wire.up_header(5, 6, f"{node}-0.x"),
    ]
    down = wire.down_header(room, 5, 1, 1, 0)
    bad_down = [
        down + b"\x09",                                                   # unknown segment
        down + wire.data_segment_head(1, 10) + b"\x00" * 4,               # truncated
        wire.down_header(room, 0, 1, 1, 0),                               # epoch 0
        down + wire.ack_segment(0, 5, other),                             # ack of 0
        down + wire.member_segment(wire.JOINED, 1, 0, other),             # epoch 0
        down + wire.data_segment_head(1, 3) + b"abc",                     # not a packet
        down + wire.multicast_segment(struct.pack("<Q", 1), 1, b"abc"),   # not a packet
        down + wire.multicast_segment(b"", 1, b"abc"),                    # nobody
    ]
    return ([(ctl_subject, m) for m in bad_ctl]
            + [(f"{prefix}.w.{real}", m) for m in bad_up]
            + [(f"{prefix}.r.{room}", m) for m in bad_down])


def test_forged_messages_on_the_broker_are_dropped_and_the_workers_carry_on(
        run, tmp_path, loop_kind):
    import nats as nats_py
    broker = NatsProcess(tmp_path).start()
    try:
        with ClusterProcess(tmp_path, loop_kind, 2, "--nats", broker.url) as server:
            room = server.rooms_owned_by("t-1", 1)[0]

            async def go():
                clients = await clients_on_every_worker(server, room=room, per_worker=2)
                await chat_rounds(clients, 2, tag="a")
                before = {f"a{c.player_id}:{k}" for c in clients for k in range(2)}
                for c in clients:
                    await c.until(lambda c=c: sum(m in before for _, m in c.chats)
                                  == len(before))
                forger = await nats_py.connect(broker.url)
                messages = (forged_messages("netcore", "t", "t-1", "t-0", room)
                            + forged_messages("netcore", "t", "t-0", "t-1", room))
                for subject, data in messages:
                    await forger.publish(subject, data)
                await forger.flush()
                await forger.close()
                # Both workers still publish: the room keeps crossing them, in one order.
                await chat_rounds(clients, 5, tag="b")
                after = {f"b{c.player_id}:{k}" for c in clients for k in range(5)}
                for c in clients:
                    await c.until(lambda c=c: sum(m in after for _, m in c.chats) == len(after)
                                  or c.reason is not None)
                assert all(c.reason is None for c in clients)
                assert_one_order(clients, after)
                await leave(*clients)
            run(go(), timeout=60)
            assert server.stop() == 0
            log = server.log_text()
            assert "does not parse" in log
            assert "Traceback" not in log
    finally:
        broker.stop(signal.SIGKILL)


def test_every_malformed_message_is_counted_and_none_is_acted_on(run, tmp_path):
    """In one process: each forged message is one bad message, and nothing of
    it is taken (no slot learnt, no member, no op run)."""
    async def go():
        import nats as nats_py
        with NatsProcess(tmp_path) as broker:
            async with Pair(broker, tmp_path) as pair:
                room = pair.owner_of["w-0"]
                owner, gateway = pair.link("w-0"), pair.link("w-1")
                (local,) = await in_game(pair.servers["w-0"].port, 1, room=room)
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                messages = forged_messages("netcore", "w", "w-0", "w-1", room)
                known = (dict(owner.known), dict(gateway.known))
                start = (owner.stats["bad_messages"], gateway.stats["bad_messages"])
                forger = await nats_py.connect(broker.url)
                for subject, data in messages:
                    await forger.publish(subject, data)
                await forger.flush()
                await forger.close()
                # The owner gets the control and upstream ones, the gateway the
                # control and room stream ones: each counted once.
                n_ctl = sum(s == "netcore.ctl" for s, _ in messages)
                n_up = sum(".w." in s for s, _ in messages)
                n_down = sum(".r." in s for s, _ in messages)
                await wait_until(lambda: owner.stats["bad_messages"] - start[0] == n_ctl + n_up
                                 and gateway.stats["bad_messages"] - start[1] == n_ctl + n_down,
                                 "every forged message counted")
                assert (owner.known, gateway.known) == known
                assert owner.stats["internal_errors"] == gateway.stats["internal_errors"] == 0
                remote.send_pkt(pb.C_CHAT(msg="still here"))
                for c in (local, remote):
                    await c.until(lambda c=c: (remote.player_id, "still here") in c.chats)
                assert sorted(pair.servers["w-0"].rooms.get(room).players) == sorted(
                    [local.player_id, remote.player_id])
                await leave(local, remote)
    run(go(), timeout=60)


def test_the_outbox_is_bounded_while_the_broker_takes_nothing(run, tmp_path):
    """A sender that cannot publish: what waits for it stays within
    max_outbox_bytes (the rest dropped and counted), and once it can, the
    ops dropped there are resent and every chat arrives, once, in order."""
    async def go():
        with NatsProcess(tmp_path) as broker:
            async with Pair(broker, tmp_path, max_outbox_bytes=4096,
                            retransmit_after=0.2) as pair:
                room = pair.owner_of["w-0"]
                gateway = pair.link("w-1")
                (c,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                real_publish = gateway.nc.publish
                unblocked = asyncio.Event()

                async def stuck_publish(*args, **kwargs):
                    await unblocked.wait()
                    return await real_publish(*args, **kwargs)

                gateway.nc.publish = stuck_publish
                try:
                    for k in range(120):                  # within the default packet burst
                        c.send_pkt(pb.C_CHAT(msg=f"m{k}"))
                    await wait_until(lambda: gateway.stats["ops_forwarded"] >= 121, "the chats")
                    await wait_until(lambda: gateway.stats["messages_dropped"] > 0, "the bound")
                    waiting = sum(len(item[2]) for item in gateway._outbox if item[0] == "pub")
                    assert waiting <= 4096
                finally:
                    unblocked.set()
                    gateway.nc.publish = real_publish
                await c.until(lambda: len(c.chats) == 120, timeout=20)
                assert [m for _, m in c.chats] == [f"m{k}" for k in range(120)]
                await leave(c)
    run(go(), timeout=60)


def test_a_stream_message_of_another_owner_incarnation_changes_nothing(run, tmp_path):
    """A late message of an owner's previous incarnation (here forged, with
    the highest seq and the gateway's own slot and epoch): its ACK must not
    pop ops numbered for the current one, its LEFT must not take a member
    out, its packets must not reach anyone."""
    from netcore_packets.server_dispatch import make_send_buffer

    async def go():
        import nats as nats_py
        with NatsProcess(tmp_path) as broker:
            async with Pair(broker, tmp_path, retransmit_after=0.2) as pair:
                room = pair.owner_of["w-0"]
                gateway = pair.link("w-1")
                (local,) = await in_game(pair.servers["w-0"].port, 1, room=room)
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                rr = gateway.gateway.rooms[room]
                await wait_until(lambda: remote.player_id in rr.confirmed, "the JOINED mark")
                await pair.cut_ops("w-0")
                remote.send_pkt(pb.C_CHAT(msg="kept"))
                await wait_until(lambda: len(rr.pending) == 1, "the chat to wait for its ack")
                stale_epoch = gateway.known["w-0"] % (2 ** 64 - 1) + 1
                packet = bytes(make_send_buffer(pb.S_CHAT(playerId=1, msg="forged")))
                forged = (wire.down_header(room, stale_epoch, 1, 1, 0)
                          + wire.data_segment_head(1, len(packet)) + packet
                          + wire.ack_segment(2 ** 64 - 1, gateway.epoch, "w-1")
                          + wire.member_segment(wire.LEFT, remote.player_id, gateway.epoch, "w-1"))
                forger = await nats_py.connect(broker.url)
                bad = gateway.stats["bad_messages"]
                await forger.publish(f"netcore.r.{room}", forged)
                await forger.publish(f"netcore.r.{room}", b"S")     # then one that is counted
                await forger.flush()
                await forger.close()
                await wait_until(lambda: gateway.stats["bad_messages"] == bad + 1,
                                 "the gateway to take both")
                assert [op[0] for op in rr.pending] == [rr.first_seq + 1]
                assert remote.player_id in rr.members and remote.player_id in rr.confirmed
                # The owner reachable again: the chat that waited is resent and runs.
                await pair.restore_ops("w-0")
                for c in (local, remote):
                    await c.until(lambda c=c: (remote.player_id, "kept") in c.chats)
                assert all(m != "forged" for c in (local, remote) for _, m in c.chats)
                await leave(local, remote)
    run(go(), timeout=60)


def test_an_owner_that_falls_behind_gets_each_op_again_only_as_it_expires(run, tmp_path):
    """The owner takes no ops for a while (as one far behind): the gateway
    resends each op when its own timer expires, then after twice as long
    (not the whole window every half period), and once the owner takes them
    again every chat runs once, in order, and each stream message carries at
    most one ACK for the gateway."""
    async def go():
        with NatsProcess(tmp_path) as broker:
            async with Pair(broker, tmp_path, retransmit_after=0.2) as pair:
                room = pair.owner_of["w-0"]
                link = pair.link("w-1")
                gw = link.gateway
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                rr = gw.rooms[room]
                await wait_until(lambda: remote.player_id in rr.confirmed, "the JOINED mark")
                acks_per_message = []
                real_on_stream = gw.on_stream

                def spy(data):
                    segs = wire.read_down(data)[5]
                    acks_per_message.append(sum(1 for s in segs if s[0] == wire.ACK
                                                and s[3] == "w-1"))
                    real_on_stream(data)
                gw.on_stream = spy
                ticks = []
                real_tick = gw.tick

                def counting_tick(now):
                    ticks.append(now)
                    real_tick(now)
                gw.tick = counting_tick

                await pair.cut_ops("w-0")
                n = 20
                for k in range(n):
                    remote.send_pkt(pb.C_CHAT(msg=f"m{k}"))
                await wait_until(lambda: len(rr.pending) == n, "the chats to wait")
                first_sent = min(op[4] for op in rr.pending)
                resent = link.stats["ops_resent"]
                start = len(ticks)
                # 12 ticks of at least 0.1 s: 6 retransmit periods or more. An
                # op is due 0.2 s after its first send, then 0.4 s after that,
                # then 0.8 s...: k resends take 0.2 * (2**k - 1) s at least
                # (the old whole-window resend: every op at every tick).
                await wait_until(lambda: len(ticks) >= start + 12, "12 ticks")
                again = link.stats["ops_resent"] - resent
                elapsed = time.monotonic() - first_sent
                rounds = int(math.log2(elapsed / 0.2 + 1))
                assert n <= again <= n * rounds, (again, elapsed)
                await pair.restore_ops("w-0")
                await remote.until(lambda: len(remote.chats) >= n, timeout=20)
                assert [m for _, m in remote.chats] == [f"m{k}" for k in range(n)]
                await wait_until(lambda: not rr.pending, "every ack")
                assert max(acks_per_message) == 1, acks_per_message
                await leave(remote)
    run(go(), timeout=60)


def test_a_duplicate_is_acknowledged_only_after_its_original_ran(run, tmp_path):
    """An op and its resend reach a busy owner together (its room's queue
    spends its slice on other work first): no ACK of that op may reach the
    gateway before the packets the op produced."""
    def busy(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:     # a room job that takes a while (load)
            pass

    async def go():
        with NatsProcess(tmp_path) as broker:
            async with Pair(broker, tmp_path) as pair:
                room = pair.owner_of["w-0"]
                owner, gateway = pair.link("w-0"), pair.link("w-1")
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                rr = gateway.gateway.rooms[room]
                await wait_until(lambda: remote.player_id in rr.confirmed and not rr.pending,
                                 "the JOIN acknowledged")
                owner_room = pair.servers["w-0"].rooms.get(room)
                events = []
                real_on_stream = gateway.gateway.on_stream

                def spy(data):
                    for seg in wire.read_down(data)[5]:
                        if seg[0] == wire.DATA:
                            events.append("data")
                        elif seg[0] == wire.ACK and seg[3] == "w-1":
                            events.append(("ack", seg[1]))
                    real_on_stream(data)
                gateway.gateway.on_stream = spy
                real_on_ops = owner.owner.on_ops

                def busy_first(gw, ops):
                    owner_room.do_async(busy, 0.02)       # past the room's 5 ms slice
                    real_on_ops(gw, ops)
                owner.owner.on_ops = busy_first

                member = rr.members[remote.player_id]
                rr.do_async(rr.chat, member, "twice")
                gateway.gateway.resend(rr)              # the same op again, same message
                seq = rr.pending[-1][0]
                await remote.until(lambda: (remote.player_id, "twice") in remote.chats)
                await wait_until(lambda: not rr.pending, "the ack")
                acks = [i for i, e in enumerate(events) if e != "data" and e[1] >= seq]
                assert "data" in events and acks, events
                assert events.index("data") < acks[0], events
                await leave(remote)
    run(go(), timeout=60)


def test_giving_up_on_an_owner_disconnects_its_members_here_and_the_room_works_after(
        run, tmp_path):
    """An owner that takes no ops for give_up_after (same incarnation: it
    does not restart): the gateway's members there are disconnected, the
    owner is told they left once it takes ops again, and the room's later
    ops (a new player's enter and chat) run, not dropped as out of order."""
    async def go():
        with NatsProcess(tmp_path) as broker:
            async with Pair(broker, tmp_path, retransmit_after=0.2,
                            give_up_after=1.0) as pair:
                room = pair.owner_of["w-0"]
                link = pair.link("w-1")
                (local,) = await in_game(pair.servers["w-0"].port, 1, room=room)
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                rr = link.gateway.rooms[room]
                await wait_until(lambda: remote.player_id in rr.confirmed, "the JOINED mark")
                owner_room = pair.servers["w-0"].rooms.get(room)
                await pair.cut_ops("w-0")
                remote.send_pkt(pb.C_CHAT(msg="unanswered"))
                await remote.until(lambda: remote.reason is not None, timeout=20)
                assert link.stats["members_given_up"] == 1
                assert link.stats["ops_given_up"] == 1
                await pair.restore_ops("w-0")
                await wait_until(lambda: remote.player_id not in owner_room.players,
                                 "the owner to hear that it left")
                (fresh,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                fresh.send_pkt(pb.C_CHAT(msg="after"))
                for c in (local, fresh):
                    await c.until(lambda c=c: (fresh.player_id, "after") in c.chats)
                assert all(m != "unanswered" for _, m in local.chats)
                await leave(local, fresh)
    run(go(), timeout=60)
