# JobQueue: state owned by one queue is touched only by its jobs, run one at a
# time in push order, on the event loop thread.
#
# Why jobs and not locks: the original server locked a room and looped over
# every player to send, inside whichever worker received the chat, so with
# thousands of players one thread did all the work while the rest waited on
# the lock. Here a room is a queue: handlers push work (enter, leave, chat) and
# return at once; the queue drains its jobs later in the same loop.
#
# Time slices: a queue runs jobs until its budget (default 5 ms) is spent,
# then yields and resumes in the next loop iteration. Between two slices the
# loop polls sockets and runs every other queue's slice, so a flooded room
# costs the rest at most a budget of delay per iteration, never a stall.
#
# Non-reentrant: a job that pushes to its own queue appends; the new job runs
# after the current one returns. An exception in a job is logged with its
# traceback and the queue carries on with the next job.
#
# Timers (do_timer) fire by pushing their job onto the queue, so they obey the
# same ordering. A timer holds its queue only weakly: when the queue is closed
# or collected the timer does not run.
#
# Ticks (do_tick) are the fixed-rate timer of a game room (Nakama's match
# loop, Colyseus's simulation interval): slot k is due at start + k/rate and
# its job runs on the queue like any other, inside the queue's time budget.
# A tick never runs twice to catch up. A slot whose firing finds the
# previous tick's job still waiting (the queue is behind) pushes nothing, and
# slots that pass while the loop itself is stalled are not fired at all:
# both are counted `skipped`; a tick that starts a whole period or more after
# its slot was due is counted `late`, and one that runs longer than the
# queue's budget `over_budget`. The job gets dt, the seconds since the last
# tick began, so game logic scales by real time whatever was skipped.

from cpython.time cimport PyTime_t

from netcore.stats cimport LatencyHistogram

cdef enum:
    DEFAULT_BUDGET_US = 5000
    COMPACT_AFTER = 1024            # consumed slots before the job list is compacted


cdef class JobTimer


cdef class JobQueue:
    cdef object __weakref__
    cdef object loop
    cdef list jobs                  # flat pairs: fn, args, fn, args, ...
    cdef Py_ssize_t head            # index of the next job's fn
    cdef bint scheduled
    cdef bint running
    cdef readonly bint closed
    cdef readonly PyTime_t budget_ns
    cdef readonly unsigned long long jobs_run
    cdef readonly unsigned long long slices
    cdef readonly unsigned long long errors
    cdef PyTime_t scheduled_ns              # when the pending slice was scheduled
    cdef PyTime_t max_delay_ns              # longest schedule-to-run wait since take_max_delay
    # Every slice's schedule-to-run wait, when set (Rooms share one): the
    # histogram a metrics scrape reads, unlike max_delay_ns, which one reader resets.
    cdef public LatencyHistogram delay_histogram
    cdef set timers

    cdef int push(self, object fn, tuple args) except -1
    cdef int schedule(self) except -1
    cdef int run_slice(self) except -1
    cdef JobTimer arm(self, JobTimer t, object fn, tuple args, double delay, object fire)


cdef class JobTimer:
    cdef object queue_ref           # weakref to the JobQueue
    cdef object fn
    cdef tuple args
    cdef bint bind_owner            # fn is an owner method stored unbound
    cdef object handle              # the loop's TimerHandle
    cdef double interval            # seconds; 0 for a one-shot timer
    cdef double deadline            # loop time of the next firing
    cdef readonly bint cancelled


# A JobTimer whose interval is the tick's period and deadline its next slot.
cdef class JobTicker(JobTimer):
    cdef double due                 # loop time the pushed tick's slot was due
    cdef double last_start          # loop time the last tick began; 0 before the first
    cdef bint waiting               # a tick's job is pushed and has not run
    cdef LatencyHistogram histogram     # each tick's run time, when set
    cdef readonly unsigned long long ticks
    cdef readonly unsigned long long late
    cdef readonly unsigned long long skipped
    cdef readonly unsigned long long over_budget
