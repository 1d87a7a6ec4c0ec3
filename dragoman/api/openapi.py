"""The API's OpenAPI document, made to say what the server really does.

FastAPI's own document misses what our request handling changes: bodies read by the
size-limited dependency (``http.body``) are added from ``BODY_MODELS``; request validation
answers 400 in the one error body (``http.errors``), so FastAPI's "422 Validation Error" is
dropped; and each listening port (``api.listeners``) gets the document of its own routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from dragoman.http.body import BODY_MODELS

INTERNAL_PATHS = frozenset({"/healthz", "/metrics", "/v1/fleet/autoscale"})
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")


def is_internal(path: str) -> bool:
    return path in INTERNAL_PATHS


def document(app: FastAPI, internal: bool | None = None) -> dict[str, Any]:
    """The document of the internal port's routes (True), the public port's (False), or
    of every route (None: one listener serves everything)."""
    doc = get_openapi(
        title=app.title + (" (internal port)" if internal else ""),
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    doc["paths"] = {
        path: ops
        for path, ops in doc["paths"].items()
        if internal is None or is_internal(path) == internal
    }
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for ops in doc["paths"].values():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            name = ref.get("schema", {}).get("$ref", "").rpartition("/")[2]
            if name in BODY_MODELS:
                _add_schema(schemas, BODY_MODELS[name])
    for name in _FASTAPI_422:
        schemas.pop(name, None)
    return doc


def _add_schema(schemas: dict[str, Any], model: Any) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def install(app: FastAPI, split: bool) -> None:
    """``app.openapi()`` (served at ``/openapi.json``) becomes ``document``: the public
    port's routes when ``split``, else every route."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, False if split else None)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
