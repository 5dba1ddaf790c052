"""Types of the compiled netcore.sendqueue (sendqueue.pyx, sendqueue.pxd)."""
from typing_extensions import disjoint_base


@disjoint_base
class SendQueue:
    @property
    def nbytes(self) -> int: ...
    def __len__(self) -> int: ...
