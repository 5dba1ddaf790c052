"""The supervisor's side of a rolling restart when a worker misbehaves
(netcore_cluster.supervisor, Supervisor._replace), with stand-in workers:
small processes that speak the status lines (ready, attached, handed) and
do, or fail to do, what a worker does. Every case ends in a defined state:
a successor that cannot start leaves the worker serving; a worker that does
not hand over in time is killed and its successor starts afresh; a good
pair hands over and the successor takes over from the file."""
import asyncio
import os
import signal
import sys
import textwrap

import pytest

from netcore_cluster import supervisor as supervisor_module
from netcore_cluster.supervisor import Supervisor

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")

STAND_IN = textwrap.dedent("""
    import os, signal, sys, time
    status = os.fdopen(int(os.environ["NETCORE_WORKER_STATUS_FD"]), "w", buffering=1)
    mode = os.environ["STAND_IN"]
    path = os.path.join(os.environ["NETCORE_WORKER_HANDOFF_DIR"], "t-0.handoff")
    marks = os.environ["MARKS"]
    got = set()                 # signals are noted here, and answered by the loop below
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, lambda n, _: got.add(n))
    def mark(text):
        with open(marks, "a") as f:
            f.write(text + "\\n")
    if mode == "dies":
        sys.exit(3)
    status.write("attached\\n" if mode == "successor" else 'ready {"epoch": 1}\\n')
    while True:
        time.sleep(0.01)
        if signal.SIGTERM in got:
            sys.exit(0)
        if signal.SIGUSR1 in got:
            got.discard(signal.SIGUSR1)
            status.write("quiesced\\n")
        if signal.SIGUSR2 in got:
            got.discard(signal.SIGUSR2)
            if mode == "successor":
                mark("took " + ("the handover" if os.path.exists(path) else "nothing"))
                status.write('ready {"epoch": 2}\\n')
            elif mode == "worker":
                with open(path, "w") as f:
                    f.write("state")
                status.write("handed {}\\n")
                sys.exit(0)
            # "stuck": never hands over
""")



def supervise(tmp_path, modes):
    """A Supervisor of one slot whose k-th start runs the stand-in in modes[k]."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    marks = tmp_path / "marks"
    starts = []

    def command(worker, status_fd, lifeline_fd):
        starts.append(modes[len(starts)])
        return [sys.executable, str(script)], {
            "NETCORE_WORKER_STATUS_FD": str(status_fd), "STAND_IN": starts[-1],
            "NETCORE_WORKER_HANDOFF_DIR": sup.handoff_dir, "MARKS": str(marks)}

    sup = Supervisor(["t-0"], command, nats_servers=["nats://127.0.0.1:1"], host="127.0.0.1",
                     port=0)
    return sup, marks


async def started(sup):
    w = sup.workers[0]
    await sup._spawn(w)
    await asyncio.wait_for(w.ready.wait(), 10)
    return w


def test_a_good_pair_hands_over_and_the_successor_takes_over_from_the_file(run, tmp_path):
    sup, marks = supervise(tmp_path, ["worker", "successor"])

    async def go():
        w = await started(sup)
        old = w.proc
        assert await sup.rolling_restart() == 1
        assert old.returncode == 0 and w.proc is not old and w.ready.is_set()
        assert w.epoch == 2 and sup.rolled == 1
        return await sup.stop()
    assert run(go(), timeout=30) == 0
    assert marks.read_text() == "took the handover\n"


def test_a_successor_that_cannot_start_leaves_the_worker_serving(run, tmp_path):
    sup, marks = supervise(tmp_path, ["worker", "dies"])

    async def go():
        w = await started(sup)
        old = w.proc
        assert await sup.rolling_restart() == 0
        assert w.proc is old and old.returncode is None     # still the one serving
        assert w.ready.is_set()             # its own status again (the metrics, the stop)
        assert sup.rolled == 0 and sup.restarts == 0
        return await sup.stop()
    assert run(go(), timeout=30) == 0
    assert not marks.exists()


def test_a_worker_that_does_not_hand_over_is_killed_and_its_successor_starts_afresh(
        run, tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor_module, "HANDOFF_TIMEOUT", 0.5)
    sup, marks = supervise(tmp_path, ["stuck", "successor"])

    async def go():
        w = await started(sup)
        old = w.proc
        assert await sup.rolling_restart() == 0             # none handed over
        assert old.returncode == -signal.SIGKILL
        assert w.proc is not old and w.ready.is_set() and w.epoch == 2
        return await sup.stop()
    assert run(go(), timeout=30) == 0
    assert marks.read_text() == "took nothing\n"            # a new incarnation, as after a crash
