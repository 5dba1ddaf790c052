# Packet counters by packet id, kept in C on the hot paths and read only when
# someone asks (a metrics scrape): counting a packet is two integer additions,
# no Python object, no lock (one event-loop thread writes; a reader on another
# thread may see a count one packet old, which a scrape does not mind).
#
# One table per service, indexed by the uint16 packet id: 4 x 65,536 counters
# (2 MiB) of calloc'ed memory, of which only the pages of ids in use are ever
# touched, so the resident cost is a few KiB.

from libc.stdint cimport uint64_t

cdef enum:
    PACKET_ID_SPACE = 65536
    IN_PACKETS = 0
    IN_BYTES = 65536
    OUT_PACKETS = 131072
    OUT_BYTES = 196608


cdef class PacketStats:
    cdef uint64_t* counts

    cdef inline void count_in(self, unsigned int pkt_id, Py_ssize_t size) noexcept:
        self.counts[IN_PACKETS + (pkt_id & 0xFFFF)] += 1
        self.counts[IN_BYTES + (pkt_id & 0xFFFF)] += <uint64_t>size

    cdef inline void count_out(self, unsigned int pkt_id, Py_ssize_t size) noexcept:
        self.counts[OUT_PACKETS + (pkt_id & 0xFFFF)] += 1
        self.counts[OUT_BYTES + (pkt_id & 0xFFFF)] += <uint64_t>size

    # A run of whole packets (a SendBuffer with frames > 1, checked when it
    # was made): each counted by its own id and size.
    cdef inline void count_out_run(self, const unsigned char* p, Py_ssize_t n) noexcept:
        cdef Py_ssize_t pos = 0, size
        while pos + 4 <= n:
            size = p[pos] | (p[pos + 1] << 8)
            if size < 4:
                return
            self.count_out(p[pos + 2] | (p[pos + 3] << 8), size)
            pos += size
