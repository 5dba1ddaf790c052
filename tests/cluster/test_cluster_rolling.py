"""A rolling restart (netcore_server.restart, docs/operations.md): SIGHUP to
`--workers N` replaces every worker, one at a time, by a successor that
goes on as the same incarnation; resumable clients are closed, resume on
whichever worker they land, and miss nothing; every room goes on with its
state (Room.on_handover / on_restore)."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netcore_packets import Protocol_pb2 as pb

from cluster_support import ClusterProcess, wait_for
from game_support import in_game, leave

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX processes")

TESTS = Path(__file__).resolve().parent.parent
COUNTER_GAME = {"module": "counter_game",
                "env": {"PYTHONPATH": os.pathsep.join(filter(None, [
                    str(TESTS), os.environ.get("PYTHONPATH")]))}}
DONE = re.compile(r"rolling restart done in [\d.]+ s: (\d+) of (\d+) workers handed over")


def restarts_done(server):
    return [tuple(map(int, m)) for m in DONE.findall(server.log_text())]


async def room_counts(port, rooms):
    """What each room says it has counted (the counter game's "count?")."""
    counts = {}
    for room in rooms:
        (c,) = await in_game(port, 1, room=room)
        c.send_pkt(pb.C_CHAT(msg="count?"))
        await c.until(lambda: any(pid == 0 for pid, _ in c.chats))
        counts[room] = int(next(m for pid, m in c.chats if pid == 0).split()[1])
        await leave(c)
    return counts


def test_a_rolling_restart_of_three_workers_under_load_loses_nothing(run, tmp_path, loop_kind):
    # 1,000 resumable clients chat in 20 rooms; halfway through, the
    # dummy sends SIGHUP and every worker is replaced in turn. Every chat
    # reaches every player of its room exactly once, in order; every
    # client closed resumes; and the rooms' own counts (state only
    # on_handover carries) add up to every chat sent.
    with ClusterProcess(tmp_path, loop_kind, 3, **COUNTER_GAME) as server:
        out = subprocess.run(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(server.port), "--json",
             "--loop", loop_kind, "--clients", "1000", "--rooms", "20", "--rate", "1",
             "--duration", "16", "--enter-timeout", "30", "--drain-timeout", "30",
             "--resumable", "--rolling-restart", str(server.proc.pid)],
            capture_output=True, text=True, timeout=300)
        report = json.loads(out.stdout)
        assert out.returncode == 0, (report, out.stderr, server.log_text()[-4000:])
        resumes = report["resumes"]
        assert resumes["restart_signalled"]
        assert resumes["failed"] == 0 and resumes["dropped"] == 0, resumes
        # Each client was on one worker, which closed it once; a resume that
        # lands elsewhere is handed to its holder's successor, never closed again.
        assert resumes["server_closed"] == resumes["resumed"] == 1000, resumes
        assert report["lost"] == report["duplicated"] == report["out_of_order"] == 0, report
        assert report["unique"] == report["expected"] > 0
        run(wait_for(lambda: restarts_done(server), what="the restart's end"), timeout=60)
        assert restarts_done(server) == [(3, 3)]
        log = server.log_text()
        assert log.count("took over from the predecessor") == 3
        assert "never arrived" not in log and "did not hand over" not in log

        counts = run(room_counts(server.port, range(20)), timeout=60)
        assert sum(counts.values()) == report["sent"], counts
        assert server.stop() == 0
