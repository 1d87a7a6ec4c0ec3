"""The call hand-off: what the api sends the worker that will take a call, what comes back,
and a room invitation's request and answer. The worker's internal endpoint validates its
bodies with these models; ``fleet.worker_client`` sends and reads them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The worker's internal endpoint: the secret api replicas share with workers, and a call's
# control token when an api relays the page's control channel to the call's node.
TOKEN_HEADER = "X-Dragoman-Token"
CALL_TOKEN_HEADER = "X-Dragoman-Call-Token"

# How a call is interpreted: while the person still talks, or after each sentence (turn by
# turn). Which one a provider and a call mode allow is policy (pipeline.providers.catalog).
Interpretation = Literal["simultaneous", "consecutive"]
INTERPRETATIONS: tuple[Interpretation, ...] = ("simultaneous", "consecutive")


class CallRequest(BaseModel):
    """What travels from the api to the agent that will take a call."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    sdp: str
    sdp_type: str = "offer"
    source: str
    target: str
    provider: str = "local"
    glossary: str | None = None  # a glossary NAME; its text is read on the node
    # The per-call secret the page presents on the call's control channel (made by the api).
    control_token: str = ""
    # This call's duration cap (the server's, or lower from the caller's ticket); None: the
    # node's own max_call_s.
    max_call_s: float | None = None
    # One-way, a conversation or a room (see languages.LanguagePair); the api validated it,
    # the agent checks it again against its provider.
    mode: str = "one_way"
    # A room's second participant: the call that invited it (on the same node).
    room_host: str | None = None
    # Resolved by the api (the call mode's default where the caller named none).
    interpretation: Interpretation = "simultaneous"
    # The W3C traceparent of the span that handed the call on (api → worker → agent), when
    # tracing is on (``dragoman.tracing``): one trace follows the call across processes.
    traceparent: str | None = None
    # The concurrency-limit keys the api counted this call against (``admission.hold_call``)
    # and how long such a hold may last: a Redis that restarted empty takes them back from
    # the node's heartbeat, so a restart does not lift the limits off running calls.
    holds: tuple[str, ...] = ()
    hold_max_age_s: float = 0.0


class CallAnswer(BaseModel):
    """The agent's answer to a call, as the worker returns it (``node_id``: set by the
    dispatcher, which knows where it placed the call)."""

    sdp: str
    type: Literal["answer"] = "answer"
    timings_ms: dict[str, float] = Field(default_factory=dict)
    pid: int | None = None  # the agent process holding the call (benchmarks read it)
    node_id: str | None = None


class InviteRequest(BaseModel):
    """api → worker: make ``call_id`` a room, for a caller holding its control token."""

    control_token: str
    ttl_s: float = 600.0


class InviteAnswer(BaseModel):
    """The slot reserved for a room's second person, next to its host's call."""

    guest_call_id: str
    host_call_id: str
    language: str  # what the host speaks
    provider: str
    node_id: str
