"""The page's words come from its message catalogues (dragoman/web/i18n/<language>.json),
checked without a browser: every catalogue has exactly English's keys and placeholders,
every text and label in index.html is marked with its key (and its English words are that
key's), app.js shows no literal sentence and asks only for keys that exist, and every end
reason and error code the agent and call.js send has our words in the catalogue."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dragoman.contract import page

WEB = Path(__file__).resolve().parent.parent / "dragoman" / "web"
CATALOGUES = WEB / "i18n"
LABEL_ATTRIBUTES = ("aria-label", "title", "placeholder")
VOID = {"meta", "link", "input", "br", "img", "hr", "source", "meter"}


def load(language: str) -> dict[str, str]:
    return json.loads((CATALOGUES / f"{language}.json").read_text(encoding="utf-8"))


def ui_languages() -> list[str]:
    source = (WEB / "i18n.js").read_text(encoding="utf-8")
    found = re.search(r"UI_LANGUAGES\s*=\s*\[([^\]]*)\]", source)
    assert found, "i18n.js lists its UI_LANGUAGES"
    return re.findall(r"'([a-z-]+)'", found.group(1))


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_the_interface_languages_are_the_catalogue_files() -> None:
    files = sorted(p.stem for p in CATALOGUES.glob("*.json"))
    assert sorted(ui_languages()) == files
    assert {"en", "ko", "ja", "zh", "es", "fr", "de"} <= set(files)


@pytest.mark.parametrize("language", ui_languages())
def test_a_catalogue_has_every_english_key_with_its_placeholders(language: str) -> None:
    english, other = load("en"), load(language)
    assert sorted(set(english) - set(other)) == [], f"{language} misses keys"
    assert sorted(set(other) - set(english)) == [], f"{language} has keys English lacks"
    for key, text in other.items():
        assert isinstance(text, str) and text.strip(), f"{language} {key} is empty"
        assert placeholders(text) == placeholders(english[key]), f"{language} {key}"


class _Marks(HTMLParser):
    """Every piece of visible text in the page with the data-i18n key of its element (or
    None), and every label attribute with its key."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict[str, str | None]] = []
        self.texts: list[tuple[str, str | None]] = []
        self.labels: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for attr in LABEL_ATTRIBUTES:
            if attr in a:
                self.labels.append((attr, a[attr] or "", a.get(f"data-i18n-{attr}")))
        if tag not in VOID:
            inherited = any(e.get("translate") == "no" for e in self.stack)
            self.stack.append(
                {**a, "tag": tag, "translate": "no" if inherited else a.get("translate")}
            )

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if not text or not self.stack:
            return
        top = self.stack[-1]
        if top["tag"] in ("script", "style") or top.get("translate") == "no":
            return
        self.texts.append((text, top.get("data-i18n")))


def test_every_text_and_label_in_the_page_is_a_catalogue_key() -> None:
    english = load("en")
    marks = _Marks()
    marks.feed((WEB / "index.html").read_text(encoding="utf-8"))
    assert len(marks.texts) > 20  # the parser saw the page
    for text, key in marks.texts:
        assert key is not None, f"text not from the catalogue: {text!r}"
        assert key in english, f"unknown key {key!r}"
        assert " ".join(english[key].split()) == text, f"{key}: the page says {text!r}"
    for attr, value, key in marks.labels:
        assert key is not None, f"{attr}={value!r} not from the catalogue"
        assert english.get(key) == value, f"{attr} {key}: {value!r}"


def _script(name: str) -> str:
    return (WEB / name).read_text(encoding="utf-8")


