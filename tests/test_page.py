"""The page for the people in the conversation, in headless Chromium against a real serve:
in the browser's language (Korean, Japanese) with a switch that is remembered, on a phone's
screen (390 px, touch) with nothing sticking out and Call in reach, a transcript to keep
(.txt, WebVTT, SRT and the clipboard, checked against the captions shown), the screen kept
awake during a call, accessible (axe-core: no serious or critical violation; a call placed
and ended with the keyboard alone, every focused control visibly marked).

The calls here also make the README's screenshots: docs/screenshots/desktop.png (the page in
Japanese) and phone.png (in Korean), each with a Japanese caption and its English translation
(CJK glyphs from Debian's fonts-noto-cjk, which scripts/setup.sh --test installs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import JA_KEYWORD, Server, launch_chromium, wait_until

ROOT = Path(__file__).resolve().parent.parent
CATALOGUES = ROOT / "dragoman" / "web" / "i18n"
AXE = Path(__file__).resolve().parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
A11Y_REPORTS = ROOT / "results" / "a11y"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 860}}


def catalogue(language: str) -> dict[str, str]:
    return json.loads((CATALOGUES / f"{language}.json").read_text(encoding="utf-8"))


@pytest.fixture
def browser(ja_speech: Path) -> Iterator:
    from playwright import sync_api as playwright

    with playwright.sync_playwright() as p:
        b = launch_chromium(p, ja_speech)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, server: Server, **context):
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    page.on("console", lambda m: print(f"[page] {m.type}: {m.text}"))
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    return page


def untranslated(language: str) -> set[str]:
    """English sentences that differ in ``language``: none of them may show on its page."""
    english, words = catalogue("en"), catalogue(language)
    return {v for k, v in english.items() if words[k] != v}


# Every piece of text a person sees (visible elements only), and every accessible label.
VISIBLE_WORDS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    const text = node.textContent.trim();
    if (text && el.checkVisibility() && !el.closest('#captions, #debug')) out.push(text);
  }
  for (const el of document.querySelectorAll('[aria-label], [title]')) {
    if (el.checkVisibility()) out.push(el.getAttribute('aria-label') || el.title);
  }
  for (const o of document.querySelectorAll('select:not(#source, #target, #provider) option')) {
    out.push(o.text);
  }
  return out;
}"""


@pytest.mark.parametrize(("locale", "language"), [("ko-KR", "ko"), ("ja-JP", "ja")])
def test_the_page_speaks_the_browsers_language(
    server: Server, browser, locale: str, language: str
) -> None:
    words = catalogue(language)
    page = open_page(browser, server, locale=locale)
    assert page.evaluate("document.documentElement.lang") == language
    assert page.inner_text("#call") == words["button.call"]
    assert page.inner_text("#conn-state") == words["state.idle"]
    assert page.title() == words["page.title"]
    # Language names in the reader's language (Intl.DisplayNames), not the server's English.
    name = page.eval_on_selector("#source option[value='ja']", "o => o.text")
    expected = page.evaluate(
        "l => new Intl.DisplayNames([l], {type: 'language'}).of('ja')", language
    )
    assert name == expected and name != "Japanese"
    # Nothing a person sees is left in English (where the two languages differ).
    shown = page.evaluate(VISIBLE_WORDS)
    assert len(shown) > 20
    assert [w for w in shown if w in untranslated(language)] == []

    # The switch: another language at once, and remembered on the next visit.
    page.select_option("#ui-lang", "fr")
    page.wait_for_function("() => document.documentElement.lang === 'fr'")
    assert page.inner_text("#call") == catalogue("fr")["button.call"]
    page.reload()
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    assert page.inner_text("#call") == catalogue("fr")["button.call"]
    page.context.close()


