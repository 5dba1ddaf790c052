# cython: language_level=3
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM
from libc.string cimport memcpy

from netcore.sendbuffer cimport SendBuffer


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

    cdef void clear(self) noexcept:
        # Dropping the references lets the pool recycle their chunks.
        del self.items[:]
        self.nbytes = 0
