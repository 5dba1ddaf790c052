# A session's outgoing packets between two flushes.
#
# Queuing is a list append of a shared SendBuffer: no copy, no allocation per
# recipient. At flush time the whole queue leaves as ONE joined bytes object,
# i.e. one transport.write (one send syscall when the socket has room) per
# session per event-loop iteration, however many packets were queued. One
# join (a memcpy per packet into one allocation) measured cheaper than handing
# the transport a list of views: stdlib transports refuse non-bytes objects
# and copy anyway when the socket is full.

from netcore.sendbuffer cimport SendBuffer

cdef enum:
    # Buffers one direct write hands the kernel (writev); a longer queue
    # leaves through the transport, joined, as before.
    MAX_IOV = 64

cdef class SendQueue:
    cdef list items
    cdef readonly Py_ssize_t nbytes

    cdef inline int push(self, SendBuffer buf) except -1:
        self.items.append(buf)
        self.nbytes += buf.size
        return 0

    cdef bytes take_joined(self)
    # Write the queue to a socket descriptor at once (writev, no copy, no
    # Python object): the bytes written, or -1 when the kernel took nothing
    # (full, or an error the transport will meet and report). Queues of more
    # than MAX_IOV buffers are not tried (-1).
    cdef Py_ssize_t write_to(self, int fd) noexcept
    # What is left after the first `skip` bytes, as one bytes object; the
    # queue is left empty.
    cdef bytes take_joined_after(self, Py_ssize_t skip)
    cdef void clear(self) noexcept
