"""Per-call glossaries: server-side files a call names, never sent to the page."""

from __future__ import annotations

import re
from pathlib import Path

from dragoman.contract.errors import GlossaryError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BYTES = 32 * 1024  # it goes into every translation prompt


def check_name(name: str | None) -> None:
    if name is not None and not NAME.match(name):
        raise GlossaryError("bad_glossary", "A glossary name is 1-64 letters, digits, '-' or '_'.")


def read_glossary(folder: Path | None, name: str | None) -> str | None:
    """The text of glossary ``name`` from ``folder`` (``NAME.txt``), or None for no glossary."""
    if name is None:
        return None
    check_name(name)
    path = (folder / f"{name}.txt") if folder else None
    if path is None or not path.is_file():
        raise GlossaryError("unknown_glossary", f"No glossary named {name!r} on this server.")
    text = path.read_text(encoding="utf-8")
    if len(text.encode()) > MAX_BYTES:
        raise GlossaryError("bad_glossary", f"Glossary {name!r} is over {MAX_BYTES} bytes.")
    return text.strip()
