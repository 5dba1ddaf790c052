"""JobQueue: ordering, non-reentrancy, timers, time slices, exception isolation."""
import asyncio
import gc
import logging
import time
import weakref

import pytest

from netcore import JobQueue, JobTicker, JobTimer
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


# -- ticks: a fixed rate, never run twice to catch up ---------------------------------

def test_a_tick_runs_at_its_slots_with_dt_until_cancelled(run):
    async def go():
        loop = asyncio.get_running_loop()
        q, calls, ten = JobQueue(), [], asyncio.Event()

        def tick(tag, dt):
            calls.append((loop.time(), tag, dt))
            if len(calls) == 10:
                ten.set()

        start = loop.time()
        t = q.do_tick(100, tick, "tag")
        assert isinstance(t, JobTicker)
        await asyncio.wait_for(ten.wait(), 10)
        t.cancel()
        now = loop.time()
        assert t.rate == 100 and t.ticks == 10 and all(tag == "tag" for _, tag, _ in calls)
        # Every slot passed was run or skipped, none twice: slot k is due at start + k/100.
        assert abs((t.ticks + t.skipped) - (now - start) * 100) <= 1.5
        # dt is the time since the previous tick began (one period for the first).
        assert calls[0][2] == pytest.approx(0.01)
        for (before, _, _), (at, _, dt) in zip(calls, calls[1:]):
            assert dt == pytest.approx(at - before, abs=1e-3)
        done = asyncio.Event()
        q.do_timer(50, done.set)                # five slots later: none ran
        await asyncio.wait_for(done.wait(), 10)
        assert len(calls) == 10 and t.cancelled
    run(go())


def test_a_tick_that_overruns_is_late_and_its_missed_slots_are_skipped(run):
    async def go():
        loop = asyncio.get_running_loop()
        q, starts, more = JobQueue(), [], asyncio.Event()

        def tick(dt):
            starts.append(loop.time())
            if len(starts) == 1:
                end = time.monotonic() + 0.035      # 3.5 periods, holding the loop (a slow tick)
                while time.monotonic() < end:
                    pass
            if len(starts) == 6:
                more.set()

        start = loop.time()
        t = q.do_tick(100, tick)
        await asyncio.wait_for(more.wait(), 10)
        t.cancel()
        now = loop.time()
        # The slots the slow tick overran were not run one after another to
        # catch up: skipped, and the tick after it counted late.
        assert t.over_budget >= 1 and t.late >= 1 and t.skipped >= 2, (t.late, t.skipped)
        assert abs((t.ticks + t.skipped) - (now - start) * 100) <= 1.5
        assert t.ticks == 6 and len(starts) == 6
    run(go())


def test_a_tick_behind_a_busy_queue_is_not_piled_up(run):
    async def go():
        loop = asyncio.get_running_loop()
        q, ran, done = JobQueue(budget_ms=1), [], asyncio.Event()

        def busy():
            end = time.monotonic() + 0.002
            while time.monotonic() < end:
                pass

        start = loop.time()
        t = q.do_tick(200, lambda dt: ran.append(dt))
        for _ in range(100):                    # 200 ms of jobs, a slice per iteration
            q.do_async(busy)
        q.do_async(done.set)
        await asyncio.wait_for(done.wait(), 10)
        t.cancel()
        now = loop.time()
        # While its job waited its turn, the slots that came found it queued:
        # skipped, so the queue never held a second tick behind the first.
        assert t.skipped > 0
        assert abs((t.ticks + t.skipped) - (now - start) * 200) <= 1.5
        assert len(ran) == t.ticks
    run(go())


def test_a_closed_or_collected_queue_stops_its_tick(run):
    async def go():
        ticks = []
        q = JobQueue()
        t = q.do_tick(100, ticks.append)
        q.close()
        assert t.cancelled
        with pytest.raises(RuntimeError, match="closed"):
            q.do_tick(100, ticks.append)
        with pytest.raises(ValueError, match="rate_hz"):
            JobQueue().do_tick(0, ticks.append)

        class Owner(JobQueue):
            def tick(self, dt):
                ticks.append(dt)

        owner = Owner()
        ref = weakref.ref(owner)
        t = owner.do_tick(100, owner.tick)       # a method of its own: held weakly
        del owner
        assert ref() is None
        done, waiter = asyncio.Event(), JobQueue()
        waiter.do_timer(50, done.set)
        await asyncio.wait_for(done.wait(), 10)
        assert ticks == [] and t.cancelled
    run(go())
