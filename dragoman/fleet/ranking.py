"""Node choice policy: pure functions over a registry snapshot, shared by the API and simulator.

**Packing.** A new call goes to the fullest READY node that still has room, so calls gather
on as few nodes as possible and the others empty — only empty nodes are ever drained
(``autoscale.choose_drain``), so spreading calls evenly would keep every node alive while
traffic lasts. Two things keep packing from hurting connect times:

* **Spread**: the first choice is one of the ``spread`` fullest nodes with room, picked by the
  call id (a stable hash), so a burst's handshakes are shared by a few nodes instead of all
  landing on one (a node's answer time grows with the handshakes it is doing at once;
  ``dragoman bench connect`` at several burst sizes).
* **Headroom**: the last ``headroom`` fraction of each node's slots is used only once every
  node is that full; those slots then go least-loaded first. So no node is packed to the
  brim while another still has packing room, and the spill of a burst is spread.

**Local calls** (the node's shared Whisper + Piper) also need a free local slot: nodes
without one are not candidates at all, whatever their call slots (``reserve`` re-checks).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from dragoman.fleet.node_state import NodeState
from dragoman.fleet.registry import NodeInfo


@dataclass(frozen=True)
class Packing:
    headroom: float = 0.1  # fraction of each node's slots kept until every node is that full
    spread: int = 4  # new calls are shared among this many of the fullest nodes with room

    def packable_slots(self, capacity: int) -> int:
        """Slots of a node filled in packing order (the rest is its headroom)."""
        return capacity - math.ceil(max(0.0, self.headroom) * capacity)


DEFAULT_PACKING = Packing()


def _usable(node: NodeInfo) -> bool:
    return node.state == NodeState.READY and node.alive


def _has_slot(node: NodeInfo) -> bool:
    return node.load < node.capacity


def _has_local_slot(node: NodeInfo) -> bool:
    return node.local_load < node.local_capacity


def _fill(node: NodeInfo) -> float:
    return node.load / node.capacity if node.capacity > 0 else math.inf


def rank_nodes(
    nodes: list[NodeInfo], key: str = "", packing: Packing = DEFAULT_PACKING, local: bool = False
) -> list[str]:
    """READY, alive node ids in the order to try them (``reserve`` takes the first with a slot);
    for a ``local`` call only those with a free local slot, in the same order.

    1. Nodes below their headroom, fullest first (by fraction of capacity, then by load, then
       by id); with a ``key`` (the call id) one of the first ``spread`` of them leads.
    2. Nodes with a free slot within their headroom, least-loaded first, ties by id.
    3. Full nodes, by id: the snapshot may be stale, and ``reserve`` re-checks load atomically.
    """
    usable = [n for n in nodes if _usable(n) and (not local or _has_local_slot(n))]
    packable = [n for n in usable if n.load < packing.packable_slots(n.capacity)]
    packable.sort(key=lambda n: (-_fill(n), -n.load, n.node_id))
    if key and packable and packing.spread > 1:
        lead = zlib.crc32(key.encode()) % min(packing.spread, len(packable))
        packable.insert(0, packable.pop(lead))
    chosen = {n.node_id for n in packable}
    spill = sorted(
        (n for n in usable if _has_slot(n) and n.node_id not in chosen),
        key=lambda n: (_fill(n), n.node_id),
    )
    full = sorted((n for n in usable if not _has_slot(n)), key=lambda n: n.node_id)
    return [n.node_id for n in packable] + [n.node_id for n in spill] + [n.node_id for n in full]


def free_slots(nodes: list[NodeInfo]) -> int:
    """Call slots that READY, alive nodes can take right now."""
    return sum(max(0, n.capacity - n.load) for n in nodes if _usable(n))


def free_local_slots(nodes: list[NodeInfo]) -> int:
    """Local calls that READY, alive nodes can take right now (each also needs a call slot)."""
    return sum(
        max(0, min(n.local_capacity - n.local_load, n.capacity - n.load))
        for n in nodes
        if _usable(n)
    )
