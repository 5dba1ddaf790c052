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
    static Py_ssize_t netcore_sendv(int fd, struct netcore_iovec *iov, int n) {
        (void)fd; (void)iov; (void)n; return -1;    /* no direct path: the transport writes */
    }
    static Py_ssize_t netcore_send_buffer(int fd, const char *p, Py_ssize_t n) {
        (void)fd; (void)p; (void)n; return -1;
    }
    #else
    #include <errno.h>
    #include <string.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #ifndef MSG_NOSIGNAL            /* macOS: Python ignores SIGPIPE anyway */
    #define MSG_NOSIGNAL 0
    #endif
    #define netcore_iovec iovec
    /* send()/sendmsg() rather than write()/writev(): on a socket they skip
       the file layer (vfs_writev, fdget_pos, sock_write_iter: 13% of the
       server's time at 5,000 clients in 50 rooms, where nearly every
       delivery is a system call of its own, against 7% for the C server's
       sendto path). */
    static Py_ssize_t netcore_sendv(int fd, struct iovec *iov, int n) {
        struct msghdr m;
        Py_ssize_t r;
        if (n == 1) {
            do r = send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
            while (r < 0 && errno == EINTR);
            return r;
        }
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = n;
        do r = sendmsg(fd, &m, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
        return r;
    }
    static Py_ssize_t netcore_send_buffer(int fd, const char *p, Py_ssize_t n) {
        Py_ssize_t r;
        do r = send(fd, p, (size_t)n, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
        return r;
    }
    #endif
    """
    struct netcore_iovec:
        void* iov_base
        size_t iov_len
    Py_ssize_t netcore_sendv(int fd, netcore_iovec* iov, int n) nogil
    Py_ssize_t netcore_send_buffer(int fd, const char* p, Py_ssize_t n) nogil


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


cdef Py_ssize_t sq_write_to(SendQueue* q, int fd, Gather* g) noexcept:
    cdef netcore_iovec iov[MAX_IOV]
    cdef Py_ssize_t i, n = q.n
    cdef SendBuffer buf
    cdef char* p
    if n == 0:
        return -1
    if n <= MAX_IOV:
        for i in range(n):
            buf = <SendBuffer>q.items[i]
            iov[i].iov_base = buf.data
            iov[i].iov_len = <size_t>buf.size
        return netcore_sendv(fd, iov, <int>n)
    if q.nbytes > g.cap and gather_grow(g, q.nbytes) < 0:
        return -1
    p = g.data
    for i in range(n):
        buf = <SendBuffer>q.items[i]
        memcpy(p, buf.data, buf.size)
        p += buf.size
    return netcore_send_buffer(fd, g.data, q.nbytes)


cdef inline int gather_grow(Gather* g, Py_ssize_t need) noexcept:
    cdef Py_ssize_t cap = g.cap if g.cap else 4096
    cdef char* data
    if need > GATHER_MAX:
        return -1
    while cap < need:
        cap *= 2
    data = <char*>PyMem_Realloc(g.data, cap)
    if data == NULL:
        return -1               # the transport path takes this queue
    g.data = data
    g.cap = cap
    return 0


cdef void gather_free(Gather* g) noexcept:
    PyMem_Free(g.data)          # NULL-safe
    g.data = NULL
    g.cap = 0
