"""Types of the compiled netcore.recvbuffer (recvbuffer.pyx, recvbuffer.pxd): C-level only."""
from typing_extensions import disjoint_base

@disjoint_base
class RecvBuffer: ...
