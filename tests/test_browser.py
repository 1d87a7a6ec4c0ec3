"""End to end in real headless Chromium: fake microphone → page → agent → captions + speech.

Chromium plays a Japanese sentence (spoken by Kokoro at test time) as its microphone; the
page must show the Japanese source caption with the sentence's key word, a non-empty
English translation, and measure non-silent translated audio with its AnalyserNode.
"""

from __future__ import annotations

import pytest
from conftest import JA_KEYWORD, Server, wait_until


def test_japanese_call_in_chromium(server: Server, page) -> None:
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    page.select_option("#source", "ja")
    page.select_option("#target", "en")
    page.click("#call")

    # Simultaneous (the one-way default): while the sentence is spoken, its source caption
    # grows, drawn with its committed part plain and the tentative rest in its own span.
    page.wait_for_function(
        """() => window.dragoman.captions.some(c => c.side === 'source' && !c.final
                && c.stable !== null && c.text.length > 0)
            && document.querySelector('.caption[data-side="source"] .text[data-stable]')""",
        timeout=60_000,
        polling=50,
    )

    # Source caption (final) with the key word, then a non-empty English translation.
    page.wait_for_function(
        """kw => window.dragoman.captions.some(
            c => c.side === 'source' && c.final && c.lang === 'ja' && c.text.includes(kw))""",
        arg=JA_KEYWORD,
        timeout=60_000,
    )
    page.wait_for_function(
        """() => window.dragoman.captions.some(
            c => c.side === 'translation' && c.final && c.lang === 'en'
                 && c.text.trim().length > 0)""",
        timeout=60_000,
    )
    # The translation is spoken: the page's AnalyserNode hears loud audio after the agent
    # said it was speaking (the connect chime comes before any "speaking" state).
    page.wait_for_function(
        """() => {
            const d = window.dragoman;
            const speaking = d.states.find(([, s]) => s === 'speaking');
            return speaking && d.remoteLevels.some(
                ([t, rms]) => t >= speaking[0] && t <= speaking[0] + 10000 && rms > 0.05);
        }""",
        timeout=30_000,
    )
    first_audio = page.evaluate("window.dragoman.firstAudioMs")
    assert first_audio is not None and first_audio > 0
    steps = page.evaluate("window.dragoman.callTimings")
    print(f"Chromium: press → first agent audio {first_audio:.0f} ms; call steps {steps}")
    shown = page.inner_text("#first-audio-ms")
    assert shown.strip() == str(round(first_audio))  # the number the page measured
    rendered = page.locator('.caption[data-side="source"][data-final="true"]').all_inner_texts()
    assert any(JA_KEYWORD in t for t in rendered), rendered

    # Change the language mid-call from the page: the agent acknowledges on the same call.
    call_id = page.evaluate("window.dragoman.callId")
    page.select_option("#source", "ko")
    page.wait_for_function("() => window.dragoman.languages?.source === 'ko'", timeout=5_000)
    assert page.evaluate("window.dragoman.callId") == call_id

    # Hang up: the page returns to idle and the agent process ends.
    page.click("#hangup")
    page.wait_for_function(
        "() => ['ended', 'idle'].includes(window.dragoman.state)", timeout=10_000
    )
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="call ended on the server")


# Makes the page's first `new AudioContext()` throw, or that context's resume() (as when no
# audio device can be opened); every later one works.
AUDIO_FAILS_ONCE = """(() => {
  const where = WHERE;
  let failures = 1;
  const fail = () => new DOMException('No audio output device is available.', 'NotSupportedError');
  window.AudioContext = class extends window.AudioContext {
    constructor(...args) {
      if (where === 'constructor' && failures-- > 0) throw fail();
      super(...args);
    }
    resume() {
      if (where === 'resume' && failures-- > 0) throw fail();
      return super.resume();
    }
  };
})()"""


@pytest.mark.parametrize("where", ["constructor", "resume"])
def test_audio_that_cannot_start_is_reported_and_the_page_can_call_again(
    server: Server, page, where: str
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: (errors.append(str(e)), print(f"[page] error: {e}")))
    page.add_init_script(AUDIO_FAILS_ONCE.replace("WHERE", repr(where)))
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    page.select_option("#source", "ja")
    page.select_option("#target", "en")

    page.click("#call")
    page.wait_for_selector("#error:not([hidden])", timeout=5_000)
    assert "audio" in page.inner_text("#error")
    page.wait_for_function(
        "() => window.dragoman.state === 'failed' && window.dragoman.pendingSetups === 0"
    )
    assert page.is_enabled("#call") and page.is_disabled("#hangup")
    assert errors == []  # nothing escaped the click handler

    # The page is ready to call again, and this time the audio starts.
    page.click("#call")
    page.wait_for_function("() => window.dragoman.mode === 'agent'", timeout=30_000)
    assert page.is_hidden("#error")
    page.click("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="call ended on the server")
    assert errors == []


def test_interpretation_control_defaults_and_switches_mid_call(server: Server, page) -> None:
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    page.select_option("#source", "ja")
    page.select_option("#target", "en")
    # A one-way call with the offline provider: both modes offered, simultaneous first.
    control = page.get_by_label("Interpretation")
    assert control.input_value() == "simultaneous" and control.is_enabled()
    page.click("#call")
    page.wait_for_function(
        "() => window.dragoman.interpretation === 'simultaneous'", timeout=30_000
    )

    # Switched mid-call: the agent answers with a `languages` message carrying the new mode.
    seen = page.evaluate("window.dragoman.languagesLog.length")
    control.select_option("consecutive")
    page.wait_for_function(
        """n => window.dragoman.languagesLog.slice(n).some(
            m => m.interpretation === 'consecutive')""",
        arg=seen,
        timeout=10_000,
    )
    assert page.evaluate("window.dragoman.interpretation") == "consecutive"
    assert control.input_value() == "consecutive"
    page.click("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
