# A session's outgoing packets between two flushes.
#
# Queuing keeps a reference to a shared SendBuffer: no copy, no allocation
# per recipient. The queue is a plain struct embedded in its Session (a C
# array of references, grown by doubling and kept between flushes), not an
# object with a list in it: a fan-out to N sessions touches each session
# once, where an object and its list cost two more dependent cache misses
# per recipient (perf at 2,500 clients in one room: 7% of the server's time
# stalled on those loads). At flush time the queue leaves in one writev, or
# as ONE joined bytes object through the transport: one write per session
# per event-loop iteration, however many packets were queued.

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF

from netcore.sendbuffer cimport SendBuffer

cdef enum:
    # Buffers one direct write hands the kernel (writev); a longer queue
    # leaves through the transport, joined, as before.
    MAX_IOV = 64
    QUEUE_INITIAL = 8               # references the first push makes room for
    QUEUE_KEPT = 256                # a larger array is freed when the queue empties

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
# Write the queue to a socket descriptor at once (writev, no copy, no
# Python object): the bytes written, or -1 when the kernel took nothing
# (full, or an error the transport will meet and report). Queues of more
# than MAX_IOV buffers are not tried (-1).
cdef Py_ssize_t sq_write_to(SendQueue* q, int fd) noexcept
