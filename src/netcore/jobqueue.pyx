# cython: language_level=3
import asyncio
import logging
import weakref

from cpython.list cimport PyList_GET_SIZE
from cpython.time cimport PyTime_MonotonicRaw, PyTime_t

from netcore.session cimport flush_due

log = logging.getLogger("netcore.jobqueue")


cdef class JobQueue:
    """A serial executor of jobs with time-sliced draining and timers.

    Jobs pushed with do_async() run on the event loop one at a time, in the
    order they were pushed, in slices of at most `budget_ms` (the rest runs
    in the next loop iteration, after I/O). An object whose state only its
    own jobs touch needs no lock: subclass JobQueue (a game room) and push
    jobs to it from anywhere on the loop. A job that raises is logged and
    counted (`errors`), and the next one runs.
    """

    def __init__(self, *, double budget_ms=DEFAULT_BUDGET_US / 1000.0):
        if budget_ms <= 0:
            raise ValueError("budget_ms must be > 0")
        self.jobs = []
        self.timers = set()
        self.budget_ns = <PyTime_t>(budget_ms * 1e6)

    @property
    def pending(self):
        """Jobs pushed and not yet run."""
        return (PyList_GET_SIZE(self.jobs) - self.head) // 2

    def take_max_delay(self):
        """The longest a slice waited between being scheduled and running
        since the last call, in seconds (and start a new measurement)."""
        cdef PyTime_t d = self.max_delay_ns
        self.max_delay_ns = 0
        return d / 1e9

    def do_async(self, fn, *args):
        """Push a job: ``fn(*args)`` runs after every job pushed before it.
        A closed queue refuses it (RuntimeError)."""
        self.push(fn, args)

    def do_timer(self, double delay_ms, fn, *args, double interval_ms=0):
        """Push ``fn(*args)`` after delay_ms; with interval_ms, again at that fixed
        rate (deadlines do not drift with the time jobs take). Returns a
        handle whose cancel() stops it."""
        if delay_ms < 0 or interval_ms < 0:
            raise ValueError("delays must be >= 0")
        cdef JobTimer t = JobTimer.__new__(JobTimer)
        t.interval = interval_ms / 1000.0
        return self.arm(t, fn, args, delay_ms / 1000.0, _fire)

    def do_tick(self, double rate_hz, fn, *args, LatencyHistogram histogram=None):
        """Push ``fn(*args, dt)`` rate_hz times a second, at fixed slots, the
        first one period from now; dt is the seconds since the previous tick
        began. Never twice to catch up: a slot that finds the last tick still
        queued, or passes in a stall, is skipped and counted (jobqueue.pxd).
        `histogram` observes each tick's run time. Returns a JobTicker (its
        counts, and cancel())."""
        if not rate_hz > 0:
            raise ValueError("rate_hz must be > 0")
        cdef JobTicker t = JobTicker.__new__(JobTicker)
        t.histogram = histogram
        t.interval = 1.0 / rate_hz
        return self.arm(t, fn, args, t.interval, _fire_tick)

    cdef JobTimer arm(self, JobTimer t, object fn, tuple args, double delay, object fire):
        """Start a timer (or ticker) of this queue: `fire(t)` at now + delay."""
        if self.closed:
            raise RuntimeError("job queue is closed")
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        t.queue_ref = weakref.ref(self)
        # A method of this very queue is kept unbound, so a pending timer does
        # not keep its owner alive: a collected owner's timer never runs.
        t.bind_owner = getattr(fn, "__self__", None) is self and hasattr(fn, "__func__")
        t.fn = fn.__func__ if t.bind_owner else fn
        t.args = args
        t.deadline = self.loop.time() + delay
        t.handle = self.loop.call_at(t.deadline, fire, t)
        self.timers.add(t)
        return t

    def close(self):
        """Drop pending jobs and cancel every timer; later pushes are refused."""
        self.closed = True
        for t in list(self.timers):
            t.cancel()                  # a JobTimer or a JobTicker
        self.jobs = []
        self.head = 0

    cdef int push(self, object fn, tuple args) except -1:
        if self.closed:
            raise RuntimeError("job queue is closed")
        self.jobs.append(fn)
        self.jobs.append(args)
        if not self.scheduled and not self.running:
            self.schedule()
        return 0

    cdef int schedule(self) except -1:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.scheduled = True
        self.scheduled_ns = PyTime_MonotonicRaw()
        # The handle holds the queue only while the slice is pending: no
        # bound method of itself kept on the queue (a reference cycle, which
        # only the cyclic collector would free once the queue is dropped).
        self.loop.call_soon(_run_slice, self)
        return 0

    cdef int run_slice(self) except -1:
        cdef list jobs = self.jobs
        cdef PyTime_t now = PyTime_MonotonicRaw()
        cdef PyTime_t deadline = now + self.budget_ns
        cdef Py_ssize_t i
        self.scheduled = False
        if now - self.scheduled_ns > self.max_delay_ns:
            self.max_delay_ns = now - self.scheduled_ns
        if self.delay_histogram is not None:
            self.delay_histogram.observe_ns(now - self.scheduled_ns)
        if self.closed:
            return 0
        self.running = True
        self.slices += 1
        try:
            while self.head < PyList_GET_SIZE(jobs):
                i = self.head
                fn = jobs[i]
                args = jobs[i + 1]
                jobs[i] = None          # release references as jobs complete
                jobs[i + 1] = None
                self.head = i + 2
                try:
                    fn(*args)
                except Exception:
                    self.errors += 1
                    log.exception("job %r in %r raised", fn, self)
                self.jobs_run += 1
                if jobs is not self.jobs or PyTime_MonotonicRaw() >= deadline:
                    break               # closed by a job, or the slice is spent
        finally:
            self.running = False
        if jobs is not self.jobs:
            return 0
        if self.head == PyList_GET_SIZE(jobs):
            del jobs[:]
            self.head = 0
        else:
            if self.head > COMPACT_AFTER:
                del jobs[:self.head]
                self.head = 0
            self.schedule()             # the rest runs next iteration, after I/O
        return 0


