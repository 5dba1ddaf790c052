# Writing protobuf by hand, for packets laid out in C (netcore.field's
# S_MOVE/S_SPAWN/S_DESPAWN, netcore-dummy's C_MOVE): varints and proto3
# floats. Inline functions only, cimported (copied into each module).
#
# A float field of bits 0 (0.0) is left out, as proto3 does; -0.0 has bits
# and would be written, so callers that mean 0.0 normalise it first (x + 0.0f).

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline int varint_size(uint64_t v) noexcept:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline unsigned char* put_varint(unsigned char* p, uint64_t v) noexcept:
    while v >= 0x80:
        p[0] = <unsigned char>(v & 0x7F | 0x80)
        p += 1
        v >>= 7
    p[0] = <unsigned char>v
    return p + 1


cdef inline uint32_t float_bits(float f) noexcept:
    cdef uint32_t bits
    memcpy(&bits, &f, 4)
    return bits


cdef inline unsigned char* put_float(unsigned char* p, unsigned char tag, float f) noexcept:
    """A fixed32 field, little-endian, left out where its bits are 0 (proto3)."""
    cdef uint32_t bits = float_bits(f)
    if bits == 0:
        return p
    p[0] = tag
    p[1] = <unsigned char>(bits & 0xFF)
    p[2] = <unsigned char>(bits >> 8 & 0xFF)
    p[3] = <unsigned char>(bits >> 16 & 0xFF)
    p[4] = <unsigned char>(bits >> 24)
    return p + 5


cdef inline int float_size(float f) noexcept:
    return 5 if float_bits(f) != 0 else 0
