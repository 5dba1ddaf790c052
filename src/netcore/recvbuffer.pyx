# cython: language_level=3
from cpython.buffer cimport PyBUF_WRITE
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove

from netcore.framing cimport FrameReader

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #define NETCORE_TLS __declspec(thread)
    #else
    #define NETCORE_TLS __thread
    #endif
    static NETCORE_TLS unsigned char *netcore_scratch = NULL;
    static NETCORE_TLS void *netcore_scratch_owner = NULL;   /* lent to, by get_buffer */
    static NETCORE_TLS void *netcore_scratch_parser = NULL;  /* parsing what landed in it */

    /* The calling thread's scratch area, allocated on first use. */
    static unsigned char *netcore_scratch_get(size_t size) {
        if (netcore_scratch == NULL) netcore_scratch = (unsigned char *)malloc(size);
        return netcore_scratch;
    }
    static void *netcore_scratch_owner_get(void) { return netcore_scratch_owner; }
    static void netcore_scratch_owner_set(void *o) { netcore_scratch_owner = o; }
    static void *netcore_scratch_parser_get(void) { return netcore_scratch_parser; }
    static void netcore_scratch_parser_set(void *o) { netcore_scratch_parser = o; }
    """
    unsigned char* netcore_scratch_get(size_t size) nogil
    void* netcore_scratch_owner_get() nogil
    void netcore_scratch_owner_set(void* o) nogil
    void* netcore_scratch_parser_get() nogil
    void netcore_scratch_parser_set(void* o) nogil


cdef class RecvBuffer:

    cdef object get_buffer(self):
        cdef unsigned char* scratch
        cdef unsigned char* grown
        if self.parsing:
            raise RuntimeError("a read of this session began while it was still parsing "
                               "its previous one")
        if self.own_len <= SMALL_TAIL and netcore_scratch_parser_get() == NULL:
            scratch = netcore_scratch_get(SCRATCH_SIZE)
            if scratch == NULL:
                raise MemoryError()
            if self.own_len:
                memcpy(scratch, self.own, self.own_len)
            netcore_scratch_owner_set(<void*>self)
            self.reading_scratch = True
            self.read_base = scratch
            self.read_pre = self.own_len
            return PyMemoryView_FromMemory(<char*>scratch + self.own_len,
                                           SCRATCH_SIZE - self.own_len, PyBUF_WRITE)
        if self.own_len <= SMALL_TAIL:
            # Another session is still parsing the scratch: read aside, into own.
            if self.own_cap - self.own_len < READ_ASIDE:
                grown = <unsigned char*>realloc(self.own, self.own_len + READ_ASIDE)
                if grown == NULL:
                    raise MemoryError()
                self.own = grown
                self.own_cap = self.own_len + READ_ASIDE
        # Else a large partial packet: keep_tail sized `own` to hold all of it.
        self.reading_scratch = False
        self.read_base = self.own
        self.read_pre = self.own_len
        return PyMemoryView_FromMemory(<char*>self.own + self.own_len,
                                       self.own_cap - self.own_len, PyBUF_WRITE)

    cdef int begin(self, Py_ssize_t nbytes, FrameReader* r) except -1:
        if nbytes < 0 or self.read_base == NULL:
            raise RuntimeError("buffer_updated without get_buffer")
        if self.reading_scratch:
            if netcore_scratch_owner_get() != <void*>self:
                raise RuntimeError("receive scratch was lent to another session")
            if nbytes > SCRATCH_SIZE - self.read_pre:
                raise RuntimeError("read overran the receive buffer")
            # The tail now lives in front of the read; own is free to reuse.
            self.own_len = 0
            netcore_scratch_parser_set(<void*>self)     # not lent again until end_parse
        elif nbytes > self.own_cap - self.own_len:
            raise RuntimeError("read overran the receive buffer")
        else:
            self.own_len += nbytes
        r.buf = self.read_base
        r.len = self.read_pre + nbytes
        r.pos = 0
        self.read_base = NULL
        self.parsing = True
        return 0

    cdef int keep_tail(self, FrameReader* r, Py_ssize_t packet_size) except -1:
        """Keep the unparsed bytes r.buf[r.pos:r.len] for the next read.

        packet_size is the full size of the partial packet when its header is
        known (0 otherwise); a large tail gets room for exactly that packet.
        """
        cdef Py_ssize_t tail = r.len - r.pos
        cdef Py_ssize_t cap
        cdef unsigned char* grown
        cdef bint in_own = r.buf == self.own
        if tail == 0:
            self.release()
            return 0
        if in_own:
            if r.pos:
                memmove(self.own, self.own + r.pos, tail)
            self.own_len = tail
            if tail >= self.own_cap:
                # A raw stream consumed nothing from a full buffer: the caller
                # bounds the tail, here we only make room for the next read.
                packet_size = 0
        if tail <= SMALL_TAIL:
            cap = SMALL_TAIL            # parked only; the next read copies it to scratch
        elif packet_size > tail:
            cap = packet_size           # the rest of this packet is read straight in
        else:
            cap = tail + MIN_OWN        # raw stream with no known size: leave read room
        if in_own and tail < self.own_cap <= cap:
            # Already in place and no larger than this tail needs. A larger
            # buffer (a drained backlog's, a read aside's) is cut down to the
            # tail, however small: kept, it would be memory outside every
            # bound until the peer sends again, which it may never do.
            return 0
        if self.own_cap != cap:
            grown = <unsigned char*>realloc(self.own, cap)
            if grown == NULL:
                raise MemoryError()
            self.own = grown
            self.own_cap = cap
        if not in_own:
            memcpy(self.own, r.buf + r.pos, tail)
        self.own_len = tail
        return 0

    cdef void begin_message(self, const unsigned char* data, Py_ssize_t size,
                            FrameReader* r) noexcept:
        """A cursor over a whole message in the transport's buffer, parsed in
        place; end_parse() when done, keep_tail() for what a cap left."""
        r.buf = data
        r.len = size
        r.pos = 0
        self.parsing = True

    cdef int append(self, const unsigned char* data, Py_ssize_t size) except -1:
        """Keep a whole message behind the tail already kept (a backlog)."""
        cdef unsigned char* grown
        if size <= 0:
            return 0
        if self.own_cap - self.own_len < size:
            grown = <unsigned char*>realloc(self.own, self.own_len + size)
            if grown == NULL:
                raise MemoryError()
            self.own = grown
            self.own_cap = self.own_len + size
        memcpy(self.own + self.own_len, data, size)
        self.own_len += size
        return 0

    cdef void resume(self, FrameReader* r) noexcept:
        """A cursor over what keep_tail kept, to parse it again without a read."""
        r.buf = self.own
        r.len = self.own_len
        r.pos = 0
        self.parsing = True

    cdef void end_parse(self) noexcept:
        """The parse begun by begin() or resume() is over (keep_tail or
        release has dealt with its bytes): the scratch may be lent again."""
        self.parsing = False
        if netcore_scratch_parser_get() == <void*>self:
            netcore_scratch_parser_set(NULL)

    cdef void release(self) noexcept:
        free(self.own)
        self.own = NULL
        self.own_len = 0
        self.own_cap = 0

    def __dealloc__(self):
        if netcore_scratch_parser_get() == <void*>self:
            netcore_scratch_parser_set(NULL)
        if netcore_scratch_owner_get() == <void*>self:
            netcore_scratch_owner_set(NULL)
        free(self.own)
