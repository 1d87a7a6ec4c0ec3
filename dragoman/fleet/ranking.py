"""Node choice policy: pure functions over a registry snapshot, shared by the API and simulator."""

from __future__ import annotations

from dragoman.fleet.registry import READY, NodeInfo


def _usable(node: NodeInfo) -> bool:
    return node.state == READY and node.alive


def _has_slot(node: NodeInfo) -> bool:
    return node.load < node.capacity


def rank_nodes(nodes: list[NodeInfo]) -> list[str]:
    """READY, alive node ids in the order to try them.

    Nodes with a free slot come first, least-loaded (by fraction of capacity) first; equal
    fractions go by node id, so ties consistently pile onto the same node — packing, which lets
    the autoscaler drain the ones left empty. Full nodes follow rather than being dropped: the
    snapshot may be stale, and ``reserve`` re-checks load atomically.
    """
    usable = [n for n in nodes if _usable(n)]
    free = sorted(
        (n for n in usable if _has_slot(n)), key=lambda n: (n.load / n.capacity, n.node_id)
    )
    full = sorted((n for n in usable if not _has_slot(n)), key=lambda n: n.node_id)
    return [n.node_id for n in free] + [n.node_id for n in full]


def free_slots(nodes: list[NodeInfo]) -> int:
    """Call slots that READY, alive nodes can take right now."""
    return sum(max(0, n.capacity - n.load) for n in nodes if _usable(n))
