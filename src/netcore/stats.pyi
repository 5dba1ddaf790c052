"""Types of the compiled netcore.stats (stats.pyx, stats.pxd)."""
from typing_extensions import disjoint_base

LATENCY_BOUNDS: tuple[float, ...]

@disjoint_base
class PacketStats:
    def snapshot(self) -> dict[int, tuple[int, int, int, int]]: ...

@disjoint_base
class LatencyHistogram:
    @property
    def count(self) -> int: ...
    def observe(self, seconds: float) -> None: ...
    def snapshot(self) -> tuple[list[tuple[float, int]], float]: ...
