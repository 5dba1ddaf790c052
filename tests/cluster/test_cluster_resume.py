"""Resuming under --workers (docs/protocol.md, "Resuming a session"): the
kernel gives the new connection to either worker; on the holding one the
resume is local, on the other the connection is handed over
(netcore_server.handover), or relayed where it cannot be (a WebSocket,
another machine: netcore_server.relay). Either way the client gets every
chat exactly once, in order, then the live stream, whether the room is
owned by the worker it is connected to or by the other."""
import asyncio
import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from netcore_packets import Protocol_pb2 as pb

from cluster_support import ClusterProcess
from game_support import in_game, leave
from resume_support import dial, log_shows, reset, resume

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX processes")


async def drop_and_resume(server, chatter, a, entered, tag, resume_at, cut=None):
    """a's connection ends mid-chat (cut(a); by default a closes it); chats
    go on; a resumes (resume_at: an awaitable's factory, (token, count) ->
    (client, S_RESUME)); it must get every chat exactly once, in order, then
    live ones, and be heard."""
    for i in range(5):
        chatter.send_pkt(pb.C_CHAT(msg=f"{tag}.before {i}"))
    await a.until(lambda: sum(m.startswith(f"{tag}.before") for _, m in a.chats) >= 2)
    held = server.log_text().count("held for a resume")
    if cut is None:
        a.disconnect()                      # its worker holds it
    else:
        cut(a)
    await log_shows(server, "held for a resume", count=held + 1)
    for i in range(5):
        chatter.send_pkt(pb.C_CHAT(msg=f"{tag}.during {i}"))
    a2, answer = await resume_at(entered.resumeToken, a.received)
    assert answer.success and answer.playerId == entered.playerId
    chatter.send_pkt(pb.C_CHAT(msg=f"{tag}.after"))
    await a2.until(lambda: any(m == f"{tag}.after" for _, m in a2.chats))
    mine = [m for _, m in a.chats + a2.chats if m.startswith(f"{tag}.")]
    assert mine == ([f"{tag}.before {i}" for i in range(5)]
                    + [f"{tag}.during {i}" for i in range(5)] + [f"{tag}.after"])
    a2.send_pkt(pb.C_CHAT(msg=f"{tag}.back"))
    await chatter.until(lambda: (entered.playerId, f"{tag}.back") in chatter.chats)
    return a2


