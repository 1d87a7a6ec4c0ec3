"""Pure pieces of the providers: the catalogue, caption segmentation, wire parsing,
glossaries, secrets in settings. No network, no process."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dragoman.config import Settings, settings_for_child
from dragoman.languages import LanguageError, LanguagePair
from dragoman.pipeline.glossary import read_glossary
from dragoman.pipeline.providers.captions import CaptionStream
from dragoman.pipeline.providers.catalog import catalogue, validate_call
from dragoman.pipeline.providers.gemini_live import GeminiLiveWire
from dragoman.pipeline.providers.openai_translate import OpenAITranslateWire, websocket_base


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
    assert not soft.fatal
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