# Elements whose box reaches past the viewport's right edge (or starts left of it).
OVERFLOWING = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.checkVisibility())
  .map(e => [e, e.getBoundingClientRect()])
  .filter(([, r]) => r.width > 0 && (r.right > window.innerWidth + 0.5 || r.left < -0.5))
  .map(([e, r]) => `${e.tagName}#${e.id}.${e.className} ${r.left}..${r.right}`)"""

# Controls outside the card that holds them.
OUTSIDE_CARD = """() => [...document.querySelectorAll('.card select, .card button, .card input')]
  .filter(e => e.checkVisibility())
  .filter(e => {
    const r = e.getBoundingClientRect(), c = e.closest('.card').getBoundingClientRect();
    return r.left < c.left - 0.5 || r.right > c.right + 0.5;
  })
  .map(e => e.id)"""


@pytest.mark.parametrize("width", [360, 390, 430])
def test_a_phone_screen_holds_every_control(server: Server, browser, width: int) -> None:
    page = open_page(
        browser, server, locale="ko-KR", **{**PHONE, "viewport": {"width": width, "height": 780}}
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate(OVERFLOWING) == []
    assert page.evaluate(OUTSIDE_CARD) == []
    # Call is on the first screen, without scrolling, and big enough for a thumb.
    box = page.locator("#call").bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= 780
    assert box["height"] >= 44 and box["width"] >= 120
    page.context.close()


def run_axe(page, name: str) -> dict:
    """axe-core in the page; its report is kept under results/a11y/ as an artefact."""
    assert AXE.exists(), "axe-core is missing: run scripts/setup.sh --test (npm install)"
    page.add_script_tag(path=str(AXE))
    report = page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag',
             values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"""
    )
    A11Y_REPORTS.mkdir(parents=True, exist_ok=True)
    (A11Y_REPORTS / f"axe-{name}.json").write_text(json.dumps(report, indent=1))
    return report


def serious(report: dict) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}"
        for v in report["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("locale", ["en-US", "ko-KR"])
def test_axe_finds_no_serious_violation_on_the_idle_page(
    server: Server, browser, locale: str
) -> None:
    page = open_page(browser, server, locale=locale, **DESKTOP)
    report = run_axe(page, f"idle-{locale}")
    assert report["passes"], "axe ran no checks"
    assert serious(report) == []
    # Caption text size: a control, remembered.
    before = page.eval_on_selector("#captions", "e => parseFloat(getComputedStyle(e).fontSize)")
    page.select_option("#caption-size", "xlarge")
    after = page.eval_on_selector("#captions", "e => parseFloat(getComputedStyle(e).fontSize)")
    assert after >= before * 1.5
    page.reload()
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    assert page.eval_on_selector("#caption-size", "s => s.value") == "xlarge"
    assert page.get_attribute("#captions", "aria-live") == "polite"
    page.context.close()


def wait_for_interpretation(page) -> None:
    """A final Japanese caption with the sentence's key word and a final English one."""
    page.wait_for_function(
        """kw => window.dragoman.captions.some(c => c.side === 'source' && c.final
               && c.text.includes(kw))""",
        arg=JA_KEYWORD,
        timeout=90_000,
    )
    page.wait_for_function(
        """() => window.dragoman.captions.some(c => c.side === 'translation' && c.final
               && c.lang === 'en' && c.text.trim())""",
        timeout=60_000,
    )


def stamp(ms: int, sep: str = ".") -> str:
    h, rest = divmod(max(0, ms), 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02}:{m:02}:{s:02}{sep}{milli:03}"


def download(page, button: str) -> str:
    with page.expect_download() as info:
        page.click(button)
    return Path(info.value.path()).read_text(encoding="utf-8")


def check_transcript(text: str, finals: list[dict], fmt: str) -> None:
    """Every final caption shown is in the file, with its words, its speaker as the page
    shows it, and the agent's times (ms since the call started)."""
    sep = "," if fmt == "srt" else "."
    for c in finals:
        end = c["t_end_ms"] if c["t_end_ms"] > c["t_start_ms"] else c["t_start_ms"] + 500
        start, end = stamp(c["t_start_ms"], sep), stamp(end, sep)
        if fmt == "txt":
            line = f"[{start} – {end}] {c['who']}: {c['text']}"
            assert line in text.splitlines(), (line, text)
        else:
            body = f"<v {c['who']}>{c['text']}" if fmt == "vtt" else f"{c['who']}: {c['text']}"
            cue = re.search(
                rf"^{re.escape(start)} --> {re.escape(end)}\n{re.escape(body)}$", text, re.M
            )
            assert cue, (start, end, body, text)
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n")


FINALS = """() => window.dragoman.captions.filter(c => c.final).map(c => ({
  ...c,
  who: document.querySelector(`.caption[data-id="${c.id}"][data-side="${c.side}"] .who`)
    .textContent,
}))"""


def test_a_call_on_a_phone_keeps_its_transcript_and_the_screen_awake(
    server: Server, browser
) -> None:
    page = open_page(browser, server, locale="ko-KR", **PHONE)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    assert page.is_disabled("#save-vtt")  # nothing to keep yet
    page.select_option("#source", "ja")
    page.select_option("#target", "en")
    page.tap("#call")
    page.wait_for_function("() => window.dragoman.state === 'listening'", timeout=30_000)
    # The screen is asked to stay awake once the call starts (a headless browser may refuse).
    page.wait_for_function("() => window.dragoman.wakeLock !== null", timeout=10_000)
    assert page.evaluate("window.dragoman.wakeLockRequests") == 1
    assert page.evaluate("window.dragoman.wakeLock") in ("held", "refused")
    assert page.evaluate("window.dragoman.audioUnlocked") is True  # the tap started audio
    wait_for_interpretation(page)

    # Mid-call, with captions: still all in Korean, nothing wider than the phone, Hang up in
    # reach.
    assert [w for w in page.evaluate(VISIBLE_WORDS) if w in untranslated("ko")] == []
    assert page.evaluate(OVERFLOWING) == []
    box = page.locator("#hangup").bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#captions-title").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "phone.png"), full_page=True)

    # During the call: text and WebVTT; the clipboard holds the text transcript.
    finals = page.evaluate(FINALS)
    assert any(JA_KEYWORD in c["text"] for c in finals)
    check_transcript(download(page, "#save-txt"), finals, "txt")
    check_transcript(download(page, "#save-vtt"), finals, "vtt")
    page.click("#copy-transcript")
    page.wait_for_function(
        "t => document.querySelector('#transcript-status').textContent === t",
        arg=catalogue("ko")["transcript.copied"],
    )
    check_transcript(page.evaluate("navigator.clipboard.readText()"), finals, "txt")

    page.tap("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    assert page.evaluate("window.dragoman.wakeLock") != "held"
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="the call to end")
    # After the call: the captions are still there to keep, as SRT too.
    finals = page.evaluate(FINALS)
    check_transcript(download(page, "#save-srt"), finals, "srt")
    page.context.close()


FOCUS_SHOWN = """() => {
  const e = document.activeElement, s = getComputedStyle(e);
  return e.matches(':focus-visible') && s.outlineStyle !== 'none'
    && parseFloat(s.outlineWidth) >= 2;
}"""


def tab_to(page, element_id: str, limit: int = 40) -> int:
    """Presses Tab until ``element_id`` has the focus; every stop must show its focus."""
    for presses in range(limit + 1):
        if page.evaluate("document.activeElement?.id") == element_id:
            return presses
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement !== document.body"):
            assert page.evaluate(FOCUS_SHOWN), page.evaluate("document.activeElement.outerHTML")
    raise AssertionError(f"Tab never reached #{element_id}")


def test_a_call_placed_and_ended_with_the_keyboard_alone(server: Server, browser) -> None:
    page = open_page(browser, server, locale="ja-JP", **DESKTOP)
    assert tab_to(page, "call") > 0
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.dragoman.state === 'listening'", timeout=30_000)
    wait_for_interpretation(page)
    # Captions are announced politely, and the page with them passes axe too.
    assert page.get_attribute("#captions", "aria-live") == "polite"
    assert serious(run_axe(page, "in-call-ja-JP")) == []
    # No developer timings in sight: they live in the closed "technical details".
    assert not page.is_visible("#first-audio-ms")
    assert page.evaluate("window.dragoman.firstAudioMs") is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "desktop.png"), full_page=True)

    tab_to(page, "hangup")
    page.keyboard.press("Space")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="the call to end")
    # Focus went back to Call: the next call is one Enter away.
    assert page.evaluate("document.activeElement.id") == "call"
    page.context.close()


