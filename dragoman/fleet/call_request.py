"""What travels from the api to the agent that will take a call."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CallRequest:
    call_id: str
    sdp: str
    sdp_type: str
    source: str
    target: str
    provider: str = "local"
    glossary: str | None = None  # a glossary NAME; its text is read on the node
    # The per-call secret the page presents on the call's control channel (made by the api).
    control_token: str = ""
    # This call's duration cap (the server's, or lower from the caller's ticket); None: the
    # node's own max_call_s.
    max_call_s: float | None = None
    mode: str = "one_way"  # or "conversation", "room" (see languages.LanguagePair)
    # A room's second participant: the call that invited it (on the same node).
    room_host: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
