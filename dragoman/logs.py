"""How every dragoman process logs: one format, the libraries quiet, the call id on each line.

- Libraries (httpx, websockets, uvicorn, aiortc, ...) log at WARNING unless
  ``DRAGOMAN_LOG_LEVEL=DEBUG``: their INFO lines (an httpx line per inference ping, once a
  second) buried ours.
- ``DRAGOMAN_LOG_FORMAT=json`` writes one JSON object per line (python-json-logger) for log
  shippers; a record's ``extra`` fields become keys (the call-end line's timings, say).
- A line logged while a call is being handled carries its id (``call_id``): set per task
  with ``CALL_ID`` (the worker placing a call), or for the whole process with
  ``bind_process_call`` (an agent process serves exactly one call).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from dragoman.config import Settings

# Libraries whose INFO is chatter to an operator (an HTTP line per request, a connection
# opened, an ICE candidate gathered).
QUIET_LIBRARIES = (
    "httpx",
    "httpcore",
    "websockets",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "aiortc",
    "aioice",
    "asyncio",
    "faster_whisper",
    "openai",
    "google_genai",
    "matplotlib",
)

CALL_ID: ContextVar[str | None] = ContextVar("dragoman_call_id", default=None)
_process_call: str | None = None

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(call)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def bind_process_call(call_id: str) -> None:
    """Every later line of this process is about ``call_id`` (an agent process)."""
    global _process_call
    _process_call = call_id


def current_call() -> str | None:
    return CALL_ID.get() or _process_call


class CallIdFilter(logging.Filter):
    """Adds ``call_id`` (None outside a call) and ``call`` (" [call <id>]" or "") to a
    record; a ``call_id`` passed in ``extra`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = getattr(record, "call_id", None) or current_call()
        record.call_id = call_id
        record.call = f" [call {call_id}]" if call_id else ""
        return True


def formatter(log_format: str, label: str = "") -> logging.Formatter:
    """``label`` names the process in text lines (``agent[pid]``, ``inference[pid]``)."""
    if log_format == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"process_kind": label} if label else None,
            # The text-only helper field; call_id is kept (null outside a call).
            reserved_attrs=[*_RESERVED, "call"],
        )
    prefix = f"{label}[%(process)d] " if label else ""
    return logging.Formatter(TEXT_FORMAT.replace("%(name)s", prefix + "%(name)s", 1))


_RESERVED = list(JsonFormatter().reserved_attrs)


def setup(settings: Settings, label: str = "") -> None:
    """Configure this process's logging from ``log_level`` and ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallIdFilter())
    handler.setFormatter(formatter(settings.log_format, label))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    verbose = settings.log_level.upper() == "DEBUG"
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
