# Pooled send buffers, in the spirit of the original SendBufferManager.
#
# A packet is written once: open a region in the pool's current chunk, write
# header + payload, close it with the written size. The resulting SendBuffer
# is immutable and may be queued to any number of sessions; they all hold a
# reference to the same bytes, so a broadcast never copies per recipient.
# A session refuses a buffer that is still open (its size is not known yet,
# and its bytes may still change). From Python the cycle is
# pool.reserve(n) / write through memoryview(buf) / buf.commit(written).
#
# A chunk goes back to the pool when the last SendBuffer into it dies
# (reference counted in `live`), so steady traffic cycles through a handful of
# chunks and allocates nothing. A packet larger than a chunk gets a chunk of
# its own that is freed with it (the original crashed past 6000 bytes).

cdef enum:
    DEFAULT_CHUNK_SIZE = 65536
    MAX_FREE_CHUNKS = 64            # bounds idle pool memory at 4 MiB


cdef class SendBufferChunk:
    cdef unsigned char* data
    cdef Py_ssize_t capacity
    cdef Py_ssize_t used
    cdef Py_ssize_t live            # SendBuffers pointing into this chunk
    cdef SendBufferPool pool        # None for a one-off oversize chunk


cdef class SendBuffer:
    cdef SendBufferChunk chunk
    cdef unsigned char* data
    cdef readonly Py_ssize_t size   # bytes written (after close)
    cdef Py_ssize_t capacity        # bytes opened
    # Whole packets in it: 1 for a packet written here, more for a run of
    # already-framed packets relayed as one (copy_frames: a room's stream from
    # another worker), which a session queues and writes like any other.
    cdef readonly Py_ssize_t frames
    cdef readonly bint is_open      # reserved, not yet closed: cannot be sent
    cdef Py_ssize_t writers         # writable views exported while open
    cdef int close(self, Py_ssize_t written) except -1


cdef class SendBufferPool:
    cdef readonly Py_ssize_t chunk_size
    cdef readonly Py_ssize_t chunks_created
    cdef readonly Py_ssize_t oversize_created
    cdef readonly unsigned long long regions_opened   # one per packet written
    cdef SendBufferChunk current
    cdef list free_chunks
    cdef SendBuffer open(self, Py_ssize_t alloc_size)
    cdef SendBufferChunk _take_chunk(self)
    cdef void _recycle(self, SendBufferChunk chunk) noexcept


cpdef SendBuffer make_packet(unsigned int pkt_id, object payload)
cpdef SendBuffer copy_frames(const unsigned char[::1] data)
# copy_frames for C callers whose bytes are whole packets already (a
# coalesced broadcast run, session.pxd): no header walk.
cdef SendBuffer copy_run(const unsigned char* data, Py_ssize_t n, Py_ssize_t frames)
cdef SendBuffer _write_packet(SendBufferPool pool, unsigned int pkt_id, object payload)
