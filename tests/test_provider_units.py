"""Pure pieces of the providers: the catalogue, caption segmentation, wire parsing,
glossaries, secrets in settings. No network, no process."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from dragoman.agent import messages
from dragoman.api.direct import mint_session
from dragoman.api.errors import ApiError
from dragoman.config import Settings, settings_for_child
from dragoman.languages import LanguageError, LanguagePair
from dragoman.pipeline.glossary import read_glossary
from dragoman.pipeline.providers.base import CallContext, ProviderError
from dragoman.pipeline.providers.captions import CaptionStream
from dragoman.pipeline.providers.catalog import catalogue, validate_call
from dragoman.pipeline.providers.gemini_live import GeminiLiveWire
from dragoman.pipeline.providers.openai_translate import OpenAITranslateWire, websocket_base
from dragoman.pipeline.providers.streaming import ProviderEvent, StreamingInterpretation

# What a provider might say about itself: it must reach the server log, never the page.
MARKER = "INTERNAL-SECRET-abc123 org-xyz"


def test_without_keys_only_the_local_provider_is_available() -> None:
    s = Settings(openai_api_key="", gemini_api_key=None)  # "" is how compose passes unset
    assert s.openai_api_key is None
    by_name = {p["name"]: p for p in catalogue(s)["providers"]}
    assert by_name["local"]["available"]
    for name in ("openai-translate", "openai-cascade", "gemini-live-translate"):
        assert not by_name[name]["available"] and "DRAGOMAN_" in by_name[name]["reason"]
    with pytest.raises(LanguageError) as e:
        validate_call("openai-translate", "ja", "en", s)
    assert e.value.code == "provider_unavailable"
    with pytest.raises(LanguageError) as e:
        validate_call("babel", "ja", "en", s)
    assert e.value.code == "unknown_provider"


def test_provider_targets_are_enforced() -> None:
    s = Settings(openai_api_key="sk-x")
    spec, pair = validate_call("openai-translate", "ko", "ja", s)
    assert spec.name == "openai-translate" and pair == LanguagePair("ko", "ja")
    with pytest.raises(LanguageError) as e:
        validate_call("openai-translate", "ko", "th", s)  # not an output language of the model
    assert e.value.code == "unsupported_pair" and "Thai" in e.value.message
    assert validate_call("openai-cascade", "ko", "th", s)[1].target == "th"


def test_children_get_the_real_key_but_logs_do_not() -> None:
    s = Settings(openai_api_key="sk-secret-123")
    assert "sk-secret-123" not in s.model_dump_json()
    child = Settings.model_validate_json(settings_for_child(s))
    assert child.openai_api_key is not None
    assert child.openai_api_key.get_secret_value() == "sk-secret-123"


def test_caption_stream_joins_deltas_into_lines_closed_by_a_pause() -> None:
    c = CaptionStream(gap_s=1.0)
    assert c.add("Hel", 0.0).text == "Hel"
    line = c.add("lo ", 0.3)
    assert (line.uid, line.text, line.final) == ("s1", "Hello ", False)
    assert c.close_if_quiet(1.0) is None  # 0.7 s since the last delta
    closed = c.close_if_quiet(1.4)
    assert closed.final and closed.text == "Hello" and closed.uid == "s1"
    assert c.add("next", 2.0).uid == "s2"
    assert c.add("", 2.1) is None


def test_openai_wire_parses_events_and_maps_errors() -> None:
    wire = OpenAITranslateWire(Settings(openai_api_key="k", openai_base_url="http://h:1/v1"))
    assert wire.url() == "ws://h:1/v1/realtime/translations?model=gpt-realtime-translate"
    assert websocket_base("https://api.example/v1") == "wss://api.example/v1"
    pcm = b"\x01\x00" * 10
    [audio] = wire.parse(
        {"type": "session.output_audio.delta", "delta": base64.b64encode(pcm).decode()}
    )
    assert audio.kind == "audio" and audio.audio == pcm and audio.rate == 24000
    [err] = wire.parse({"type": "error", "error": {"code": "invalid_api_key", "message": "no"}})
    assert err.kind == "error" and err.fatal and err.code == "provider_refused"
    [soft] = wire.parse({"type": "error", "error": {"code": "rate_limited", "message": "slow"}})
    # The page gets our code; their code and words ride along for the log only.
    assert not soft.fatal and soft.code == "provider_error" and soft.text == "rate_limited: slow"
    [gone] = wire.parse({"type": "error", "error": {"code": "session_expired", "message": "x"}})
    assert gone.fatal and gone.code == "provider_error"
    assert wire.parse({"type": "session.created"}) == []
    assert wire.switch(LanguagePair("ja", "fr"))[0]["session"]["audio"]["output"] == {
        "language": "fr"
    }


def test_gemini_wire_parses_server_content() -> None:
    wire = GeminiLiveWire(Settings(gemini_api_key="g", gemini_base_url="ws://h:2"))
    assert wire.headers() == {"x-goog-api-key": "g"} and "key=" not in wire.url()
    [setup] = wire.setup(LanguagePair("ja", "ko"))
    assert setup["setup"]["translationConfig"]["targetLanguageCode"] == "ko"
    assert wire.switch(LanguagePair("ja", "fr")) is None  # a new connection instead
    pcm = b"\x02\x00" * 8
    events = wire.parse(
        {
            "serverContent": {
                "inputTranscription": {"text": "こん"},
                "modelTurn": {
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": "audio/pcm;rate=24000",
                                "data": base64.b64encode(pcm).decode(),
                            }
                        }
                    ]
                },
                "outputTranscription": {"text": "Hel"},
            }
        }
    )
    assert [e.kind for e in events] == ["source_text", "audio", "translation_text"]
    assert events[1].audio == pcm and events[1].rate == 24000
    assert wire.parse({"setupComplete": {}})[0].kind == "ready"
    assert wire.parse({"goAway": {"timeLeft": "10s"}})[0].code == "provider_closing"
    [err] = wire.parse({"error": {"code": 429, "message": "quota of org-x"}})
    assert err.code == "provider_error" and err.text == "quota of org-x"


def test_glossaries_are_read_by_name_from_the_server_folder(tmp_path: Path) -> None:
    (tmp_path / "med.txt").write_text("fever = Fieber\n", encoding="utf-8")
    assert read_glossary(tmp_path, "med") == "fever = Fieber"
    assert read_glossary(tmp_path, None) is None
    for name, code in (("nope", "unknown_glossary"), ("../etc/passwd", "bad_glossary")):
        with pytest.raises(LanguageError) as e:
            read_glossary(tmp_path, name)
        assert e.value.code == code
    with pytest.raises(LanguageError):
        read_glossary(None, "med")  # no folder configured


def test_failures_reach_the_page_in_our_words_and_the_log_in_theirs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dragoman.agent.messages")
    msg = messages.failure("provider_refused", f"401: bad key of {MARKER}\nline 2", True, "x")
    assert msg == {
        "v": 1,
        "type": "error",
        "code": "provider_refused",
        "message": messages.ERRORS["provider_refused"],
        "fatal": True,
    }
    assert MARKER not in json.dumps(msg)
    [record] = caplog.records
    assert record.getMessage() == f"x: provider_refused: 401: bad key of {MARKER} line 2"

    caplog.clear()
    quiet = messages.failure("translation_failed")
    assert quiet["message"] == "This sentence could not be translated." and not quiet["fatal"]
    assert caplog.records == []  # nothing to log: the caller logged its traceback

    # A code without a sentence is a slip on our side: the page still gets a sentence.
    slip = messages.failure("their_code", MARKER)
    assert slip["code"] == "provider_error" and slip["message"] == messages.ERRORS["provider_error"]

    long = messages.clip("x" * 2000)
    assert len(long) == messages.DETAIL_MAX_CHARS and long.endswith("…")
    assert messages.clip(" a\n\tb ") == "a b"


def test_provider_errors_carry_our_sentence_and_keep_the_detail_apart() -> None:
    e = ProviderError("provider_unavailable", f"HTTP 500: {MARKER}")
    assert e.message == messages.ERRORS["provider_unavailable"] and e.detail.endswith(MARKER)
    assert ProviderError("nonsense").message == messages.ERRORS["provider_error"]


class _Notes:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)


async def _no_end(reason: str) -> None:
    raise AssertionError(f"the call must go on, not end with {reason}")


async def test_a_provider_error_event_reaches_the_page_as_our_sentence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Settings(openai_api_key="k", openai_base_url="http://h:1/v1")
    notes = _Notes()
    ctx = CallContext(pair=LanguagePair("ja", "en"), settings=s, notify=notes, end_call=_no_end)
    wire = OpenAITranslateWire(s)
    stage = StreamingInterpretation(ctx, wire)
    caplog.set_level(logging.WARNING, logger="dragoman.agent.messages")
    event = {"type": "error", "error": {"code": "rate_limited", "message": MARKER}}
    for ev in wire.parse(event):
        await stage._on_event(ev)
    [sent] = notes.sent
    assert sent["code"] == "provider_error" and not sent["fatal"]
    assert sent["message"] == messages.ERRORS["provider_error"] and MARKER not in json.dumps(sent)
    assert MARKER in caplog.text and "openai-translate" in caplog.text

    # A fatal one ends the session (the run loop reconnects) with our sentence, theirs apart.
    fatal = ProviderEvent("error", text=MARKER, code="provider_error", fatal=True)
    with pytest.raises(ProviderError) as e:
        await stage._on_event(fatal)
    assert e.value.code == "provider_unavailable" and MARKER not in e.value.message
    assert e.value.detail == MARKER


def _minting(handler: Any) -> tuple[Settings, httpx.AsyncClient]:
    s = Settings(openai_api_key="sk-x", openai_base_url="http://provider.test/v1")
    return s, httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "code"), [(401, "provider_refused"), (429, "provider_unavailable")]
)
async def test_direct_minting_errors_are_ours_with_their_words_in_the_log(
    status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"error": {"message": f"quota exceeded for {MARKER}", "code": "x"}}
    s, http = _minting(lambda _req: httpx.Response(status, json=body))
    caplog.set_level(logging.WARNING, logger="dragoman.api.direct")
    with pytest.raises(ApiError) as e:
        await mint_session(s, http, LanguagePair("ko", "ja"), "requested")
    assert e.value.status == 503 and e.value.code == code
    sentence = messages.ERRORS[code].removesuffix(".")
    assert e.value.message == f"{sentence} (HTTP {status})."
    assert MARKER in caplog.text


async def test_direct_minting_unreachable_or_garbled_is_ours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def unreachable(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"no route to {MARKER}", request=req)

    caplog.set_level(logging.WARNING, logger="dragoman.api.direct")
    for handler in (unreachable, lambda _req: httpx.Response(200, json={"oops": MARKER})):
        s, http = _minting(handler)
        with pytest.raises(ApiError) as e:
            await mint_session(s, http, LanguagePair("ko", "ja"), "requested")
        assert e.value.code == "provider_unavailable"
        assert e.value.message == messages.ERRORS["provider_unavailable"]
    assert caplog.text.count("provider_unavailable") == 2 and MARKER in caplog.text
