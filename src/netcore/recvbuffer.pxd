# Per-session receive buffer, fed by asyncio.BufferedProtocol without a copy.
#
# Design (why it looks like this):
# - An idle session owns no receive memory at all. Reads land in a per-thread
#   scratch area (SCRATCH_SIZE), lent to one session between its get_buffer and
#   buffer_updated. Every transport we run on (selector loops, uvloop, the
#   proactor's _feed_data_to_buffered_proto) calls the two back to back in one
#   thread, so one scratch per thread serves every session. The original gave
#   each session 640 KiB; 10,000 idle players here cost 0 bytes of buffer.
# - Whatever partial packet is left after parsing (the "tail") is moved once
#   into the session's own buffer (`own`), sized for that packet, and freed as
#   soon as it has been consumed: grow for a large packet, shrink back after.
#   Whatever made `own` large before (a capped read's backlog, a read aside),
#   the tail it is left with is all it keeps: a one-byte tail behind a drained
#   62 KB backlog costs SMALL_TAIL bytes, not 62 KB, however long the peer
#   then waits before it sends again.
# - A small tail (<= SMALL_TAIL) is copied back in front of the next scratch
#   read, so streams of small packets keep reading in large chunks. A large
#   tail instead receives its remaining bytes directly in `own`, so each byte
#   of a big packet is copied at most once however slowly it is drip-fed.
# - A failed read (get_buffer without buffer_updated) loses nothing: `own`
#   keeps its tail until buffer_updated says the read landed.
# - The scratch is never lent while a session is still parsing what landed in
#   it. A handler may make another session read in the middle of a parse (a
#   transport that delivers synchronously, a test feeding sessions by hand):
#   that read then lands in the other session's own buffer (READ_ASIDE bytes,
#   freed once parsed), so the packets still being parsed are never
#   overwritten. A read of the same session in the middle of its own parse
#   would reorder its stream: get_buffer refuses it (RuntimeError).
# - A transport that hands over whole messages (WebSocket, netcore.websocket)
#   parses them where they lie, in the transport's own buffer (begin_message);
#   only what a capped parse leaves behind is kept here (keep_tail), and the
#   later messages of that same socket read are appended behind it (append)
#   until the backlog has drained.

from netcore.framing cimport FrameReader

cdef enum:
    SCRATCH_SIZE = 262144
    SMALL_TAIL = 512
    MIN_OWN = 1024      # own buffer floor when a read has to bypass scratch
    READ_ASIDE = 65536  # room for a read while another session parses the scratch

cdef class RecvBuffer:
    cdef unsigned char* own
    cdef Py_ssize_t own_len
    cdef Py_ssize_t own_cap
    cdef unsigned char* read_base   # where the bytes of the current read start
    cdef Py_ssize_t read_pre        # bytes already in front of the read at read_base
    cdef bint reading_scratch
    cdef bint parsing               # between begin/resume and end_parse

    cdef object get_buffer(self)
    cdef int begin(self, Py_ssize_t nbytes, FrameReader* r) except -1
    cdef int keep_tail(self, FrameReader* r, Py_ssize_t packet_size) except -1
    cdef void begin_message(self, const unsigned char* data, Py_ssize_t size,
                            FrameReader* r) noexcept
    cdef int append(self, const unsigned char* data, Py_ssize_t size) except -1
    cdef void resume(self, FrameReader* r) noexcept
    cdef void end_parse(self) noexcept
    cdef void release(self) noexcept
