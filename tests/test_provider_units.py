"""Pure pieces of the providers: the catalogue, caption segmentation, the mapping of the
SDKs' typed events, the setups our SDK configs produce, direct-mode minting errors,
glossaries, secrets in settings; and the fakes' validation against the SDKs' own models
(in-process, on a loopback port). No provider, no dragoman process."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import websockets
from aiohttp.test_utils import TestServer
from google import genai
from google.genai import _live_converters, types
from openai.types.realtime import (
    RealtimeError,
    RealtimeErrorEvent,
    RealtimeTranslationOutputAudioDeltaEvent,
    RealtimeTranslationSessionCreatedEvent,
)

from dragoman import cli
from dragoman.api import direct
from dragoman.api.direct import ProviderClients, mint_session
from dragoman.config import Settings, settings_for_child
from dragoman.contract import page
from dragoman.contract.errors import GlossaryError, ProviderRejected, ProviderUnavailable
from dragoman.fakes import sdk
from dragoman.fakes.server import build_app
from dragoman.http.errors import ApiError
from dragoman.languages import LanguageError, LanguagePair
from dragoman.pipeline.frames import CallErrorFrame
from dragoman.pipeline.glossary import read_glossary
from dragoman.pipeline.providers import cascade_stream, gemini_live, openai_translate, sdk_sessions
from dragoman.pipeline.providers.base import CallContext, ProviderError
from dragoman.pipeline.providers.captions import CaptionStream
from dragoman.pipeline.providers.catalog import catalogue, validate_call
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
    with pytest.raises(ProviderUnavailable) as e:
        validate_call("openai-translate", "ja", "en", s)
    assert e.value.code == "provider_unavailable"
    with pytest.raises(ProviderRejected) as e:
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


def _openai_error(code: str, message: str) -> RealtimeErrorEvent:
    return RealtimeErrorEvent(
        type="error", event_id="e1", error=RealtimeError(type="x", code=code, message=message)
    )


def test_openai_sdk_events_map_to_ours_and_errors_keep_their_words_apart() -> None:
    pcm = b"\x01\x00" * 10
    delta = RealtimeTranslationOutputAudioDeltaEvent(
        type="session.output_audio.delta", event_id="e", delta=base64.b64encode(pcm).decode()
    )
    [audio] = openai_translate.events_of(delta)
    assert audio.kind == "audio" and audio.audio == pcm and audio.rate == 24000
    [err] = openai_translate.events_of(_openai_error("invalid_api_key", "no"))
    assert err.kind == "error" and err.fatal and err.code == "provider_refused"
    [soft] = openai_translate.events_of(_openai_error("rate_limited", "slow"))
    # The page gets our code; their code and words ride along for the log only.
    assert not soft.fatal and soft.code == "provider_error" and soft.text == "rate_limited: slow"
    [gone] = openai_translate.events_of(_openai_error("session_expired", "x"))
    assert gone.fatal and gone.code == "provider_error"
    created = RealtimeTranslationSessionCreatedEvent.model_construct(type="session.created")
    assert openai_translate.events_of(created) == []
    s = Settings(openai_api_key="k")
    assert sdk_sessions.openai_translation_param(s, LanguagePair("ja", "fr")) == {
        "audio": {
            "input": {"transcription": {"model": "gpt-realtime-whisper"}},
            "output": {"language": "fr"},
        }
    }


def test_gemini_sdk_messages_map_to_ours() -> None:
    pcm = b"\x02\x00" * 8
    msg = types.LiveServerMessage(
        server_content=types.LiveServerContent(
            input_transcription=types.Transcription(text="こん"),
            model_turn=types.Content(
                parts=[
                    types.Part(inline_data=types.Blob(data=pcm, mime_type="audio/pcm;rate=24000"))
                ]
            ),
            output_transcription=types.Transcription(text="Hel"),
        )
    )
    events = gemini_live.events_of(msg)
    assert [e.kind for e in events] == ["source_text", "audio", "translation_text"]
    assert events[1].audio == pcm and events[1].rate == 24000
    ready = types.LiveServerMessage(setup_complete=types.LiveServerSetupComplete())
    assert gemini_live.events_of(ready)[0].kind == "ready"
    bye = types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left="10s"))
    assert gemini_live.events_of(bye)[0].code == "provider_closing"
    # A closed socket reaches us as the SDK's APIError with the close code.
    refused = gemini_live._closed(genai.errors.APIError(1008, {"message": "bad key of org-x"}))
    assert isinstance(refused, ProviderError) and refused.code == "provider_refused"
    assert "org-x" in refused.detail and "org-x" not in refused.message
    assert not isinstance(gemini_live._closed(genai.errors.APIError(1011, {})), ProviderError)


def _sdk_setup(settings: Settings, pair: LanguagePair) -> dict[str, Any]:
    """The setup message google-genai sends for our config (its own converter)."""
    api = sdk_sessions.gemini_client(settings)._api_client
    params = types.LiveConnectParameters(
        model=sdk_sessions.gemini_model_name(settings),
        config=sdk_sessions.gemini_live_config(pair),
    )
    return _live_converters._LiveConnectParameters_to_mldev(
        api_client=api, from_object=params.model_dump(exclude_none=True)
    )["setup"]


def test_gemini_setup_is_the_sdks_and_the_page_sends_the_same() -> None:
    s = Settings(gemini_api_key="g")
    pair = LanguagePair("ja", "ko")
    setup = _sdk_setup(s, pair)
    # Where the SDK puts the translation config (the hand-written code had it one level up).
    assert setup["generationConfig"]["translationConfig"] == {
        "targetLanguageCode": "ko",
        "echoTargetLanguage": True,
    }
    assert "translationConfig" not in setup
    page_setup = direct.gemini_setup(s, pair)
    assert json.loads(json.dumps(setup, default=str)) == page_setup
    # …and the SDK's own client-message model accepts it (and refuses the old shape).
    sdk.gemini_client_message(json.dumps({"setup": page_setup}))
    old = {"setup": {"model": setup["model"], "translationConfig": {"targetLanguageCode": "ko"}}}
    with pytest.raises(sdk.Invalid):
        sdk.gemini_client_message(json.dumps(old))
    assert sdk_sessions.gemini_http_base("wss://h.example") == "https://h.example"
    assert direct.gemini_constrained_url(Settings(gemini_base_url="http://127.0.0.1:9")) == (
        "wss://127.0.0.1:9/ws/google.ai.generativelanguage.v1alpha."
        "GenerativeService.BidiGenerateContentConstrained"
    )


def test_glossaries_are_read_by_name_from_the_server_folder(tmp_path: Path) -> None:
    (tmp_path / "med.txt").write_text("fever = Fieber\n", encoding="utf-8")
    assert read_glossary(tmp_path, "med") == "fever = Fieber"
    assert read_glossary(tmp_path, None) is None
    for name, code in (("nope", "unknown_glossary"), ("../etc/passwd", "bad_glossary")):
        with pytest.raises(GlossaryError) as e:
            read_glossary(tmp_path, name)
        assert e.value.code == code
    with pytest.raises(GlossaryError):
        read_glossary(None, "med")  # no folder configured


def test_failures_reach_the_page_in_our_words_and_the_log_in_theirs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dragoman.contract.page")
    msg = page.failure("provider_refused", f"401: bad key of {MARKER}\nline 2", True, "x")
    assert msg == {
        "v": 1,
        "type": "error",
        "code": "provider_refused",
        "message": page.ERRORS["provider_refused"],
        "fatal": True,
    }
    assert MARKER not in json.dumps(msg)
    [record] = caplog.records
    assert record.getMessage() == f"x: provider_refused: 401: bad key of {MARKER} line 2"

    caplog.clear()
    quiet = page.failure("translation_failed")
    assert quiet["message"] == "This sentence could not be translated." and not quiet["fatal"]
    assert caplog.records == []  # nothing to log: the caller logged its traceback

    # A code without a sentence is a slip on our side: the page still gets a sentence.
    slip = page.failure("their_code", MARKER)
    assert slip["code"] == "provider_error" and slip["message"] == page.ERRORS["provider_error"]

    long = page.clip("x" * 2000)
    assert len(long) == page.DETAIL_MAX_CHARS and long.endswith("…")
    assert page.clip(" a\n\tb ") == "a b"


def test_provider_errors_carry_our_sentence_and_keep_the_detail_apart() -> None:
    e = ProviderError("provider_unavailable", f"HTTP 500: {MARKER}")
    assert e.message == page.ERRORS["provider_unavailable"] and e.detail.endswith(MARKER)
    assert ProviderError("nonsense").message == page.ERRORS["provider_error"]


async def test_a_provider_error_event_reaches_the_page_as_our_sentence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Settings(openai_api_key="k", openai_base_url="http://h:1/v1")
    ctx = CallContext(pair=LanguagePair("ja", "en"), settings=s)
    stage = StreamingInterpretation(ctx, openai_translate.OpenAITranslate(s))
    pushed: list[Any] = []

    async def push(frame: Any, direction: Any = None) -> None:
        pushed.append(frame)

    stage.push_frame = push  # type: ignore[method-assign]
    for ev in openai_translate.events_of(_openai_error("rate_limited", MARKER)):
        await stage._on_event(ev)
    [frame] = pushed
    assert isinstance(frame, CallErrorFrame) and frame.end_reason is None
    # What PageMessages makes of it: our sentence for the page, their words for the log.
    caplog.set_level(logging.WARNING, logger="dragoman.contract.page")
    sent = page.failure(frame.code, frame.detail, frame.fatal, frame.origin)
    assert sent["code"] == "provider_error" and not sent["fatal"]
    assert sent["message"] == page.ERRORS["provider_error"] and MARKER not in json.dumps(sent)
    assert MARKER in caplog.text and "openai-translate" in caplog.text

    # A fatal one ends the session (the run loop reconnects) with our sentence, theirs apart.
    fatal = ProviderEvent("error", text=MARKER, code="provider_error", fatal=True)
    with pytest.raises(ProviderError) as e:
        await stage._on_event(fatal)
    assert e.value.code == "provider_unavailable" and MARKER not in e.value.message
    assert e.value.detail == MARKER


async def test_streaming_providers_interpret_only_simultaneously() -> None:
    s = Settings(openai_api_key="k", openai_base_url="http://h:1/v1", gemini_api_key="g")
    ctx = CallContext(pair=LanguagePair("ja", "en"), settings=s)
    for provider in (openai_translate.OpenAITranslate(s), gemini_live.GeminiLive(s)):
        stage = StreamingInterpretation(ctx, provider)
        await stage.set_interpretation("simultaneous")  # what it does anyway: accepted
        with pytest.raises(ProviderError) as e:
            await stage.set_interpretation("consecutive")
        assert e.value.code == "unsupported_interpretation"
        assert e.value.message == page.ERRORS["unsupported_interpretation"]


def _minting(handler: Any) -> tuple[Settings, ProviderClients]:
    """Direct-mode minting through the SDK clients, their HTTP answered by ``handler``."""
    s = Settings(
        openai_api_key="sk-x",
        openai_base_url="http://provider.test/v1",
        gemini_api_key="g-x",
        gemini_base_url="http://provider.test",
    )
    oa = openai.AsyncOpenAI(
        api_key="sk-x",
        base_url=s.openai_base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    gm = genai.Client(
        api_key="g-x",
        http_options=types.HttpOptions(
            base_url=s.gemini_base_url,
            api_version="v1alpha",
            httpx_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        ),
    )
    return s, ProviderClients(s, oa, gm)


PROVIDERS = ["openai-translate", "gemini-live-translate"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "code"), [(401, "provider_refused"), (429, "provider_unavailable")]
)
async def test_direct_minting_errors_are_ours_with_their_words_in_the_log(
    provider: str, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"error": {"message": f"quota exceeded for {MARKER}", "code": "x", "status": "X"}}
    s, clients = _minting(lambda _req: httpx.Response(status, json=body))
    if provider == "openai-translate":
        s, clients = _minting(lambda _req: httpx2.Response(status, json=body))
    caplog.set_level(logging.WARNING, logger="dragoman.api.direct")
    with pytest.raises(ApiError) as e:
        await mint_session(s, clients, provider, LanguagePair("ko", "ja"), "requested")
    assert e.value.status == 503 and e.value.code == code
    sentence = page.ERRORS[code].removesuffix(".")
    assert e.value.message == f"{sentence} (HTTP {status})."
    assert MARKER in caplog.text


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_direct_minting_unreachable_or_garbled_is_ours(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    module = httpx2 if provider == "openai-translate" else httpx

    def unreachable(req: Any) -> Any:
        raise module.ConnectError(f"no route to {MARKER}", request=req)

    caplog.set_level(logging.WARNING, logger="dragoman.api.direct")
    for handler in (unreachable, lambda _req: module.Response(200, json={"oops": MARKER})):
        s, clients = _minting(handler)
        with pytest.raises(ApiError) as e:
            await mint_session(s, clients, provider, LanguagePair("ko", "ja"), "requested")
        assert e.value.code == "provider_unavailable"
        assert e.value.message == page.ERRORS["provider_unavailable"]
    assert caplog.text.count("provider_unavailable") == 2 and MARKER in caplog.text


def test_direct_provider_choice() -> None:
    both = Settings(openai_api_key="k", gemini_api_key="g")
    assert direct.choose(both, "ko", "ja") == ("openai-translate", LanguagePair("ko", "ja"))
    # Thai is not an output language of OpenAI's model: the other direct provider serves it.
    assert direct.choose(both, "ko", "th")[0] == "gemini-live-translate"
    with pytest.raises(LanguageError) as e:
        direct.choose(both, "ko", "th", wanted="openai-translate")
    assert e.value.code == "unsupported_pair"
    with pytest.raises(ProviderRejected) as e:
        direct.choose(both, "ko", "ja", wanted="local")
    assert e.value.code == "unknown_provider"
    only_gemini = Settings(gemini_api_key="g")
    assert direct.choose(only_gemini, "ko", "ja")[0] == "gemini-live-translate"
    # No key at all: the default is chosen and minting answers 503 (after admission counted).
    assert direct.choose(Settings(), "ko", "ja")[0] == "openai-translate"
    # Overflow: the call's own provider first when it has a direct mode.
    pair = LanguagePair("ja", "ko")
    assert direct.overflow_provider(both, pair, "gemini-live-translate") == "gemini-live-translate"
    assert direct.overflow_provider(both, pair, "local") == "openai-translate"
    no_openai = direct.overflow_provider(both, pair, "local", lambda p: p != "openai-translate")
    assert no_openai == "gemini-live-translate"
    assert direct.overflow_provider(Settings(), pair, "local") is None
    body = catalogue(both)["direct"]
    assert body == {
        "overflow": True,
        "provider": "openai-translate",
        "providers": ["openai-translate", "gemini-live-translate"],
    }


# --- the fakes accept only what the SDKs' models accept --------------------------------------
@pytest.fixture
async def fake_url() -> AsyncIterator[str]:
    server = TestServer(build_app("sk-unit", "gm-unit"), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_openai_fake_refuses_what_the_sdk_models_refuse(fake_url: str) -> None:
    ws_url = fake_url.replace("http://", "ws://") + "/v1/realtime/translations?model=m"
    headers = {"Authorization": "Bearer sk-unit"}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        created = json.loads(await ws.recv())
        # Built from the SDK's model: a complete session, not just an id.
        assert created["type"] == "session.created"
        assert {"id", "model", "expires_at", "type", "audio"} <= set(created["session"])
        for bad in (
            {"type": "session.update", "session": {"audio": {"output": {"languag": "fr"}}}},
            {"type": "session.input_audio_buffer.append"},  # no audio
            {"type": "input_audio_buffer.append", "audio": ""},  # the assistant API's name
        ):
            await ws.send(json.dumps(bad))
            err = json.loads(await ws.recv())
            assert err["type"] == "error" and err["error"]["code"] == "invalid_event", bad
        # What the SDK itself sends is accepted.
        await ws.send(json.dumps({"type": "session.update", "session": {"audio": {}}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"


async def test_the_gemini_fake_refuses_what_the_sdk_models_refuse(fake_url: str) -> None:
    ws_url = (
        fake_url.replace("http://", "ws://")
        + "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    headers = {"x-goog-api-key": "gm-unit"}
    old_setup = {"setup": {"model": "models/m", "translationConfig": {"targetLanguageCode": "ko"}}}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps(old_setup))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1007
    setup = direct.gemini_setup(Settings(gemini_api_key="g"), LanguagePair("ja", "ko"))
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"setup": setup}))
        assert "setupComplete" in json.loads(await ws.recv())
        await ws.send(json.dumps({"realtimeInput": {"audio": {"data": "AAAA"}, "extra": 1}}))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1007


def test_providers_check_without_keys_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DRAGOMAN_OPENAI_API_KEY", "DRAGOMAN_GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["providers", "check"]) == 1
    out = capsys.readouterr().out
    assert "openai-translate: not checked" in out and "DRAGOMAN_OPENAI_API_KEY" in out
    assert "gemini-live-translate: not checked" in out and "DRAGOMAN_GEMINI_API_KEY" in out
    assert "no cloud provider is configured" in out


def test_the_default_provider_is_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in DRAGOMAN_PROVIDER stops the server with a readable line naming the valid
    ones (it used to start and fail every call); that the settings accept exactly the
    catalogue's providers is test_catalog_units'."""
    from dragoman.pipeline.providers.catalog import PROVIDERS

    monkeypatch.setenv("DRAGOMAN_PROVIDER", "opneai-translate")
    with pytest.raises(SystemExit) as e:
        cli._load_settings()
    assert "DRAGOMAN_PROVIDER" in str(e.value)
    assert all(repr(name) in str(e.value) for name in PROVIDERS), e.value


@pytest.mark.parametrize("opener", ["translation", "transcription"])
@pytest.mark.parametrize(("key", "code"), [("sk-unit", None), ("sk-wrong", "provider_refused")])
async def test_openai_realtime_sessions_open_or_fail_in_our_terms(
    fake_url: str, opener: str, key: str, code: str | None
) -> None:
    s = Settings(openai_api_key=key, openai_base_url=fake_url + "/v1")
    pair = LanguagePair("ko", "en")
    stream: Any = (
        openai_translate.OpenAITranslate(s)
        if opener == "translation"
        else cascade_stream.TranscriptionStream(s)
    )
    if code is None:
        async with stream.connect(pair, 5.0) as session:
            # session.created (nothing of ours), then the update's answer: ready.
            receive = session.receive
            kinds = [e.kind for e in await receive()] or [e.kind for e in await receive()]
            assert kinds == ["ready"]
        return
    with pytest.raises(ProviderError) as e:
        async with stream.connect(pair, 5.0):
            pass
    assert e.value.code == code and "HTTP 401" in str(e.value)
