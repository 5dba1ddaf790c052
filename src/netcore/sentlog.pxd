# A resumable session's sent log: the packets it was sent, numbered and kept
# for a resume (docs/protocol.md, "Resuming a session").
#
# The server numbers every packet it queues to a resumable session, 1, 2,
# 3, ...; a client that reconnects says how many it received, and gets the
# rest again from here. The log keeps references to the same shared
# SendBuffers the send queue held (a broadcast is still never copied per
# recipient), oldest first, in a ring: a buffer may hold several packets
# (a coalesced run, a relayed stream), SendBuffer.frames says how many, so
# an entry covers packets first .. first + frames - 1.
#
# Bounded by bytes (the sum of the entries' sizes; the memory is shared with
# every other member that holds the same buffers): while the connection is
# live the oldest entries go first, since the client has almost surely read
# them; once it is held (gone, waiting for a resume) only entries from
# before the hold may go: what is sent during the hold is never dropped,
# and when that alone passes the bound the hold ends (the session's owner
# is told). Cost per packet: one reference and a ring store; nothing at all
# for a session that is not resumable.
#
# Inline functions only, cimported by netcore.session.

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy, memset

from netcore.sendbuffer cimport SendBuffer

cdef enum:
    SENT_LOG_INITIAL = 16           # entries the first push makes room for


ctypedef struct SentLog:
    PyObject** items                # owned references to SendBuffers, a ring
    Py_ssize_t head                 # index of the oldest entry
    Py_ssize_t n                    # entries
    Py_ssize_t cap                  # a power of two, or 0
    Py_ssize_t nbytes               # their total size
    unsigned long long first        # the number of the oldest entry's first packet
    unsigned long long next         # the number the next packet gets (first + packets kept)


cdef inline void sl_start(SentLog* log) noexcept:
    """Numbering starts: the next packet is number 1."""
    log.first = 1
    log.next = 1


cdef inline int sl_push(SentLog* log, SendBuffer buf) except -1:
    cdef Py_ssize_t cap, i
    cdef PyObject** items
    if log.n == log.cap:
        cap = log.cap * 2 if log.cap else SENT_LOG_INITIAL
        items = <PyObject**>PyMem_Malloc(cap * sizeof(PyObject*))
        if items == NULL:
            raise MemoryError()
        for i in range(log.n):      # unrolled from the ring, oldest first
            items[i] = log.items[(log.head + i) & (log.cap - 1)]
        PyMem_Free(log.items)
        log.items = items
        log.head = 0
        log.cap = cap
    Py_INCREF(buf)
    log.items[(log.head + log.n) & (log.cap - 1)] = <PyObject*>buf
    log.n += 1
    log.nbytes += buf.size
    log.next += <unsigned long long>buf.frames
    return 0


cdef inline SendBuffer sl_at(SentLog* log, Py_ssize_t i) noexcept:
    """The i-th entry from the oldest (borrowed)."""
    return <SendBuffer>log.items[(log.head + i) & (log.cap - 1)]


cdef inline void sl_drop_oldest(SentLog* log) noexcept:
    cdef PyObject* item = log.items[log.head]
    cdef SendBuffer buf = <SendBuffer>item
    log.first += <unsigned long long>buf.frames
    log.nbytes -= buf.size
    log.items[log.head] = NULL
    log.head = (log.head + 1) & (log.cap - 1)
    log.n -= 1
    Py_XDECREF(item)


cdef inline void sl_clear(SentLog* log) noexcept:
    """Every entry dropped and the array freed; numbering is over (next = 0)."""
    cdef PyObject** items = log.items
    cdef Py_ssize_t i, head = log.head, n = log.n, cap = log.cap
    memset(log, 0, sizeof(SentLog))     # first: consistent whatever a dealloc runs
    for i in range(n):
        Py_XDECREF(items[(head + i) & (cap - 1)])
    PyMem_Free(items)


cdef inline void sl_move(SentLog* to, SentLog* frm) noexcept:
    """Everything of frm (its entries and numbering) to an empty `to`."""
    memcpy(to, frm, sizeof(SentLog))
    memset(frm, 0, sizeof(SentLog))
