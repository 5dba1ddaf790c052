# A session's outgoing packets between two flushes.
#
# Queuing keeps a reference to a shared SendBuffer: no copy, no allocation
# per recipient. The queue is a plain struct embedded in its Session (a C
# array of references, grown by doubling and kept between flushes), not an
# object with a list in it: a fan-out to N sessions touches each session
# once, where an object and its list cost two more dependent cache misses
# per recipient (perf at 2,500 clients in one room: 7% of the server's time
# stalled on those loads). At flush time the queue leaves in one system
# call straight to the socket, or (when the kernel does not take it all) as
# ONE joined bytes object through the transport: one write per session per
# event-loop iteration, however many packets were queued.
#
# The direct call: a short queue goes as one sendmsg of its buffers (one send
# for a single buffer), no copy.
# A longer one is first copied into the flusher's gather buffer and leaves
# in one send, as the C server writes its per-client output buffer: a
# memcpy of a few dozen bytes per packet is cheaper than the kernel's
# per-segment work (and its allocation of an iovec array past 8 segments),
# and a queue of hundreds of chats, which a busy room makes, stays on this
# path instead of falling back to a bytes object and a transport call per
# session: that fallback costs most exactly when the server is busiest, and
# at 3,000 clients in one room it tipped netcore from keeping up into a
# backlog of seconds (benchmarks/README.md).

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF

from netcore.sendbuffer cimport SendBuffer

cdef enum:
    # A queue of at most this many buffers leaves in one sendmsg (UIO_FASTIOV:
    # the kernel copies this many iovecs on its stack); a longer one is
    # gathered into one buffer and written.
    MAX_IOV = 8
    # The gather buffer grows to the largest queue written so far, up to
    # this; a queue larger still leaves through the transport.
    GATHER_MAX = 4 * 1024 * 1024
    QUEUE_INITIAL = 8               # references the first push makes room for
    QUEUE_KEPT = 256                # a larger array is freed when the queue empties

# One per flusher (one per event loop): the queues it writes are copied here
# one after another, never two at once.
ctypedef struct Gather:
    char* data
    Py_ssize_t cap

ctypedef struct SendQueue:
    PyObject** items                # owned references to SendBuffers
    Py_ssize_t n                    # queued
    Py_ssize_t cap                  # room in items
    Py_ssize_t nbytes               # their total size

cdef int sq_grow(SendQueue* q) except -1

cdef inline int sq_push(SendQueue* q, SendBuffer buf) except -1:
    if q.n == q.cap:
        sq_grow(q)
    Py_INCREF(buf)
    q.items[q.n] = <PyObject*>buf
    q.n += 1
    q.nbytes += buf.size
    return 0

# Drop every reference (the pool recycles their chunks); the array is kept
# for the next flush unless it grew past QUEUE_KEPT.
cdef void sq_clear(SendQueue* q) noexcept
# sq_clear, and the array freed: for the session's deallocation.
cdef void sq_free(SendQueue* q) noexcept
# Everything queued as one bytes object; the queue is left empty.
cdef bytes sq_take_joined(SendQueue* q)
# What is left after the first `skip` bytes, as one bytes object; the queue
# is left empty.
cdef bytes sq_take_joined_after(SendQueue* q, Py_ssize_t skip)
# Write the queue to a socket descriptor at once (sendmsg of its buffers,
# or one send of them gathered into g; no Python object): the bytes
# written, or -1 when the kernel took nothing (full, or an error the
# transport will meet and report). A queue of more than GATHER_MAX bytes,
# or one that g cannot grow for, is not tried (-1). The queue is unchanged.
cdef Py_ssize_t sq_write_to(SendQueue* q, int fd, Gather* g) noexcept
cdef void gather_free(Gather* g) noexcept