def _run_slice(JobQueue q):
    q.run_slice()
    flush_due()         # what the slice sent leaves now, not an iteration later


cdef class JobTimer:
    """A timer of a JobQueue (do_timer): its job is pushed when it fires."""

    def cancel(self):
        """Stop it: a firing that has not pushed its job yet never will."""
        cdef JobQueue q
        if self.cancelled:
            return
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None          # the handle holds this timer: no cycle left behind
        q = self.queue_ref()
        if q is not None:
            q.timers.discard(self)


def _fire(JobTimer t):
    cdef JobQueue q = t.queue_ref()
    # The handle that called us holds t, and t holds it: let go of it, so
    # that a timer which is done is freed by its reference count.
    t.handle = None
    if q is None or q.closed or t.cancelled:
        t.cancelled = True
        return
    if t.interval > 0:
        t.deadline += t.interval
        t.handle = q.loop.call_at(t.deadline, _fire, t)
    else:
        t.cancelled = True
        q.timers.discard(t)
    q.push(t.fn, (q,) + t.args if t.bind_owner else t.args)


cdef class JobTicker(JobTimer):
    """A fixed-rate tick of a JobQueue (do_tick): its job is pushed at each
    slot; cancel() stops it, and a tick already queued does not run."""

    @property
    def rate(self):
        """Ticks per second."""
        return 1.0 / self.interval



def _fire_tick(JobTicker t):
    cdef JobQueue q = t.queue_ref()
    cdef double now
    cdef double missed
    t.handle = None
    if q is None or q.closed or t.cancelled:
        t.cancelled = True
        return
    now = q.loop.time()
    if t.waiting:
        t.skipped += 1                  # the last tick has not run yet: no second one behind it
    else:
        t.waiting = True
        t.due = t.deadline
        q.push(_run_tick, (t,))
    t.deadline += t.interval
    if t.deadline <= now:
        # The loop stalled past whole slots: they are not fired late, one
        # after the other; the next slot is the first one still ahead.
        missed = <double>(<long long>((now - t.deadline) / t.interval)) + 1
        t.skipped += <unsigned long long>missed
        t.deadline += missed * t.interval
    t.handle = q.loop.call_at(t.deadline, _fire_tick, t)


def _run_tick(JobTicker t):
    cdef JobQueue q = t.queue_ref()
    cdef double start
    cdef double dt
    cdef PyTime_t began
    cdef PyTime_t took
    t.waiting = False
    if q is None or t.cancelled:
        return
    start = q.loop.time()
    if start - t.due >= t.interval:
        t.late += 1
    dt = start - t.last_start if t.last_start > 0 else t.interval
    t.last_start = start
    t.ticks += 1
    began = PyTime_MonotonicRaw()
    try:
        if t.bind_owner:
            t.fn(q, *t.args, dt)
        else:
            t.fn(*t.args, dt)
    finally:
        took = PyTime_MonotonicRaw() - began
        if took > q.budget_ns:
            t.over_budget += 1
        if t.histogram is not None:
            t.histogram.observe_ns(took)
