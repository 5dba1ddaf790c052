"""netcore_cluster: rooms that span worker processes and machines, over NATS.

Beside the transport (netcore) and behind the game's two seams: a room owned
by another worker is a RemoteRoom that forwards the room's jobs to its owner
(gateway.py), and a room owned here streams what it broadcasts to the
workers that have members in it (owner.py). ClusterLink (link.py) is one
worker's NATS connection; placement.py says who owns a room; supervisor.py
runs a machine's workers; natsd.py a private nats-server. See
docs/architecture.md, "More than one process".
"""
from netcore_cluster.placement import ClusterMap, Placement

__all__ = ["ClusterMap", "Placement"]
