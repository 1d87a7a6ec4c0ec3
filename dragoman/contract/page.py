"""The control protocol between the page and its agent, version 1: JSON objects on the call's
control WebSocket (``/v1/calls/{id}/control``), relayed by the api and the worker.

Every message carries ``v`` (1) and ``type``. Agent → page:

- ``caption``: ``id`` (the utterance), ``side`` (``source`` | ``translation``), ``lang``,
  ``final``, ``text``, ``t_start_ms``, ``t_end_ms`` (ms since the call started; 0 when the
  provider gives no timing). A partial line is replaced by later ones with the same ``id``
  and ``side``; a final one with empty text withdraws it. A partial line may carry
  ``stable``: how many leading characters of its ``text`` are committed (simultaneous
  interpretation: later partials keep them; the rest may still change). Absent: all of a
  final line is committed, none of a partial one.
- ``state``: ``state`` (``listening`` | ``translating`` | ``speaking`` | ``ended``); when
  ended, ``reason`` (a code) and ``message`` (its sentence).
- ``languages``: the pair in force (``source``, ``target``, ``mode``) and, where the agent
  knows it, ``interpretation`` (``simultaneous`` | ``consecutive``), after the call starts
  and after every ``set_languages`` and ``set_interpretation``, refused ones included.
- ``error``: ``code``, ``message`` (always our sentence, never a provider's text), ``fatal``.
- ``note``: ``id`` (an utterance), ``code``, ``message``: why that utterance was shown but
  not translated (e.g. ``needs_cloud_provider``).
- ``metrics``: ``id`` (an utterance), ``marks``: when each step happened on the agent
  (``time.monotonic()`` seconds of its host; read by the latency bench).
- ``room``: ``event`` (``joined`` with the guest's ``language``, ``peer_left``), from the
  worker. In a room, the other person's captions and notes arrive too, with ``from: "peer"``
  and their ``id`` prefixed ``peer-``.

Page → agent:

- ``set_languages``: ``source``, ``target`` (answered by ``languages``, or an ``error`` then
  ``languages``).
- ``set_interpretation``: ``interpretation`` (``simultaneous`` | ``consecutive``), from the
  next words on (answered by ``languages``, or an ``error`` then ``languages``).
- ``hangup``.

Import-light: the api and the worker import it too (no Pipecat here).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

VERSION = 1

Side = Literal["source", "translation"]
State = Literal["listening", "translating", "speaking", "ended"]


class AgentMessage(BaseModel):
    """Agent → page. Field order is the wire order (the JSON stays what it always was)."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = VERSION

    def wire(self) -> dict[str, Any]:
        """The JSON object sent on the control channel (unset optional fields left out)."""
        return self.model_dump(exclude_none=True)


class Caption(AgentMessage):
    type: Literal["caption"] = "caption"
    id: str
    side: Side
    lang: str
    final: bool
    text: str
    t_start_ms: int
    t_end_ms: int
    stable: int | None = None  # committed leading characters of a partial's text


class StateMessage(AgentMessage):
    type: Literal["state"] = "state"
    state: State
    reason: str | None = None
    message: str | None = None


class Languages(AgentMessage):
    type: Literal["languages"] = "languages"
    source: str
    target: str
    mode: str
    interpretation: str | None = None  # the interpretation in force


class Note(AgentMessage):
    type: Literal["note"] = "note"
    id: str
    code: str
    message: str


class Metrics(AgentMessage):
    type: Literal["metrics"] = "metrics"
    id: str
    marks: dict[str, float]


class Error(AgentMessage):
    type: Literal["error"] = "error"
    code: str
    message: str
    fatal: bool = False


class Room(AgentMessage):
    """Sent by the worker, not the agent: ``joined`` (with the guest's ``language``) or
    ``peer_left``."""

    type: Literal["room"] = "room"
    event: Literal["joined", "peer_left"]
    language: str | None = None


class PageMessage(BaseModel):
    """Page → agent. Unknown extra fields are ignored (an older agent, a newer page)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = VERSION


class SetLanguages(PageMessage):
    type: Literal["set_languages"] = "set_languages"
    source: StrictStr
    target: StrictStr


class SetInterpretation(PageMessage):
    type: Literal["set_interpretation"] = "set_interpretation"
    # Any string: the agent checks it against its provider and call mode (catalog policy)
    # and answers a refusal with its reason and the ``languages`` still in force.
    interpretation: StrictStr


class Hangup(PageMessage):
    type: Literal["hangup"] = "hangup"


Control = Annotated[SetLanguages | SetInterpretation | Hangup, Field(discriminator="type")]
