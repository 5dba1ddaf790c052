"""JobQueue: ordering, non-reentrancy, timers, time slices, exception isolation."""
import asyncio
import gc
import logging
import weakref

import pytest

from netcore import JobQueue, JobTimer
from support import collector_as_the_server_runs_it


def test_jobs_run_one_at_a_time_in_push_order(run):
    async def go():
        q, seen, done = JobQueue(), [], asyncio.Event()
        for i in range(1000):
            q.do_async(seen.append, i)
        q.do_async(done.set)
        assert seen == [], "jobs run later, never inside do_async"
        await asyncio.wait_for(done.wait(), 10)
        assert seen == list(range(1000)) and q.pending == 0
    run(go())


def test_a_job_pushing_to_its_own_queue_runs_after_it(run):
    async def go():
        q, trace, done = JobQueue(), [], asyncio.Event()

        def outer():
            trace.append("outer start")
            q.do_async(inner)
            trace.append("outer end")

        def inner():
            trace.append("inner")
            done.set()

        q.do_async(outer)
        await asyncio.wait_for(done.wait(), 10)
        assert trace == ["outer start", "outer end", "inner"]
    run(go())


def test_an_exception_is_logged_and_the_queue_carries_on(run, caplog):
    async def go():
        q, seen, done = JobQueue(), [], asyncio.Event()
        q.do_async(seen.append, 1)
        q.do_async(lambda: 1 / 0)
        q.do_async(seen.append, 2)
        q.do_async(done.set)
        await asyncio.wait_for(done.wait(), 10)
        assert seen == [1, 2] and q.errors == 1
    with caplog.at_level(logging.ERROR, logger="netcore.jobqueue"):
        run(go())
    assert "ZeroDivisionError" in caplog.text and "Traceback" in caplog.text


def test_timers_fire_through_the_queue_and_can_be_cancelled(run):
    async def go():
        loop = asyncio.get_running_loop()
        q, fired, done = JobQueue(), [], asyncio.Event()
        start = loop.time()
        q.do_timer(30, lambda: fired.append(("t30", loop.time() - start)))
        cancelled = q.do_timer(10, fired.append, "cancelled")
        q.do_timer(5, fired.append, "t5")
        q.do_timer(40, done.set)
        cancelled.cancel()
        await asyncio.wait_for(done.wait(), 10)
        assert [f if isinstance(f, str) else f[0] for f in fired] == ["t5", "t30"]
        assert fired[1][1] >= 0.03 - 0.002 and cancelled.cancelled   # uvloop clocks in ms
    run(go())


def test_a_repeating_timer_ticks_at_a_fixed_rate_until_cancelled(run):
    async def go():
        loop = asyncio.get_running_loop()
        q, ticks, done = JobQueue(), [], asyncio.Event()

        def tick():
            ticks.append(loop.time())
            if len(ticks) == 5:
                timer.cancel()
                q.do_timer(50, done.set)     # would see a sixth tick if it were still live

        start = loop.time()
        timer = q.do_timer(10, tick, interval_ms=10)
        await asyncio.wait_for(done.wait(), 10)
        assert len(ticks) == 5
        # Fixed rate: tick k is due at start + 10 ms * (k + 1) and never runs
        # earlier (2 ms of slack: uvloop's clock counts milliseconds), however
        # late the ones before it ran.
        for k, t in enumerate(ticks):
            assert t >= start + 0.010 * (k + 1) - 0.002, (k, t - start)
    run(go())


class Owner(JobQueue):
    fired = []

    def announce(self):
        Owner.fired.append(self)


@pytest.mark.parametrize("ending", ["closed", "collected"])
def test_a_timer_whose_owner_is_gone_does_not_run(run, ending):
    async def go():
        Owner.fired = []
        owner, witness, done = Owner(), JobQueue(), asyncio.Event()
        owner.do_timer(10, owner.announce)
        owner.do_timer(10, owner.announce, interval_ms=10)
        if ending == "closed":
            owner.close()
            with pytest.raises(RuntimeError, match="closed"):
                owner.do_async(print)
        else:
            gone = weakref.ref(owner)
            del owner                       # by its reference count alone
            assert gone() is None
        witness.do_timer(60, done.set)     # well past both deadlines
        await asyncio.wait_for(done.wait(), 10)
        assert Owner.fired == []
    with collector_as_the_server_runs_it():
        run(go())


def test_queues_and_timers_are_freed_by_their_reference_count(run):
    # The server collects cycles rarely: a queue that has run jobs, a timer
    # that has fired and one that was cancelled are freed when dropped,
    # without the collector (a bound method of itself kept on a queue, or a
    # timer and its loop handle holding each other, would keep them).
    async def go():
        q, done = JobQueue(), asyncio.Event()
        q.do_async(len, ())
        fired = q.do_timer(1, len, ())
        cancelled = q.do_timer(60_000, len, ())
        ticking = q.do_timer(1, len, (), interval_ms=1)
        q.do_timer(20, done.set)
        await asyncio.wait_for(done.wait(), 10)
        cancelled.cancel()
        ticking.cancel()
        assert q.jobs_run >= 3 and fired.cancelled
        gone = weakref.ref(q)
        del q, fired, cancelled, ticking
        return gone

    with collector_as_the_server_runs_it():
        gone = run(go())
        assert gone() is None
        assert [o for o in gc.get_objects() if type(o) is JobTimer] == []


def test_a_flooded_queue_does_not_hold_up_another(run):
    async def go():
        flooded, quiet, done = JobQueue(budget_ms=2), JobQueue(budget_ms=2), asyncio.Event()
        seen = {}

        def busy():
            for _ in range(200):     # a few microseconds of real work per job
                pass

        for _ in range(100_000):
            flooded.do_async(busy)
        flood_done = asyncio.Event()
        flooded.do_async(flood_done.set)
        quiet.do_async(lambda: seen.update(slices=flooded.slices, pending=flooded.pending))
        quiet.do_async(done.set)
        await asyncio.wait_for(done.wait(), 30)
        # The quiet queue ran after at most one slice of the flood, with most
        # of the flood still waiting: it was delayed by a budget, not the flood.
        assert seen["slices"] <= 1 and seen["pending"] > 50_000
        await asyncio.wait_for(flood_done.wait(), 30)
        assert flooded.jobs_run == 100_001 and flooded.slices > 10
    run(go(), timeout=60)


def test_what_a_job_slice_sends_is_written_before_the_next_poll(run):
    # A broadcast leaves at the end of the slice that made it (flush_due), as
    # a C server writes after its epoll batch, not one loop iteration later.
    import netcore
    from netcore import JobQueue, ServerService, send_to_all
    from support import Recorder, ServerSessions

    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made) as server:
            clients = await netcore.ClientService(Recorder, port=server.port, count=3).start()
            peers = await made.wait_count(3)
            room = JobQueue()
            written = []

            def job():
                send_to_all(peers, netcore.make_packet(1005, b"now"))

            def after():       # the first thing the loop runs after the slice
                written.append([p.writes for p in peers])

            before = [p.writes for p in peers]
            room.do_async(job)
            asyncio.get_running_loop().call_soon(after)   # queued behind the slice
            for c in clients:
                assert await c.wait_packets(1) == [(1005, b"now")]
            assert [w - b for w, b in zip(written[0], before)] == [1, 1, 1]
    run(go())