def test_a_room_guest_sees_the_page_in_the_language_they_pick(server: Server, browser) -> None:
    host = open_page(browser, server, locale="en-US")
    host.select_option("#source", "ja")
    host.select_option("#target", "en")
    host.click("#call")
    host.wait_for_function("() => window.dragoman.state === 'listening'", timeout=30_000)
    host.wait_for_function("() => !document.querySelector('#invite').disabled")
    host.click("#invite")
    host.wait_for_function("() => window.dragoman.inviteUrl", timeout=10_000)
    link = host.evaluate("window.dragoman.inviteUrl")

    guest = browser.new_context(locale="en-US").new_page()
    guest.goto(link)
    guest.wait_for_function("() => window.dragoman.room?.language === 'ja'")
    assert guest.evaluate("document.documentElement.lang") == "en"
    guest.select_option("#source", "ko")  # the guest will speak Korean
    guest.wait_for_function("() => document.documentElement.lang === 'ko'")
    words = catalogue("ko")
    assert guest.inner_text("#call") == words["button.call"]
    # The invitation itself is re-said in Korean, naming the host's language in Korean.
    japanese = guest.evaluate("new Intl.DisplayNames(['ko'], {type: 'language'}).of('ja')")
    assert guest.inner_text("#room-invited") == words["room.invited"].replace(
        "{language}", japanese
    )
    guest.context.close()

    host.click("#hangup")
    host.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="the call to end")
    host.context.close()
