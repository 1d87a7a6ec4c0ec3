"""Request bodies as FastAPI dependencies: size-limited JSON, validated into a model.

A dependency rather than a plain body parameter because FastAPI reads and parses a body
before any dependency runs: here the body is read only after the checks declared before it
(``Content-Type``, rate limits, the ticket), counted as it streams in (413 before an
oversized body is buffered, chunked bodies included), and refused in our error format.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from dragoman.http.errors import ApiError, validation_message

M = TypeVar("M", bound=BaseModel)


async def read_json_limited(request: Request, limit: int) -> Any:
    """Read a JSON body, refusing (413) anything over ``limit`` bytes before it is buffered."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"Request body over {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"Request body over {limit} bytes.")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad_json", f"Body is not valid JSON: {e}") from e


# The models read through ``json_body``, by name: FastAPI cannot see a body that a
# dependency reads, so ``documented`` names it in the route's OpenAPI operation and
# ``api.openapi`` adds the model's schema to the document's components.
BODY_MODELS: dict[str, type[BaseModel]] = {}


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON request body is ``model``."""
    BODY_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency giving the request's body as ``model``: 413 over the app's
    ``settings.max_body_bytes``, 400 ``bad_json`` or ``bad_request`` (``field: problem``)."""

    async def body(request: Request) -> M:
        raw = await read_json_limited(request, request.app.state.settings.max_body_bytes)
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            raise ApiError(400, "bad_request", validation_message(e)) from e

    return body
