"""Who owns a room: a fixed function of the room id over the cluster's worker slots.

A deployment is a cluster map, `node=workers` for every machine, given alike to
every node (`--cluster a=4,b=4`; by default just this node). Its slots are
`<node>-<index>`, and a room's owner is the slot with the highest hash of
(room id, slot): rendezvous hashing. Every worker computes the same owner with
no message and no coordinator; a worker that dies is restarted by its node's
supervisor under the same slot, so ownership never moves. Adding a node moves
only the rooms the new slots win (about workers_added / total_workers of them).
"""
from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")
MAX_SLOTS = 1024


def default_node_id() -> str:
    """This machine's host name, as a subject-safe token."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:48]
    return name or "node"


def check_node_id(node: str) -> str:
    if not NAME.fullmatch(node):
        raise ValueError(f"node id {node!r}: use 1-48 letters, digits, '-' or '_'")
    return node


@dataclass(frozen=True)
class ClusterMap:
    """Nodes and their worker counts, in a fixed (sorted) order."""
    nodes: tuple[tuple[str, int], ...]

    @classmethod
    def single(cls, node: str, workers: int) -> "ClusterMap":
        return cls.from_dict({node: workers})

    @classmethod
    def from_dict(cls, nodes: dict[str, int]) -> "ClusterMap":
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        for node, workers in nodes.items():
            check_node_id(node)
            if not isinstance(workers, int) or workers < 1:
                raise ValueError(f"node {node}: workers must be >= 1, not {workers!r}")
        cmap = cls(tuple(sorted(nodes.items())))
        if len(cmap.slots) > MAX_SLOTS:
            raise ValueError(f"{len(cmap.slots)} worker slots; at most {MAX_SLOTS}")
        return cmap

    @classmethod
    def parse(cls, text: str) -> "ClusterMap":
        """`a=4,b=2` (node=workers, comma-separated)."""
        nodes: dict[str, int] = {}
        for part in text.split(","):
            node, sep, count = part.strip().partition("=")
            if not sep or not count.strip().isdigit():
                raise ValueError(f"cluster {text!r}: expected node=workers[,node=workers...]")
            if node.strip() in nodes:
                raise ValueError(f"cluster {text!r}: node {node.strip()} given twice")
            nodes[node.strip()] = int(count)
        return cls.from_dict(nodes)

    def __str__(self) -> str:
        return ",".join(f"{node}={n}" for node, n in self.nodes)

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(f"{node}-{i}" for node, n in self.nodes for i in range(n))

    def workers_of(self, node: str) -> int:
        return dict(self.nodes).get(node, 0)

    def slot_index(self, slot: str) -> int:
        """The slot's position in the map: a small number unique in the cluster."""
        return self.slots.index(slot)


class Placement:
    """owner(room_id) over one ClusterMap, cached per room."""

    CACHE_LIMIT = 1 << 16

    def __init__(self, cmap: ClusterMap):
        self.cmap = cmap
        self._keys = [(slot, slot.encode()) for slot in cmap.slots]
        self._cache: dict[int, str] = {}

    def owner(self, room_id: int) -> str:
        slot = self._cache.get(room_id)
        if slot is None:
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            room = room_id.to_bytes(8, "little")
            slot = max(self._keys, key=lambda k: hashlib.blake2b(
                room + k[1], digest_size=8).digest())[0]
            self._cache[room_id] = slot
        return slot
