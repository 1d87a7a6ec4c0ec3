"""The page in headless Chromium, against a server whose only slot is taken: the second
caller is answered in DIRECT mode and talks to the provider itself — OpenAI's realtime
translation over WebRTC, or Gemini Live over a WebSocket with an AudioWorklet (16 kHz PCM
up, 24 kHz down).

The providers are the local FAKES (dragoman.fakes), which check every message against the
providers' SDK models: this is a protocol test of the page's direct paths (credential →
provider session → audio and transcript events), not of a real provider.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import Server, start_server, stop_server, wait_until
from fake_provider import GEMINI_KEY, KEY, Fake, start_fake, stop_fake

# What the page says when its caller hung up a connected call (the agent's words for it).
HUNG_UP = "Call ended: You hung up."


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    f = start_fake(tmp_path_factory.mktemp("fake"))
    yield f
    stop_fake(f)


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory, fake: Fake) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("one-slot"),
        DRAGOMAN_MAX_CALLS="1",
        DRAGOMAN_OPENAI_API_KEY=KEY,
        DRAGOMAN_OPENAI_BASE_URL=fake.openai_base,
        DRAGOMAN_GEMINI_API_KEY=GEMINI_KEY,
        DRAGOMAN_GEMINI_BASE_URL=fake.gemini_base,
        **fake.trusting_env(),
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


def test_full_fleet_overflows_to_direct_mode_in_the_page(
    one_slot: Server, fake: Fake, page
) -> None:
    # First caller: the agent takes it, and the page says so.
    page.goto(one_slot.url)
    page.wait_for_function("document.querySelectorAll('#provider option').length >= 4")
    assert page.eval_on_selector("#provider", "s => s.value") == "local"
    page.select_option("#source", "ja")
    page.select_option("#target", "en")
    page.click("#call")
    page.wait_for_function("() => window.dragoman.mode === 'agent'", timeout=30_000)
    assert "Interpreter agent" in page.inner_text("#mode")
    wait_until(lambda: one_slot.health()["active_calls"] == 1, 10, what="the slot to be taken")

    # Second caller, same browser: no slot left → direct mode, straight to the provider.
    calls_before = len(fake.sessions("webrtc_call"))
    second = page.context.browser.new_page()
    second.on("console", lambda m: print(f"[page2] {m.type}: {m.text}"))
    second.on("pageerror", lambda e: print(f"[page2] error: {e}"))
    second.goto(one_slot.url)
    second.wait_for_function("document.querySelectorAll('#provider option').length >= 4")
    second.select_option("#source", "ja")
    second.select_option("#target", "en")
    second.click("#call")
    second.wait_for_function("() => window.dragoman.mode === 'direct'", timeout=30_000)
    assert second.evaluate("window.dragoman.directReason") == "overflow"
    badge = second.inner_text("#mode")
    assert "Direct to OpenAI" in badge and "overflow" in badge, badge
    # The fake provider answered a WebRTC call authorised by a minted secret, and its
    # audio (a tone while the caller speaks) and transcript deltas reached the page.
    wait_until(
        lambda: len(fake.sessions("webrtc_call")) == calls_before + 1, 15, what="a direct call"
    )
    second.wait_for_function("() => window.dragoman.maxRemoteRms > 0.02", timeout=30_000)
    second.wait_for_function(
        """() => window.dragoman.captions.some(
            c => c.side === 'translation' && c.text.includes('word'))""",
        timeout=30_000,
    )
    # The page holds a short-lived secret, never the server's key.
    state = second.evaluate("JSON.stringify(window.dragoman)") + second.content()
    assert KEY not in state

    second.click("#hangup")
    second.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    page.click("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: one_slot.health()["active_calls"] == 0, 30, what="the agent call to end")
    # Hanging up a connected direct call ends it, in the words an agent call uses.
    assert (second.inner_text("#notice"), page.inner_text("#notice")) == (HUNG_UP, HUNG_UP)


def _take_the_only_slot(one_slot: Server, page) -> None:
    page.goto(one_slot.url)
    page.wait_for_function("document.querySelectorAll('#provider option').length >= 4")
    page.select_option("#provider", "local")
    page.select_option("#source", "ja")
    page.select_option("#target", "en")
    page.click("#call")
    page.wait_for_function("() => window.dragoman.mode === 'agent'", timeout=30_000)
    wait_until(lambda: one_slot.health()["active_calls"] == 1, 10, what="the slot to be taken")


def test_a_gemini_call_overflows_to_gemini_live_from_the_page(
    one_slot: Server, fake: Fake, page
) -> None:
    _take_the_only_slot(one_slot, page)
    before = len(fake.sessions("gemini-live"))
    # The fake serves the Live API over TLS with its own certificate (as the real one is
    # only reached over wss://): this browser context trusts it.
    context = page.context.browser.new_context(ignore_https_errors=True)
    second = context.new_page()
    second.on("console", lambda m: print(f"[page2] {m.type}: {m.text}"))
    second.on("pageerror", lambda e: print(f"[page2] error: {e}"))
    second.goto(one_slot.url)
    second.wait_for_function("document.querySelectorAll('#provider option').length >= 4")
    second.select_option("#provider", "gemini-live-translate")
    second.select_option("#source", "ja")
    second.select_option("#target", "th")
    second.click("#call")
    second.wait_for_function("() => window.dragoman.mode === 'direct'", timeout=30_000)
    assert second.evaluate("window.dragoman.directReason") == "overflow"
    assert second.evaluate("window.dragoman.provider") == "gemini-live-translate"
    badge = second.inner_text("#mode")
    assert "Direct to Gemini Live translation" in badge and "overflow" in badge, badge

    # The page opened the constrained Live endpoint with the one-use token, sent the setup
    # and its microphone as 16 kHz PCM; the fake's audio and transcripts came back.
    wait_until(lambda: len(fake.sessions("gemini-live")) == before + 1, 15, what="a session")
    second.wait_for_function("() => window.dragoman.maxRemoteRms > 0.02", timeout=30_000)
    second.wait_for_function(
        """() => window.dragoman.captions.some(
            c => c.side === 'translation' && c.text.includes('[th] word'))""",
        timeout=30_000,
    )
    second.wait_for_function(
        "() => window.dragoman.captions.some(c => c.side === 'source' && c.text.includes('word'))"
    )
    session = fake.sessions("gemini-live")[-1]
    assert session["constrained"] and session["version"] == "v1alpha"
    assert session["invalid"] == [], session["invalid"]
    translation = session["setup"]["generationConfig"]["translationConfig"]
    assert translation["targetLanguageCode"] == "th"
    assert "inputAudioTranscription" in session["setup"]
    # The microphone keeps streaming: over a second of 16 kHz PCM16 soon went up.
    wait_until(
        lambda: fake.sessions("gemini-live")[-1]["audio_bytes"] > 16000 * 2, 10, what="audio"
    )
    state = second.evaluate("JSON.stringify(window.dragoman)") + second.content()
    assert GEMINI_KEY not in state and KEY not in state

    second.click("#hangup")
    second.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    notice = second.inner_text("#notice")
    context.close()
    page.click("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: one_slot.health()["active_calls"] == 0, 30, what="the agent call to end")
    assert notice == HUNG_UP  # a connected call ended, not a cancelled one


# Records every peer connection, WebSocket and microphone track the page makes, so a test
# can ask afterwards whether any of them is still open.
OPENED_PROBE = """(() => {
  const made = (window.__made = { pcs: [], sockets: [], tracks: [] });
  const RealPC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends RealPC {
    constructor(...args) { super(...args); made.pcs.push(this); }
  };
  const RealWS = window.WebSocket;
  window.WebSocket = class extends RealWS {
    constructor(...args) { super(...args); made.sockets.push(this); }
  };
  const devices = navigator.mediaDevices;
  const gum = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const stream = await gum(constraints);
    made.tracks.push(...stream.getTracks());
    return stream;
  };
  window.__leftOpen = () => ({
    pcs: made.pcs.filter((pc) => pc.signalingState !== 'closed').length,
    sockets: made.sockets.filter((ws) => ws.readyState !== WebSocket.CLOSED).length,
    tracks: made.tracks.filter((t) => t.readyState !== 'ended').length,
  });
})()"""

NOTHING_OPEN = "() => { const o = window.__leftOpen(); return !o.pcs && !o.sockets && !o.tracks; }"


def _provider_calls(fake: Fake) -> int:
    """Calls the fake provider answered (minted secrets are not calls)."""
    return len(fake.sessions("webrtc_call")) + len(fake.sessions("gemini-live"))


def _pump_until(page, predicate, timeout_s: float, what: str) -> None:
    """Waits for something a route handler records: the sync API runs those handlers only
    inside its own calls, so this waits in short page-side steps (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        page.wait_for_timeout(20)


@pytest.mark.parametrize(
    ("provider", "target"),
    [
        ("local", "en"),  # the overflow goes to OpenAI, over WebRTC
        ("gemini-live-translate", "th"),  # to Gemini Live, over a WebSocket
    ],
    ids=["openai", "gemini"],
)
def test_hanging_up_during_the_post_leaves_nothing_open(
    one_slot: Server, fake: Fake, page, provider: str, target: str
) -> None:
    """The caller hangs up while POST /v1/calls is in flight; its answer (overflow to direct
    mode) arrives afterwards. As with an agent's answer, nothing is opened for it."""
    _take_the_only_slot(one_slot, page)
    context = page.context.browser.new_context(ignore_https_errors=True)
    try:
        _hang_up_during_the_post(one_slot, fake, context, provider, target)
    finally:
        context.close()
        # Free the slot even when the check failed, so the next test gets its agent call.
        page.click("#hangup")
        page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
        wait_until(lambda: one_slot.health()["active_calls"] == 0, 30, what="the slot freed")


def _hang_up_during_the_post(
    one_slot: Server, fake: Fake, context, provider: str, target: str
) -> None:
    sessions_before = _provider_calls(fake)
    context.add_init_script(OPENED_PROBE)
    second = context.new_page()
    errors: list[str] = []
    second.on("pageerror", lambda e: errors.append(str(e)))
    second.on("console", lambda m: print(f"[page2] {m.type}: {m.text}"))
    second.goto(one_slot.url)
    second.wait_for_function("document.querySelectorAll('#provider option').length >= 4")
    second.select_option("#provider", provider)
    second.select_option("#source", "ja")
    second.select_option("#target", target)

    # Hold the POST until the caller has hung up.
    routes: list = []
    second.route(f"{one_slot.url}/v1/calls", lambda route: routes.append(route))
    second.click("#call")
    _pump_until(second, lambda: routes, 20, "the page to POST its offer")
    second.click("#hangup")
    second.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    assert second.inner_text("#notice") == "Call cancelled."
    routes[0].continue_()
    # The server answers "direct" now (its only slot is still taken). The page opens nothing
    # for that answer and has closed everything it had opened, the microphone included.
    second.wait_for_function("() => window.dragoman.pendingSetups === 0", timeout=15_000)
    try:
        second.wait_for_function(NOTHING_OPEN, timeout=5_000)
    except Exception as e:  # Playwright's TimeoutError: say what was left
        raise AssertionError(f"left open: {second.evaluate('window.__leftOpen()')}") from e
    assert second.evaluate("window.__made.tracks.length") > 0  # the microphone was opened
    assert second.evaluate("window.dragoman.state") == "ended"
    assert second.evaluate("window.dragoman.mode") is None  # no direct call was set up
    assert errors == []
    # No provider session was opened for a call that was already hung up.
    assert _provider_calls(fake) == sessions_before
