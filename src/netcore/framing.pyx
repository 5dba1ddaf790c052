# cython: language_level=3
"""Python view of the framing rules, for tests, fuzzing and tools.

The sessions use the inline functions from framing.pxd directly; this module
runs the very same functions over a Python bytes object.
"""
from netcore.framing cimport (
    FRAME_OK, FRAME_PARTIAL, FRAME_TOO_SMALL, FRAME_TOO_LARGE,
    FrameHeader, FrameReader, frame_next, HEADER_SIZE, MAX_WIRE_SIZE,
)

HEADER = HEADER_SIZE
MAX_PACKET_SIZE = MAX_WIRE_SIZE


def header_error(Py_ssize_t size, Py_ssize_t max_size):
    """The protocol-error text for a bad size field, or None when it is valid."""
    if size < HEADER_SIZE:
        return f"header size {size} < {HEADER_SIZE}"
    if size > max_size:
        return f"header size {size} > maximum {max_size}"
    return None


def split_frames(const unsigned char[::1] data, Py_ssize_t max_size=MAX_WIRE_SIZE):
    """Parse every whole packet in `data`, any C-contiguous bytes-like object
    (the parser walks it with a pointer: a strided view is refused, BufferError).

    Returns (packets, consumed, error): packets is a list of (id, payload bytes),
    consumed the number of bytes they took, error None or the protocol-error text
    that stops parsing (the bytes from there on are not consumed).
    """
    cdef FrameReader r
    cdef FrameHeader h
    cdef FrameStatus st
    packets = []
    r.buf = &data[0] if data.shape[0] else NULL
    r.len = data.shape[0]
    r.pos = 0
    while True:
        st = frame_next(&r, max_size, &h)
        if st == FRAME_OK:
            packets.append((h.pkt_id, r.buf[r.pos + HEADER_SIZE:r.pos + h.size]))
            r.pos += h.size
        elif st == FRAME_PARTIAL:
            return packets, r.pos, None
        else:
            return packets, r.pos, header_error(h.size, max_size)
