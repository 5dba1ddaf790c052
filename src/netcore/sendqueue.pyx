# cython: language_level=3
"""A session's outgoing packets between two flushes (see sendqueue.pxd)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from libc.string cimport memcpy

from netcore.sendbuffer cimport SendBuffer

cdef extern from *:
    """
    #ifdef _WIN32
    struct netcore_iovec { void *iov_base; size_t iov_len; };
    static Py_ssize_t netcore_writev(int fd, struct netcore_iovec *iov, int n) {
        (void)fd; (void)iov; (void)n; return -1;    /* no direct path: the transport writes */
    }
    #else
    #include <sys/uio.h>
    #define netcore_iovec iovec
    #define netcore_writev(fd, iov, n) writev((fd), (iov), (n))
    #endif
    """
    struct netcore_iovec:
        void* iov_base
        size_t iov_len
    Py_ssize_t netcore_writev(int fd, netcore_iovec* iov, int n) nogil


cdef int sq_grow(SendQueue* q) except -1:
    cdef Py_ssize_t cap = q.cap * 2 if q.cap else QUEUE_INITIAL
    cdef PyObject** items = <PyObject**>PyMem_Realloc(q.items, cap * sizeof(PyObject*))
    if items == NULL:
        raise MemoryError()
    q.items = items
    q.cap = cap
    return 0


cdef void sq_clear(SendQueue* q) noexcept:
    # Reset first: a buffer's deallocation runs no code of ours, but the
    # queue is consistent whatever it runs.
    cdef Py_ssize_t i, n = q.n
    q.n = 0
    q.nbytes = 0
    for i in range(n):
        Py_XDECREF(q.items[i])
    if q.cap > QUEUE_KEPT:
        # A burst's array (a paused reader's backlog) is not held for good.
        PyMem_Free(q.items)
        q.items = NULL
        q.cap = 0


cdef void sq_free(SendQueue* q) noexcept:
    sq_clear(q)
    PyMem_Free(q.items)           # NULL-safe
    q.items = NULL
    q.cap = 0


cdef bytes sq_take_joined(SendQueue* q):
    return sq_take_joined_after(q, 0)


cdef bytes sq_take_joined_after(SendQueue* q, Py_ssize_t skip):
    cdef Py_ssize_t i, size
    cdef SendBuffer buf
    cdef bytes out = PyBytes_FromStringAndSize(NULL, q.nbytes - skip)
    cdef char* p = PyBytes_AS_STRING(out)
    for i in range(q.n):
        buf = <SendBuffer>q.items[i]
        size = buf.size
        if skip >= size:
            skip -= size
            continue
        memcpy(p, buf.data + skip, size - skip)
        p += size - skip
        skip = 0
    sq_clear(q)
    return out


cdef Py_ssize_t sq_write_to(SendQueue* q, int fd) noexcept:
    cdef netcore_iovec iov[MAX_IOV]
    cdef Py_ssize_t i, n = q.n
    cdef SendBuffer buf
    if n == 0 or n > MAX_IOV:
        return -1
    for i in range(n):
        buf = <SendBuffer>q.items[i]
        iov[i].iov_base = buf.data
        iov[i].iov_len = <size_t>buf.size
    return netcore_writev(fd, iov, <int>n)
