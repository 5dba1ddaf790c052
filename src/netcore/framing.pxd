# The wire framing, shared by every module that reads or writes packets.
#
# A packet is a 4-byte header, uint16 size (little-endian, the whole packet
# including the header) then uint16 id, then the payload. The original C++
# server trusted the size field and spun forever on size 0; here every header
# is classified before anything else looks at it, so a hostile size can only
# ever produce a FRAME_TOO_SMALL / FRAME_TOO_LARGE verdict.
#
# These are inline C: the receive loop calls frame_next once per packet.

cdef enum:
    HEADER_SIZE = 4
    MAX_WIRE_SIZE = 65535       # what a uint16 size field can say

cdef enum FrameStatus:
    FRAME_OK = 0                # a whole packet is there
    FRAME_PARTIAL = 1           # wait for more bytes
    FRAME_TOO_SMALL = 2         # size < HEADER_SIZE: protocol error
    FRAME_TOO_LARGE = 3         # size > the session's maximum: protocol error

cdef struct FrameHeader:
    Py_ssize_t size             # total size, header included
    unsigned int pkt_id

# A read cursor over a contiguous span of received bytes.
cdef struct FrameReader:
    const unsigned char* buf
    Py_ssize_t len
    Py_ssize_t pos


cdef inline FrameStatus read_header(const unsigned char* p, Py_ssize_t avail,
                                    Py_ssize_t max_size, FrameHeader* out) noexcept:
    # Too small / too large are decided as soon as 4 bytes are in, so a huge
    # size drip-fed a byte at a time is refused before any of its body arrives.
    if avail < HEADER_SIZE:
        return FRAME_PARTIAL
    out.size = <Py_ssize_t>(p[0] | (p[1] << 8))
    out.pkt_id = p[2] | (p[3] << 8)
    if out.size < HEADER_SIZE:
        return FRAME_TOO_SMALL
    if out.size > max_size:
        return FRAME_TOO_LARGE
    if out.size > avail:
        return FRAME_PARTIAL
    return FRAME_OK


cdef inline FrameStatus frame_next(FrameReader* r, Py_ssize_t max_size,
                                   FrameHeader* out) noexcept:
    """Classify the packet at the cursor; on FRAME_OK the caller reads it at
    r.buf + r.pos and advances r.pos by out.size."""
    return read_header(r.buf + r.pos, r.len - r.pos, max_size, out)


cdef inline void write_header(unsigned char* p, Py_ssize_t size,
                              unsigned int pkt_id) noexcept:
    p[0] = size & 0xFF
    p[1] = (size >> 8) & 0xFF
    p[2] = pkt_id & 0xFF
    p[3] = (pkt_id >> 8) & 0xFF
