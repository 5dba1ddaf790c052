# cython: language_level=3
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
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


cdef class SendQueue:

    def __cinit__(self):
        self.items = []

    def __len__(self):
        return len(self.items)

    cdef bytes take_joined(self):
        """Everything queued as one bytes object; the queue is left empty."""
        cdef list items = self.items
        cdef Py_ssize_t i, n = len(items)
        cdef SendBuffer buf
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.nbytes)
        cdef char* p = PyBytes_AS_STRING(out)
        for i in range(n):
            buf = <SendBuffer>PyList_GET_ITEM(items, i)
            memcpy(p, buf.data, buf.size)
            p += buf.size
        self.clear()
        return out

    cdef Py_ssize_t write_to(self, int fd) noexcept:
        cdef netcore_iovec iov[MAX_IOV]
        cdef list items = self.items
        cdef Py_ssize_t i, n = PyList_GET_SIZE(items)
        cdef SendBuffer buf
        if n == 0 or n > MAX_IOV:
            return -1
        for i in range(n):
            buf = <SendBuffer>PyList_GET_ITEM(items, i)
            iov[i].iov_base = buf.data
            iov[i].iov_len = <size_t>buf.size
        return netcore_writev(fd, iov, <int>n)

    cdef bytes take_joined_after(self, Py_ssize_t skip):
        cdef list items = self.items
        cdef Py_ssize_t i, n = len(items), size
        cdef SendBuffer buf
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.nbytes - skip)
        cdef char* p = PyBytes_AS_STRING(out)
        for i in range(n):
            buf = <SendBuffer>PyList_GET_ITEM(items, i)
            size = buf.size
            if skip >= size:
                skip -= size
                continue
            memcpy(p, buf.data + skip, size - skip)
            p += size - skip
            skip = 0
        self.clear()
        return out

    cdef void clear(self) noexcept:
        # Dropping the references lets the pool recycle their chunks.
        del self.items[:]
        self.nbytes = 0
