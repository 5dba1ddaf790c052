# cython: language_level=3
from cpython.buffer cimport (
    PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer,
)
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from netcore.framing cimport (
    FRAME_OK, FrameHeader, HEADER_SIZE, MAX_WIRE_SIZE, read_header, write_header,
)


cdef class SendBufferChunk:

    def __cinit__(self, Py_ssize_t capacity, SendBufferPool pool):
        self.data = <unsigned char*>malloc(capacity)
        if self.data == NULL:
            raise MemoryError()
        self.capacity = capacity
        self.pool = pool

    def __dealloc__(self):
        free(self.data)


cdef class SendBuffer:
    """One packet's bytes, shared read-only by every session it is queued to.

    Supports the buffer protocol: bytes(buf) and memoryview(buf) are the wire
    bytes. A region from SendBufferPool.reserve() is open until commit(): its
    memoryview is then writable, and no session accepts it.
    """

    cdef int close(self, Py_ssize_t written) except -1:
        if not self.is_open:
            raise RuntimeError("send buffer is already closed")
        if written < 0 or written > self.capacity:
            raise ValueError(f"wrote {written} bytes into a {self.capacity}-byte region")
        self.is_open = False
        self.size = written
        # Give back the unwritten end of the region when nothing was opened after it.
        if self.data + self.capacity == self.chunk.data + self.chunk.used:
            self.chunk.used -= self.capacity - written
        return 0

    def commit(self, Py_ssize_t written):
        """Close a reserved region: its first `written` bytes are the packet,
        read-only from now on, and it may be sent."""
        if self.writers:
            raise BufferError("release every memoryview of the region before commit()")
        self.close(written)

    def __len__(self):
        return self.size

    def __getbuffer__(self, Py_buffer* view, int flags):
        if self.is_open:
            # All of the reserved region, for writing the packet in place.
            PyBuffer_FillInfo(view, self, self.data, self.capacity, 0, flags)
            self.writers += 1
            return
        if flags & PyBUF_WRITABLE:
            raise BufferError("send buffers are read-only")
        PyBuffer_FillInfo(view, self, self.data, self.size, 1, flags)

    def __releasebuffer__(self, Py_buffer* view):
        if not view.readonly:
            self.writers -= 1

    def __dealloc__(self):
        cdef SendBufferChunk chunk = self.chunk
        if chunk is None:
            return
        chunk.live -= 1
        if chunk.live == 0 and chunk.pool is not None:
            chunk.pool._recycle(chunk)


cdef class SendBufferPool:
    """Hands out regions of pooled chunks; one pool per thread of sending code.

    SendBufferPool(chunk_size=65536): packets are written back to back into
    chunks of chunk_size bytes (a larger packet gets a chunk of its own); a
    chunk is reused once every SendBuffer in it is gone. make_packet() uses
    the process-wide default_pool().
    """

    def __cinit__(self, Py_ssize_t chunk_size=DEFAULT_CHUNK_SIZE):
        if chunk_size < HEADER_SIZE:
            raise ValueError("chunk_size must hold at least a header")
        self.chunk_size = chunk_size
        self.free_chunks = []

    @property
    def free_count(self):
        return len(self.free_chunks)

    cdef SendBuffer open(self, Py_ssize_t alloc_size):
        """A writable region of alloc_size bytes; close() it with what was written."""
        cdef SendBufferChunk chunk
        cdef SendBuffer buf = SendBuffer.__new__(SendBuffer)
        if alloc_size < 0:
            raise ValueError("alloc_size must be >= 0")
        self.regions_opened += 1
        if alloc_size > self.chunk_size:
            chunk = SendBufferChunk(alloc_size, None)
            self.oversize_created += 1
        else:
            chunk = self.current
            if chunk is None or chunk.capacity - chunk.used < alloc_size:
                chunk = self._take_chunk()
        buf.chunk = chunk
        buf.data = chunk.data + chunk.used
        buf.capacity = alloc_size
        buf.is_open = True
        chunk.used += alloc_size        # reserved now, so regions never overlap
        chunk.live += 1
        return buf

    def write(self, unsigned int pkt_id, payload):
        """Python access to the open/write/close cycle: one packet in this pool."""
        return _write_packet(self, pkt_id, payload)

    def reserve(self, Py_ssize_t size):
        """An open region of `size` bytes, to write a packet (header included)
        in place through memoryview(buf); buf.commit(written) closes it.
        Until then no session accepts it."""
        return self.open(size)

    cdef SendBufferChunk _take_chunk(self):
        cdef SendBufferChunk old = self.current
        cdef SendBufferChunk chunk
        if self.free_chunks:
            chunk = self.free_chunks.pop()
        else:
            chunk = SendBufferChunk(self.chunk_size, self)
            self.chunks_created += 1
        self.current = chunk
        if old is not None and old.live == 0:
            self._recycle(old)
        return chunk

    cdef void _recycle(self, SendBufferChunk chunk) noexcept:
        # The current chunk restarts from its beginning; a retired one goes
        # back to the free list (or is dropped once enough are kept).
        chunk.used = 0
        if chunk is self.current:
            return
        if len(self.free_chunks) < MAX_FREE_CHUNKS:
            self.free_chunks.append(chunk)


cdef SendBufferPool _default_pool = SendBufferPool()


def default_pool():
    """The process-wide pool that make_packet uses."""
    return _default_pool


cpdef SendBuffer make_packet(unsigned int pkt_id, object payload):
    """Header + payload (any C-contiguous bytes-like) in a pooled send buffer:
    the 4-byte header (uint16 total size, uint16 `pkt_id`, little-endian),
    then `payload`. Send it to one session (session.send) or to many
    (send_to_all): it is written once and shared. A packet of more than
    65535 bytes (header included), or an id above 65535, raises ValueError."""
    return _write_packet(_default_pool, pkt_id, payload)


cdef SendBuffer _write_packet(SendBufferPool pool, unsigned int pkt_id, object payload):
    cdef Py_buffer view
    cdef SendBuffer buf
    if pkt_id > 0xFFFF:
        raise ValueError(f"packet id {pkt_id} does not fit the uint16 id field")
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        if view.len + HEADER_SIZE > MAX_WIRE_SIZE:
            raise ValueError(f"packet of {view.len + HEADER_SIZE} bytes does not fit "
                             f"the uint16 size field")
        buf = pool.open(view.len + HEADER_SIZE)
        write_header(buf.data, view.len + HEADER_SIZE, pkt_id)
        memcpy(buf.data + HEADER_SIZE, view.buf, view.len)
        buf.close(view.len + HEADER_SIZE)
        buf.frames = 1
    finally:
        PyBuffer_Release(&view)
    return buf


cpdef SendBuffer copy_frames(const unsigned char[::1] data):
    """A run of whole, already-framed packets copied into one pooled send
    buffer, so that it fans out as one queue entry per recipient. Every header
    is checked: a run that does not end on a packet boundary raises ValueError."""
    cdef Py_ssize_t n = data.shape[0], pos = 0, frames = 0
    cdef FrameHeader h
    if n == 0:
        raise ValueError("no packets to copy")
    while pos < n:
        if read_header(&data[pos], n - pos, MAX_WIRE_SIZE, &h) != FRAME_OK:
            raise ValueError(f"not a whole packet at offset {pos} of {n}")
        pos += h.size
        frames += 1
    return copy_run(&data[0], n, frames)


cdef SendBuffer copy_run(const unsigned char* data, Py_ssize_t n, Py_ssize_t frames):
    cdef SendBuffer buf = _default_pool.open(n)
    memcpy(buf.data, data, n)
    buf.close(n)
    buf.frames = frames
    return buf
