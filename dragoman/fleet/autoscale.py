"""How many worker nodes the fleet wants (pure policy over plain numbers).

This first policy keeps the running calls plus a fixed warm buffer covered; sizing the
buffer from the recent arrival rate and a node's boot time is the surge issue's work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AutoscaleConfig:
    slots_per_node: int
    buffer_floor_slots: int
    min_nodes: int = 1
    max_nodes: int = 200


def desired_nodes(active_calls: int, cfg: AutoscaleConfig) -> int:
    need = math.ceil((active_calls + cfg.buffer_floor_slots) / max(1, cfg.slots_per_node))
    return max(cfg.min_nodes, min(cfg.max_nodes, need))
