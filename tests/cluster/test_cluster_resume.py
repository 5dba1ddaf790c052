"""Resuming under --workers (docs/protocol.md, "Resuming a session"): the
kernel gives the new connection to either worker; on the holding one the
resume is local, on the other the connection is handed over
(netcore_server.handover). Either way the client gets every chat exactly
once, in order, then the live stream, whether the room is owned by the
worker it is connected to or by the other."""
import json
import signal
import subprocess
import sys

import pytest

from netcore_packets import Protocol_pb2 as pb

from cluster_support import ClusterProcess
from game_support import in_game, leave
from resume_support import dial, log_shows, reset, resume

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX processes")


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
                for i in range(5):
                    b.send_pkt(pb.C_CHAT(msg=f"{attempt}.before {i}"))
                await a.until(lambda: len(a.chats) >= 2)
                reset(a)
                await log_shows(server, "held for a resume", count=attempt)
                for i in range(5):
                    b.send_pkt(pb.C_CHAT(msg=f"{attempt}.during {i}"))
                handed = server.log_text().count("handed to worker")
                a2, answer = await resume(server.port, entered.resumeToken, a.received)
                assert answer.success and answer.playerId == entered.playerId
                b.send_pkt(pb.C_CHAT(msg=f"{attempt}.after"))
                await a2.until(lambda: any(m.endswith(".after") for _, m in a2.chats))
                mine = [m for _, m in a.chats + a2.chats if m.startswith(f"{attempt}.")]
                assert mine == ([f"{attempt}.before {i}" for i in range(5)]
                                + [f"{attempt}.during {i}" for i in range(5)]
                                + [f"{attempt}.after"])
                # Still the same player to the room: its chat reaches b.
                a2.send_pkt(pb.C_CHAT(msg=f"{attempt}.back"))
                await b.until(lambda: (entered.playerId, f"{attempt}.back") in b.chats)
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
