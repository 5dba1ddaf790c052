# The protobuf wire format, read in C: what the dummy's decoders share
# (tally.pyx: S_CHAT; walk.pyx: the field's packets). Inline functions only,
# cimported (copied into each module); nothing to import at run time.
#
# A reader takes a cursor (*pp) and the end of the bytes, advances the cursor
# past what it read, and returns False for anything cut short or invalid, as
# protobuf (upb) would refuse it: the callers count such a packet malformed.

from libc.stdint cimport UINT32_MAX, uint64_t

cdef enum:
    WT_VARINT = 0
    WT_I64 = 1
    WT_LEN = 2
    WT_SGROUP = 3
    WT_EGROUP = 4
    WT_I32 = 5
    MAX_VARINT_BYTES = 10
    MAX_GROUP_DEPTH = 100       # protobuf's default recursion limit


cdef inline bint read_varint(const unsigned char** pp, const unsigned char* end,
                             uint64_t* out) noexcept nogil:
    """Decode a base-128 varint at *pp (at most 10 bytes; bits past 64 are
    dropped, as protobuf does) and advance *pp; False if it is cut short."""
    cdef const unsigned char* p = pp[0]
    cdef uint64_t v = 0
    cdef unsigned char b
    cdef int i
    for i in range(MAX_VARINT_BYTES):
        if p >= end:
            return False
        b = p[0]
        p += 1
        v |= <uint64_t>(b & 0x7F) << (7 * i)
        if b < 0x80:
            pp[0] = p
            out[0] = v
            return True
    return False


cdef inline bint read_tag(const unsigned char** pp, const unsigned char* end,
                          uint64_t* field, int* wire_type, bint in_group) noexcept nogil:
    """Field number 0 is invalid in a message but skipped inside an unknown
    group: what protobuf (upb) does, and what the fuzz test holds us to."""
    cdef uint64_t tag
    # Tags are uint32 varints.
    if not read_varint(pp, end, &tag) or tag > UINT32_MAX or (tag >> 3 == 0 and not in_group):
        return False
    field[0] = tag >> 3
    wire_type[0] = <int>(tag & 7)
    return True


cdef inline bint read_field(const unsigned char** pp, const unsigned char* end, int wt,
                            uint64_t* value) noexcept nogil:
    """Step over one non-group field value: *value is a varint's value or a
    length-delimited field's length (its bytes start at *pp - length)."""
    cdef Py_ssize_t width
    if wt == WT_VARINT:
        return read_varint(pp, end, value)
    if wt == WT_LEN:
        if not read_varint(pp, end, value) or value[0] > <uint64_t>(end - pp[0]):
            return False
        pp[0] += value[0]
        return True
    if wt == WT_I64:
        width = 8
    elif wt == WT_I32:
        width = 4
    else:
        return False
    if end - pp[0] < width:
        return False
    pp[0] += width
    return True




cdef inline bint skip_group(const unsigned char** pp, const unsigned char* end,
                     uint64_t group, int depth) noexcept nogil:
    """Skip to the end-group tag of `group` (nested groups included).
    Unknown groups never occur in proto3 traffic, so this is the slow path."""
    cdef uint64_t field, v
    cdef int wt
    if depth > MAX_GROUP_DEPTH:
        return False
    while read_tag(pp, end, &field, &wt, True):
        if wt == WT_EGROUP:
            return field == group
        if wt == WT_SGROUP:
            if not skip_group(pp, end, field, depth + 1):
                return False
        elif not read_field(pp, end, wt, &v):
            return False
    return False