def test_app_js_shows_no_literal_sentences_and_asks_only_for_known_keys() -> None:
    english = load("en")
    app = _script("app.js")
    # Words reach the page through t() or a message {key}/{raw}: a string literal handed
    # to the DOM or to a notice, error or badge would bypass the catalogue.
    literal = r"""(['"`])(?!\1)[^'"`]"""
    forbidden = [
        rf"\.textContent\s*=\s*{literal}",
        rf"\.title\s*=\s*{literal}",
        rf"\b(?:setNotice|showError|showMode|setTranscriptStatus)\(\s*{literal}",
        rf"new Option\(\s*{literal}",
        rf"\bnew Error\(\s*{literal}",
    ]
    for pattern in forbidden:
        hits = [m.group(0) for m in re.finditer(pattern, app)]
        # Not sentences: the placeholder dash of an empty timing, an HTTP status as a detail.
        hits = [h for h in hits if not re.search(r"textContent\s*=\s*'—|Error\(`H", h)]
        assert hits == [], f"literal words in app.js: {pattern} {hits}"
    groups = {key.split(".")[0] for key in english}
    key_literal = r"""['"]((?:GROUPS)\.[a-z_]+)['"]""".replace("GROUPS", "|".join(groups))
    used = set(re.findall(key_literal, app))
    used |= set(re.findall(r"\bt\(\s*'([\w.]+)'", app))
    assert len(used) > 40
    assert sorted(used - set(english)) == []
    css = _script("style.css")
    assert not re.search(r"content:\s*\"[^\"]*[A-Za-z]", css), "words in CSS content"


def test_every_state_end_reason_and_error_code_has_our_words() -> None:
    english = load("en")
    app = _script("app.js")
    states = {"idle", "connecting", "connected", "listening", "translating", "speaking"}
    states |= {"ended", "failed"}
    states |= set(re.findall(r"setState\(\s*'(\w+)'", app))
    assert sorted(s for s in states if f"state.{s}" not in english) == []
    # The agent's own sentences: the English catalogue says the same, other languages
    # translate them (the page shows ours for a code it knows).
    for reason, sentence in page.END_REASONS.items():
        assert english.get(f"end.{reason}") == sentence, reason
    for code, sentence in page.ERRORS.items():
        assert english.get(f"errors.{code}") == sentence, code
    # call.js' own failures carry a code the page turns into our words.
    call = _script("call.js")
    codes = set(re.findall(r"code:\s*'(\w+)'", call)) - {"error"}
    assert {"network", "direct_refused", "bad_answer"} <= codes
    assert sorted(c for c in codes if f"errors.{c}" not in english) == []


# Where the server names an error code for the page: the exception classes and helpers that
# carry one (the code is their first string argument, or the second after a status or a
# call id), as written in dragoman/.
_CODE_CALLS = {
    "CallRejected": 0,
    "LanguageError": 0,
    "InterpretationError": 0,
    "GlossaryError": 0,
    "ProviderRejected": 0,
    "ProviderUnavailable": 0,
    "ApiError": 1,
    "HttpError": 1,
    "_refuse": 1,
    "NoAgentAvailable": 2,  # (message, retry_after_s, code)
}
# Codes only another server sees (the worker's internal endpoint, a ticket minted by the
# operator's tooling): never shown on the page.
_NOT_FOR_THE_PAGE = {"dragoman"}


def _server_codes() -> set[str]:
    import ast

    codes: set[str] = set()
    for path in (WEB.parent).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            at = _CODE_CALLS.get(name)
            if at is not None and len(node.args) > at:
                arg = node.args[at]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    codes.add(arg.value)
            for kw in node.keywords:  # NoAgentAvailable(..., code="no_local_capacity")
                named = name == "NoAgentAvailable" and kw.arg == "code"
                if named and isinstance(kw.value, ast.Constant):
                    codes.add(str(kw.value.value))
    return (codes | {"no_agent"}) - _NOT_FOR_THE_PAGE  # no_agent: NoAgentAvailable's default


def test_every_code_the_server_answers_the_page_with_has_our_words() -> None:
    codes = _server_codes()
    assert {"bad_sdp", "unknown_room", "rate_limited", "no_local_capacity"} <= codes  # found
    english = load("en")
    assert sorted(c for c in codes if f"errors.{c}" not in english) == []
