# cython: language_level=3
from libc.stdlib cimport calloc, free


cdef class PacketStats:
    """Packets and bytes in and out, by packet id."""

    def __cinit__(self):
        self.counts = <uint64_t*>calloc(4 * PACKET_ID_SPACE, sizeof(uint64_t))
        if self.counts == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.counts)

    def snapshot(self):
        """{packet id: (packets in, bytes in, packets out, bytes out)} for every
        id seen in either direction."""
        cdef Py_ssize_t i
        cdef uint64_t* c = self.counts
        out = {}
        for i in range(PACKET_ID_SPACE):
            if c[IN_PACKETS + i] or c[OUT_PACKETS + i]:
                out[i] = (c[IN_PACKETS + i], c[IN_BYTES + i], c[OUT_PACKETS + i], c[OUT_BYTES + i])
        return out
