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
- ``talk``: ``push_to_talk``, ``held``: how the agent listens now, after every
  ``push_to_talk`` and ``talk`` it took.
- ``room``: ``event`` (``joined`` with the guest's ``language``, ``peer_left``), from the
  worker. In a room, the other person's captions and notes arrive too, with ``from: "peer"``
  and their ``id`` prefixed ``peer-``.
- ``ice_answer``: ``sdp``, from the worker: the WebRTC answer to the page's ``ice_restart``
  (with its ``id``, when it had one).

Page → agent:

- ``set_languages``: ``source``, ``target`` (answered by ``languages``, or an ``error`` then
  ``languages``).
- ``set_interpretation``: ``interpretation`` (``simultaneous`` | ``consecutive``), from the
  next words on (answered by ``languages``, or an ``error`` then ``languages``).
- ``push_to_talk``: ``on`` (bool): from now on the agent hears the caller only while the talk
  button is held (``talk``); off, it listens all the time again (answered by ``talk``).
- ``talk``: ``held`` (bool), push-to-talk on: pressed, the agent hears from now on; released,
  it interprets what it heard at once (no silence wait) and hears nothing more.
- ``interpret_now``: end the utterance under way now, as a pause would; speech that goes on
  starts the next one.
- ``hangup``.

``push_to_talk``, ``talk`` and ``interpret_now`` are answered by an ``error``
(``unsupported_control``) when the call's provider finds the ends of speech itself.

Page → node (the call's worker answers it; the agent never sees it):

- ``ice_restart``: ``sdp``, a new WebRTC offer with fresh ICE credentials, after the page
  lost its media path (a network switch); optionally ``id``, echoed by its answer (an
  older restart's answer may arrive after a newer offer). The worker renegotiates the call's
  own Janus handle (the agent's plain RTP side stays as it is) and answers ``ice_answer``, or an
  ``error``: ``bad_message`` (not a usable offer), ``rate_limited`` or
  ``ice_restart_failed``; the call goes on either way.

Beside the models: the WebSocket's close codes (``CLOSE_*``) and size limits; below them,
the builders of agent → page messages, the parsers of page → agent ones, and our sentences
for end reasons and failures (``END_REASONS``, ``ERRORS``: the page shows only these, never
a provider's or an exception's text).

Import-light: the api and the worker import it too (no Pipecat here).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

if TYPE_CHECKING:  # a type only: languages sits above the contract
    from dragoman.languages import LanguagePair

VERSION = 1

Side = Literal["source", "translation"]
State = Literal["listening", "translating", "speaking", "ended"]

# The control WebSocket's close codes (4xxx: application-defined, mirroring the HTTP status),
# whoever closes it: the call's node (worker.calls.control), the api's relay (fleet.control_link).
CLOSE_ENDED = 1000  # the call is over; its last message was "state: ended"
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_CALL = 4404
CLOSE_REPLACED = 4409  # a newer connection for the same call took over
CLOSE_UNAVAILABLE = 4503  # the call's node or the registry cannot be reached: reconnect
# After these the page does not reconnect (web/call.js FINAL_CLOSE_CODES: a test keeps the two
# equal).
FINAL_CLOSE_CODES = frozenset({CLOSE_ENDED, CLOSE_UNAUTHORIZED, CLOSE_UNKNOWN_CALL, CLOSE_REPLACED})


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


class TalkState(AgentMessage):
    type: Literal["talk"] = "talk"
    push_to_talk: bool
    held: bool


class IceAnswer(AgentMessage):
    """Sent by the worker: the WebRTC answer to the page's ``ice_restart``."""

    type: Literal["ice_answer"] = "ice_answer"
    sdp: str
    id: str | None = None  # the ice_restart's


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


class PushToTalk(PageMessage):
    type: Literal["push_to_talk"] = "push_to_talk"
    on: StrictBool


class Talk(PageMessage):
    type: Literal["talk"] = "talk"
    held: StrictBool


class InterpretNow(PageMessage):
    type: Literal["interpret_now"] = "interpret_now"


# An ICE restart's offer: a browser's audio offer with its candidates is 2-6 kB.
MAX_ICE_SDP_CHARS = 16 * 1024
# One message from the page on the control WebSocket: a few dozen bytes, but an ICE restart
# carries an SDP offer (MAX_ICE_SDP_CHARS, JSON-escaped).
MAX_MESSAGE_BYTES = 20 * 1024


class IceRestart(PageMessage):
    """Page → node, answered by the call's worker (not a ``Control``: never the agent's)."""

    type: Literal["ice_restart"] = "ice_restart"
    sdp: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ICE_SDP_CHARS)]
    id: Annotated[StrictStr, Field(max_length=64)] | None = None  # echoed by its ice_answer


# The page messages the call's node answers itself.
NODE_TYPES = frozenset({"ice_restart"})

Control = Annotated[
    SetLanguages | SetInterpretation | Hangup | PushToTalk | Talk | InterpretNow,
    Field(discriminator="type"),
]
# How the caller's speech is cut into utterances: not a language change, never rate-limited
# with those (a press and a release per sentence).
TalkControl = PushToTalk | Talk | InterpretNow


# --- builders and the parser ---------------------------------------------------------
log = logging.getLogger(__name__)

END_REASONS: dict[str, str] = {
    "hangup": "You hung up.",
    "remote_hangup": "The call was ended by the service.",
    "max_duration": "The call reached its maximum duration.",
    "no_media": "No audio was received from your microphone for a while.",
    "connect_timeout": "The media connection could not be established.",
    "memory_limit": "The interpreter ran out of memory for this call.",
    "disconnected": "The connection to your browser was lost.",
    "draining": "The server is shutting down.",
    "agent_lost": "The interpreter process was lost.",
    "room_ended": "The person who invited you had left before you joined.",
    "agent_unresponsive": "The interpreter stopped responding; please call again.",
    "media_lost": "The server's media gateway restarted; please call again.",
    "error": "The interpreter hit an internal error.",
    "provider_error": "The translation service refused the session.",
    "provider_lost": "The translation service stopped responding.",
}


def caption(
    utterance_id: str,
    side: Side,
    lang: str,
    text: str,
    final: bool,
    t_start_ms: int,
    t_end_ms: int,
    stable: int | None = None,
) -> dict[str, Any]:
    """``stable``: how many leading characters of a partial's ``text`` are committed."""
    return Caption(
        id=utterance_id,
        side=side,
        lang=lang,
        final=final,
        text=text,
        t_start_ms=t_start_ms,
        t_end_ms=t_end_ms,
        stable=stable,
    ).wire()


def state(value: State, reason: str | None = None) -> dict[str, Any]:
    message = None if reason is None else END_REASONS.get(reason, reason)
    return StateMessage(state=value, reason=reason, message=message).wire()


def languages(pair: LanguagePair, interpretation: str | None = None) -> dict[str, Any]:
    """The pair in force and, from an agent, the interpretation (simultaneous | consecutive)."""
    return Languages(
        source=pair.source, target=pair.target, mode=pair.mode, interpretation=interpretation
    ).wire()


def note(utterance_id: str, code: str, message: str) -> dict[str, Any]:
    """Something the page should show next to an utterance's captions, e.g. why it was not
    translated (never an untranslated text passed off as a translation)."""
    return Note(id=utterance_id, code=code, message=message).wire()


def metrics(utterance_id: str, marks: dict[str, float]) -> dict[str, Any]:
    """When each step of an utterance happened on the agent (``time.monotonic()`` seconds of
    the agent's host: comparable with a client's clock only on the same machine)."""
    rounded = {k: round(v, 4) for k, v in marks.items()}
    return Metrics(id=utterance_id, marks=rounded).wire()


def talk(push_to_talk: bool, held: bool) -> dict[str, Any]:
    """How the agent listens now: all the time, or (push-to-talk) only while held."""
    return TalkState(push_to_talk=push_to_talk, held=held).wire()


def ice_answer(sdp: str, restart_id: str | None = None) -> dict[str, Any]:
    """The WebRTC answer to an ``ice_restart`` (``restart_id``: its ``id``)."""
    return IceAnswer(sdp=sdp, id=restart_id).wire()


def error(code: str, message: str, fatal: bool = False) -> dict[str, Any]:
    """An error in our own words (a bad message, a language the provider lacks). Text from a
    provider or an exception goes through ``failure`` instead."""
    return Error(code=code, message=message, fatal=fatal).wire()


# The page-facing codes of failures outside our control, each with the only sentence the page
# sees: a provider's own text can name accounts, organisations, quotas or internals, and an
# exception's can name hosts and paths, so those go to the server log, never to the caller.
ERRORS: dict[str, str] = {
    "provider_refused": (
        "The translation service refused this server's credentials; "
        "the operator must check its key."
    ),
    "provider_unavailable": "The translation service is unavailable right now; please try again.",
    "provider_reconnecting": "The connection to the translation service broke; reconnecting…",
    "provider_lost": "The translation service could not be reached again; the call ends.",
    "provider_closing": "The translation service is ending this session; it will be reopened.",
    "provider_error": (
        "The translation service reported an error; some speech may not have been translated."
    ),
    "translation_failed": "This sentence could not be translated.",
    "tts_failed": "The translation of this sentence could not be spoken.",
    "inference_unavailable": (
        "The interpreter's speech service is restarting; please repeat that in a moment."
    ),
    # Streaming services interpret only simultaneously; a conversation only consecutively.
    "unsupported_interpretation": (
        "This call cannot switch to that interpretation; it goes on as before."
    ),
    # Speech-to-speech services find the ends of speech themselves (no VAD of ours to steer).
    "unsupported_control": (
        "This interpreter cannot take push-to-talk or interpret-now; it keeps listening as before."
    ),
    # The media gateway could not renegotiate the page's new ICE offer (see ice_restart).
    "ice_restart_failed": (
        "The call's connection could not be renewed; it goes on if the network comes back."
    ),
}
DETAIL_MAX_CHARS = 500  # of a provider's or exception's text in one log line


def failure(
    code: str, detail: object = None, fatal: bool = False, origin: str = ""
) -> dict[str, Any]:
    """The ``error`` message for a failure: our code and sentence from ``ERRORS``; ``detail``
    (what the provider or exception said) is logged for the operator, one line, clipped."""
    if code not in ERRORS:  # a caller's slip must not become a page without a sentence
        log.warning("no page sentence for error code %r; sent as provider_error", code)
        code = "provider_error"
    if detail is not None:
        log.warning("%s%s: %s", f"{origin}: " if origin else "", code, clip(detail))
    return error(code, ERRORS[code], fatal)


def clip(detail: object, limit: int = DETAIL_MAX_CHARS) -> str:
    """One line of at most ``limit`` characters: a provider's text may hold newlines or be long."""
    text = " ".join(str(detail).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BadMessage(ValueError):
    pass


def parse_page_message(raw: str | bytes) -> dict[str, Any] | str:
    """A WebSocket frame from the page as a JSON object, or the reason it is not one (what the
    relay checks before passing it on; ``parse_control`` reads it on the agent)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"control messages are at most {MAX_MESSAGE_BYTES} bytes"
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "control messages are JSON"
    if not isinstance(msg, dict):
        return "control messages are JSON objects"
    return msg


_CONTROL: TypeAdapter[Control] = TypeAdapter(Control)
# Each page → agent type, and what its refusal says it needs.
_NEEDS = {
    "hangup": "nothing else",
    "set_languages": "string 'source' and 'target'",
    "set_interpretation": "a string 'interpretation'",
    "push_to_talk": "a boolean 'on'",
    "talk": "a boolean 'held'",
    "interpret_now": "nothing else",
}


def parse_control(message: Any) -> Control:
    """Parse a page → agent message; BadMessage says what was wrong with it."""
    if not isinstance(message, dict):
        raise BadMessage("control messages are JSON objects")
    if message.get("v") != VERSION:
        raise BadMessage(f"unsupported protocol version {message.get('v')!r}; expected {VERSION}")
    kind = message.get("type")
    if kind not in _NEEDS:
        raise BadMessage(f"unknown message type {kind!r}")
    try:
        return _CONTROL.validate_python(message)
    except ValidationError as e:
        raise BadMessage(f"{kind} needs {_NEEDS[kind]}") from e


_ICE_RESTART: TypeAdapter[IceRestart] = TypeAdapter(IceRestart)


def parse_ice_restart(message: Any) -> IceRestart:
    """Parse a page → node ``ice_restart``; BadMessage says what was wrong with it."""
    if not isinstance(message, dict):
        raise BadMessage("control messages are JSON objects")
    if message.get("v") != VERSION:
        raise BadMessage(f"unsupported protocol version {message.get('v')!r}; expected {VERSION}")
    try:
        return _ICE_RESTART.validate_python(message)
    except ValidationError as e:
        raise BadMessage(
            f"ice_restart needs a string 'sdp' of 1 to {MAX_ICE_SDP_CHARS} characters "
            "(and 'id', if any, a string of at most 64)"
        ) from e
