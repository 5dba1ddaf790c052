"""Types of the compiled netcore.framing (framing.pyx; the rules are in framing.pxd)."""
from _typeshed import ReadableBuffer

HEADER: int
MAX_PACKET_SIZE: int

def header_error(size: int, max_size: int) -> str | None: ...
def split_frames(
    data: ReadableBuffer, max_size: int = 65535
) -> tuple[list[tuple[int, bytes]], int, str | None]: ...
