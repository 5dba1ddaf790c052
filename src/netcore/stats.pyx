# cython: language_level=3
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy


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


# Upper bounds of the latency buckets, in seconds (see stats.pxd).
LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
assert len(LATENCY_BOUNDS) == LATENCY_BUCKETS


cdef class LatencyHistogram:
    """Counts of latencies by bucket, with their sum (seconds for Python)."""

    def __cinit__(self):
        cdef int i
        for i in range(LATENCY_BUCKETS):
            self.bounds_ns[i] = <PyTime_t>round(LATENCY_BOUNDS[i] * 1e9)

    def observe(self, double seconds):
        self.observe_ns(<PyTime_t>(seconds * 1e9))

    def snapshot(self):
        """(cumulative buckets as [(upper bound, count)] ending with +Inf, sum in seconds)."""
        cdef int i
        cdef uint64_t running = 0
        # Copied in C first: nothing between these lines can let the loop thread run.
        cdef uint64_t counts[LATENCY_BUCKETS + 1]
        cdef PyTime_t sum_ns = self.sum_ns
        memcpy(counts, self.counts, sizeof(counts))
        buckets = []
        for i in range(LATENCY_BUCKETS):
            running += counts[i]
            buckets.append((LATENCY_BOUNDS[i], running))
        buckets.append((float("inf"), running + counts[LATENCY_BUCKETS]))
        return buckets, sum_ns / 1e9

    @property
    def count(self):
        return self.total
