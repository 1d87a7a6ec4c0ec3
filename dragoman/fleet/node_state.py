"""A worker node's state as the registry records it (import-free: pure policy reads it)."""

from __future__ import annotations

from enum import StrEnum


class NodeState(StrEnum):
    """StrEnum: the values are the strings Redis, JSON and the Lua reserve script compare."""

    READY = "READY"  # takes calls
    DRAINING = "DRAINING"  # finishing its calls before it leaves; takes none
    NOT_READY = "NOT_READY"  # up, but cannot take calls now (media gateway or inference restarting)
