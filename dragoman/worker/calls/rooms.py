"""Two-party rooms on one node: which calls are each other's peer, and what of one agent's
output the other participant gets.

Each participant keeps their own agent. An agent in a room sends its translated speech to
the worker (``room_audio``) instead of its own caller, and the worker hands it to the peer's
agent, which plays it to its caller: audio moves between two processes on one host through
their pipes, never through the network or the media gateway twice. Captions and notes are
shown on both pages; the peer's copy is marked ``from: "peer"`` and its utterance ids are
prefixed so the two agents' ids never collide.
"""

from __future__ import annotations

from typing import Any, Literal

from dragoman.contract.page import Room

SHARED_TYPES = frozenset({"caption", "note"})


class Rooms:
    def __init__(self) -> None:
        self._peer: dict[str, str] = {}

    def peer(self, call_id: str | None) -> str | None:
        return self._peer.get(call_id) if call_id else None

    def link(self, guest: str, host: str) -> None:
        self._peer[guest] = host
        self._peer[host] = guest

    def unlink(self, call_id: str | None) -> str | None:
        """The call left: its peer (now alone), if it had one."""
        peer = self._peer.pop(call_id, None) if call_id else None
        if peer is not None:
            self._peer.pop(peer, None)
        return peer


def for_peer(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The peer page's copy of an agent → page message, or None if it is not shared."""
    if msg.get("type") not in SHARED_TYPES:
        return None
    return {**msg, "id": f"peer-{msg.get('id', '')}", "from": "peer"}


def room_event(
    event: Literal["joined", "peer_left"], language: str | None = None
) -> dict[str, Any]:
    """``room`` control message: ``joined`` (with the guest's language), ``peer_left``."""
    return Room(event=event, language=language).wire()