def test_a_client_resumes_on_whichever_worker_its_new_connection_lands(run, tmp_path,
                                                                       loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        room = server.rooms_owned_by("t-1", 1)[0]

        async def go():
            (b,) = await in_game(server.port, 1, room=room)
            seen = {"here": 0, "handed": 0}
            attempt = 0
            while not (seen["here"] and seen["handed"]):
                attempt += 1
                assert attempt <= 24, seen      # each lands on either worker: 2**-23 to fail
                a = await dial(server.port)
                entered = await a.enter_resumable(room)
                handed = server.log_text().count("handed to worker")
                a2 = await drop_and_resume(server, b, a, entered, str(attempt),
                                           lambda t, n: resume(server.port, t, n), cut=reset)
                await log_shows(server, "resumed player", count=attempt)
                seen["handed" if server.log_text().count("handed to worker") > handed
                     else "here"] += 1
                a2.send_pkt(pb.C_LEAVE())
                await leave(a2)
            await leave(b)

        run(go(), timeout=120)
        assert server.stop() == 0


def test_a_token_no_worker_holds_is_refused_wherever_it_lands(run, tmp_path, loop_kind):
    # A token naming the other worker: read there it is not known; read
    # here it is handed there, and not known. Either way the client is told
    # (S_RESUME{success: false}) and its connection goes on as a new one.
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        async def go():
            a = await dial(server.port)
            entered = await a.enter_resumable()
            holder = entered.resumeToken.split(".")[0]
            other = "1" if holder == "0" else "0"
            forged = other + "." + entered.resumeToken.split(".", 1)[1]
            b, answer = await resume(server.port, forged, 0)
            assert not answer.success
            assert (await b.login()).success
            await leave(a, b)
        run(go(), timeout=60)
        assert server.stop() == 0


def test_dummies_dropping_at_random_across_two_workers_lose_no_chat(tmp_path, loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        out = subprocess.run(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(server.port), "--json",
             "--loop", loop_kind, "--clients", "40", "--rooms", "4", "--rate", "10",
             "--duration", "3", "--resumable", "--drop-every", "1"],
            capture_output=True, text=True, timeout=120)
        report = json.loads(out.stdout)
        assert out.returncode == 0, (report, out.stderr)
        resumes = report["resumes"]
        assert resumes["dropped"] >= 40 and resumes["resumed"] == resumes["dropped"], resumes
        assert report["lost"] == report["duplicated"] == report["out_of_order"] == 0
        assert report["unique"] == report["expected"] > 0
        assert "handed to worker" in server.log_text()      # some landed on the other worker
        assert server.stop() == 0


# -- relayed: a WebSocket on another worker, a connection on another machine ----------

from netcore import ClientService  # noqa: E402

from cluster_support import NatsProcess, free_port, wait_for  # noqa: E402
from resume_support import ResumeClient  # noqa: E402


async def ws_dial(port, received=None):
    service = ClientService(lambda: ResumeClient(received), port=port, count=1, transport="ws")
    (client,) = await service.start()
    return client


async def ws_resume(port, token, received):
    client = await ws_dial(port, received)
    client.send_pkt(pb.C_RESUME(token=token, received=received))
    return client, await client.expect("S_RESUME")


def test_a_websocket_client_resumes_on_whichever_worker_it_lands(run, tmp_path, loop_kind):
    # picows holds a WebSocket's framing in the process that upgraded it, so
    # on the other worker the resume is relayed to the machine's game port
    # (netcore_server.relay), which hands it to the holder.
    metrics_port = free_port()
    with ClusterProcess(tmp_path, loop_kind, 2, "--ws-port", str(free_port()),
                        "--metrics-port", str(metrics_port)) as server:
        room = server.rooms_owned_by("t-1", 1)[0]

        def relays():
            # Counted before the C_RESUME goes on, so before its answer can
            # come back: read after a resume, it says whether that one was.
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                return sum(float(line.split()[-1]) for line in page.read().decode().splitlines()
                           if line.startswith("netcore_resume_relayed_total"))

        async def go():
            (chatter,) = await in_game(server.port, 1, room=room)
            seen = {"here": 0, "relayed": 0}
            attempt = 0
            while not (seen["here"] and seen["relayed"]):
                attempt += 1
                assert attempt <= 24, seen      # each lands on either worker: 2**-23 to fail
                a = await ws_dial(server.ws_port)
                entered = await a.enter_resumable(room)
                relayed = relays()
                a2 = await drop_and_resume(server, chatter, a, entered, str(attempt),
                                           lambda t, n: ws_resume(server.ws_port, t, n))
                seen["relayed" if relays() > relayed else "here"] += 1
                a2.send_pkt(pb.C_LEAVE())
                await leave(a2)
            await leave(chatter)

        run(go(), timeout=120)
        assert server.stop() == 0


def test_a_client_resumes_on_another_machine_of_the_deployment(run, tmp_path, loop_kind):
    # Two machines (nodes alpha and beta on one NATS): a player of alpha
    # comes back on beta, which relays its resume to the address alpha's
    # workers say (--advertise-host, else --host) and goes on relaying.
    nats = NatsProcess(tmp_path).start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cluster = "alpha=1,beta=1"
    try:
        with ClusterProcess(tmp_path / "a", loop_kind, 1, "--nats", nats.url, node="alpha",
                            cluster=cluster) as ma, \
                ClusterProcess(tmp_path / "b", loop_kind, 1, "--nats", nats.url, node="beta",
                               cluster=cluster) as mb:
            room = ma.rooms_owned_by("beta-0", 1)[0]

            async def go():
                (chatter,) = await in_game(mb.port, 1, room=room)
                a = await dial(ma.port)
                entered = await a.enter_resumable(room)
                assert entered.resumeToken.startswith("0.")        # alpha-0's
                a2 = await drop_and_resume(ma, chatter, a, entered, "x",
                                           lambda t, n: resume(mb.port, t, n))
                await wait_for(lambda: f"is relayed to 127.0.0.1:{ma.port}, the machine of "
                               "worker alpha-0" in mb.log_text(), what="the relay's log line")
                a2.send_pkt(pb.C_LEAVE())
                await leave(a2, chatter)
                c = await dial(ma.port)
                return (await c.enter_resumable(room)).resumeToken

            token = run(go(), timeout=120)
            # Machine alpha is gone: a resume for it, read on beta, is told so
            # at once, and the connection goes on as a new one.
            assert ma.stop(signal.SIGKILL) == -signal.SIGKILL

            async def gone():
                async def refused():
                    # Its workers follow their supervisor (the lifeline): until
                    # the last is gone, a relayed resume could still reach it.
                    while True:
                        try:
                            _, w = await asyncio.open_connection("127.0.0.1", ma.port)
                        except OSError:
                            return
                        w.close()
                        await asyncio.sleep(0.02)
                await asyncio.wait_for(refused(), 20)
                b, answer = await resume(mb.port, token, 0)
                assert not answer.success
                assert (await b.login()).success
                await leave(b)
            run(gone(), timeout=60)
            # A worker's log is written by a thread of its own: waited for.
            run(wait_for(lambda: "whose machine (127.0.0.1:%d) could not be reached" % ma.port
                         in mb.log_text(), what="the refusal's log line"), timeout=30)
            assert mb.stop() == 0
    finally:
        nats.stop(signal.SIGKILL)
