"""The providers' own SDK models, as the fakes use them: every client message a fake receives
is parsed with the SDK's client-side models (and refused when they do not accept it), and
every message a fake sends is built from the SDK's server-side models. A field either side
gets wrong then fails validation instead of being repeated by a fake written from the same
reading of the docs.

The ``openai`` models accept unknown fields (forward compatibility) and the request
parameters are TypedDicts that drop them; the fakes are stricter and refuse both. The
``google-genai`` models forbid unknown fields already.
"""

from __future__ import annotations

import base64
import enum
import json
from typing import Any

from google.genai import types as gtypes
from openai.types.realtime import RealtimeClientEvent, RealtimeTranslationClientEvent
from openai.types.realtime.translations.client_secret_create_params import (
    ClientSecretCreateParams,
)
from pydantic import BaseModel, TypeAdapter, ValidationError

OPENAI_CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeTranslationClientEvent)
OPENAI_REALTIME_CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
OPENAI_SECRET_REQUEST: TypeAdapter[Any] = TypeAdapter(ClientSecretCreateParams)


class Invalid(ValueError):
    """A client message the SDK's models do not accept."""


def _short(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _no_extras(model: BaseModel, where: str = "") -> None:
    extra = model.model_extra or {}
    if extra:
        raise Invalid(f"unknown field(s) {where}{sorted(extra)}")
    for name in type(model).model_fields:
        value = getattr(model, name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, BaseModel):
                _no_extras(v, f"{where}{name}.")


def _diff(given: Any, kept: Any, where: str = "") -> str | None:
    """Where ``given`` has what validation dropped or changed (TypedDicts drop extras)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                return f"unknown field {where}{key}"
            found = _diff(value, kept[key], f"{where}{key}.")
            if found:
                return found
        return None
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        for i, (a, b) in enumerate(zip(given, kept, strict=True)):
            found = _diff(a, b, f"{where}{i}.")
            if found:
                return found
        return None
    return None if given == kept else f"mistyped field {where.rstrip('.')}"


# --- OpenAI realtime translation -------------------------------------------------------------
def openai_client_event(raw: str | bytes) -> Any:
    """A ``RealtimeTranslationClientEvent`` (session.update / input_audio_buffer.append /
    session.close), or Invalid."""
    try:
        event = OPENAI_CLIENT_EVENT.validate_json(raw)
    except ValidationError as e:
        raise Invalid(_short(e)) from e
    _no_extras(event)
    return event


def openai_realtime_client_event(raw: str | bytes) -> Any:
    """A ``RealtimeClientEvent`` (the realtime API's; here a transcription session's
    session.update / input_audio_buffer.append / .commit), or Invalid."""
    try:
        event = OPENAI_REALTIME_CLIENT_EVENT.validate_json(raw)
    except ValidationError as e:
        raise Invalid(_short(e)) from e
    _no_extras(event)
    return event


def openai_secret_request(body: Any) -> dict[str, Any]:
    """The body of ``POST /realtime/translations/client_secrets`` (``ClientSecretCreateParams``)."""
    try:
        kept = OPENAI_SECRET_REQUEST.validate_python(body)
    except ValidationError as e:
        raise Invalid(_short(e)) from e
    wrong = _diff(body, kept)
    if wrong:
        raise Invalid(wrong)
    return kept


def openai_wire(event: BaseModel) -> str:
    """A server event built (and so validated) from the SDK's model, as JSON text."""
    return event.model_dump_json(by_alias=True, exclude_unset=True)


# --- Gemini Live ---------------------------------------------------------------------------
def gemini_client_message(raw: str | bytes) -> gtypes.LiveClientMessage:
    """A ``LiveClientMessage`` with exactly one of its fields set, or Invalid."""
    try:
        msg = gtypes.LiveClientMessage.model_validate_json(raw)
    except ValidationError as e:
        raise Invalid(_short(e)) from e
    present = [name for name in type(msg).model_fields if getattr(msg, name) is not None]
    if len(present) != 1:
        raise Invalid(f"a client message has exactly one field; got {present}")
    return msg


def gemini_setup(body: Any) -> gtypes.LiveClientSetup:
    try:
        return gtypes.LiveClientSetup.model_validate(body)
    except ValidationError as e:
        raise Invalid(_short(e)) from e


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):  # proto JSON: standard base64 (browsers' atob() needs it)
        return base64.b64encode(value).decode()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot encode {type(value).__name__}")


def gemini_wire(model: BaseModel) -> str:
    """A server message built from the SDK's model, as the API's JSON (camelCase)."""
    data = model.model_dump(mode="python", by_alias=True, exclude_none=True)
    return json.dumps(data, default=_json_default)
