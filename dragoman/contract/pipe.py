"""The worker ↔ agent pipe messages: one pydantic model per message, a ``kind`` Literal to
tell them apart, one TypeAdapter for each direction.

On the wire a message is its ``model_dump()`` dict, pickled by the pipe; the receiving end
validates it with the adapter of its direction (``contract.channel.PipeChannel``). Dicts, not
pickled models: the pipe carries a heartbeat per agent per second, pacing counts and
translated speech in 200 ms pieces on a node with a hundred agents, and a dict costs a few
microseconds to build, pickle, unpickle and validate (a ping about 2.5 µs, 200 ms of room
audio about 4 µs, against about 1-2 µs for the untyped dicts before). The envelopes named
by their direction, ``ToPage`` (kind ``msg``) and ``FromPage`` (kind ``control``), carry a
page message (``contract.page``) as an opaque dict: the control channel relays it.

Worker → agent: ``offer`` (the call and the Janus side of its RTP), ``media_up`` /
``media_down`` (the caller's WebRTC came up / went down), ``control`` (from the page),
``end``, ``stop`` (while idle), and in a two-party room ``room_joined``, ``room_audio`` (the
other participant's translated speech) and ``room_left``.

Agent → worker: ``ready`` (idle, with its RTP port), ``accepted`` / ``error`` (the offer),
``msg`` (for the page), ``pacing``, ``ended``, ``room_audio`` (our translation, for the other
participant), and ``ping`` every ``agent_heartbeat_s`` from its event loop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dragoman.contract.calls import CallRequest


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- worker → agent -----------------------------------------------------------------------
class RtpPeer(BaseModel):
    """Where Janus takes and sends the call's plain RTP (the agent's peer)."""

    model_config = ConfigDict(frozen=True)

    address: str
    port: int
    payload_type: int


class Offer(_Message):
    """Take this call. ``call``: the request without its SDP (Janus terminates the caller's
    WebRTC) or its control token (the worker checks the page's)."""

    kind: Literal["offer"] = "offer"
    call: CallRequest
    peer: RtpPeer


class MediaUp(_Message):
    kind: Literal["media_up"] = "media_up"


class MediaDown(_Message):
    """The caller's WebRTC went down (ICE failed, DTLS alert, the caller closed it)."""

    kind: Literal["media_down"] = "media_down"
    reason: str = ""


class FromPage(_Message):
    """A message from the page (a ``contract.page`` control message, relayed as is): the
    envelope of page → agent messages on the pipe."""

    kind: Literal["control"] = "control"
    msg: Any


class End(_Message):
    """End the call (hang-up, drain, media lost, max duration): the agent says ``ended``."""

    kind: Literal["end"] = "end"
    reason: str = "remote_hangup"


class Stop(_Message):
    """Exit without a call (the pool shrinks or the node drains)."""

    kind: Literal["stop"] = "stop"


class RoomJoined(_Message):
    """Our call became a room's host: the guest speaks ``language``."""

    kind: Literal["room_joined"] = "room_joined"
    language: str


class RoomLeft(_Message):
    kind: Literal["room_left"] = "room_left"


# --- both ways ----------------------------------------------------------------------------
class RoomAudio(_Message):
    """Translated speech for the room's other participant (16-bit mono PCM at ``rate``), in
    pieces of about 200 ms: agent → worker → the peer's agent."""

    kind: Literal["room_audio"] = "room_audio"
    pcm: bytes
    rate: int


# --- agent → worker -----------------------------------------------------------------------
class Ready(_Message):
    """Idle and ready for a call on loopback RTP port ``rtp_port`` (RTCP: the next one)."""

    kind: Literal["ready"] = "ready"
    rtp_port: int


class Accepted(_Message):
    """The call is valid: the answer can go out while the pipeline is built."""

    kind: Literal["accepted"] = "accepted"
    timings_ms: dict[str, float] = Field(default_factory=dict)


class Refused(_Message):
    """The call cannot be served (``contract.errors.CallRejected``'s code and message)."""

    kind: Literal["error"] = "error"
    code: str
    message: str


class ToPage(_Message):
    """A message for the page (a ``contract.page`` message, as a dict): the envelope of
    agent → page messages on the pipe."""

    kind: Literal["msg"] = "msg"
    msg: dict[str, Any]


class Pacing(_Message):
    """Audio frames sent to the caller since the last report, and how many went out late."""

    kind: Literal["pacing"] = "pacing"
    frames: int
    late: int


class Ended(_Message):
    kind: Literal["ended"] = "ended"
    reason: str


class Ping(_Message):
    """The heartbeat, from the agent's event loop: it proves the loop runs."""

    kind: Literal["ping"] = "ping"


ToAgent = Annotated[
    Offer | MediaUp | MediaDown | FromPage | End | Stop | RoomJoined | RoomAudio | RoomLeft,
    Field(discriminator="kind"),
]
ToWorker = Annotated[
    Ready | Accepted | Refused | ToPage | Pacing | Ended | RoomAudio | Ping,
    Field(discriminator="kind"),
]
TO_AGENT: TypeAdapter[ToAgent] = TypeAdapter(ToAgent)
TO_WORKER: TypeAdapter[ToWorker] = TypeAdapter(ToWorker)

PING = Ping()  # one instance: a beat allocates nothing but its pickle
