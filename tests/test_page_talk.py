"""The page's ways to talk, in headless Chromium against a real serve (its fake microphone
loops a Japanese sentence): push-to-talk switched on before the call reaches the agent when
the control channel opens, nothing is interpreted while the talk button is not held, the
space bar or a pointer holds it and its release is interpreted; switched off, "Interpret now" is
offered. (The agent side, on a talker who never pauses: tests/test_talk.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, launch_chromium, wait_until

CATALOGUES = Path(__file__).resolve().parent.parent / "dragoman" / "web" / "i18n"


@pytest.fixture
def browser(ja_speech: Path) -> Iterator:
    from playwright import sync_api as playwright

    with playwright.sync_playwright() as p:
        b = launch_chromium(p, ja_speech)
        try:
            yield b
        finally:
            b.close()


def talk_log(page) -> list[dict]:
    return page.evaluate("window.dragoman.talkLog")


def test_push_to_talk_and_interpret_now_from_the_page(server: Server, browser) -> None:
    words = json.loads((CATALOGUES / "de.json").read_text(encoding="utf-8"))
    page = browser.new_page(locale="de-DE", viewport={"width": 1280, "height": 860})
    page.on("console", lambda m: print(f"[page] {m.type}: {m.text}"))
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('#source option').length > 5")
    page.select_option("#source", "ja")
    page.select_option("#target", "en")
    assert page.is_hidden("#talk") and page.is_disabled("#interpret-now")
    page.check("#push-to-talk")
    assert page.inner_text("#talk") == words["talk.hold"]  # in the reader's language
    assert page.is_disabled("#talk")  # nothing to hold before a call
    page.click("#call")
    # Sent when the control channel opened; the agent confirms it hears nothing now.
    page.wait_for_function(
        "() => window.dragoman.talkLog.some(t => t.pushToTalk && !t.held)", timeout=30_000
    )
    assert page.is_enabled("#talk") and page.is_disabled("#interpret-now")
    quiet_from = page.evaluate("window.dragoman.captions.length")
    time.sleep(6.0)  # the microphone says its sentence at least once meanwhile
    assert page.evaluate("window.dragoman.captions.length") == quiet_from

    # The space bar holds the button (the focus on the page, not in a field).
    page.evaluate("document.activeElement.blur()")
    page.keyboard.down("Space")
    page.wait_for_function("() => window.dragoman.talkLog.some(t => t.held)", timeout=10_000)
    assert page.get_attribute("#talk", "aria-pressed") == "true"
    time.sleep(6.0)  # a whole loop of the sentence
    held_log = len(talk_log(page))
    page.keyboard.up("Space")
    page.wait_for_function(
        "n => window.dragoman.talkLog.length > n && !window.dragoman.talkLog.at(-1).held",
        arg=held_log,
        timeout=10_000,
    )
    assert page.get_attribute("#talk", "aria-pressed") == "false"
    page.wait_for_function(
        """n => window.dragoman.captions.slice(n).some(c => c.side === 'source' && c.final
               && c.text.trim())""",
        arg=quiet_from,
        timeout=60_000,
    )

    # A pointer (a finger on a phone) holds it too.
    pressed_log = len(talk_log(page))
    page.hover("#talk")
    page.mouse.down()
    page.wait_for_function(
        "n => window.dragoman.talkLog.slice(n).some(t => t.held)", arg=pressed_log, timeout=10_000
    )
    page.mouse.up()
    page.wait_for_function(
        "n => window.dragoman.talkLog.length > n + 1 && !window.dragoman.talkLog.at(-1).held",
        arg=pressed_log,
        timeout=10_000,
    )

    # Off again: the agent listens all the time, and "Interpret now" is offered.
    page.uncheck("#push-to-talk")
    page.wait_for_function("() => !window.dragoman.talkLog.at(-1).pushToTalk", timeout=10_000)
    assert page.is_hidden("#talk") and page.is_enabled("#interpret-now")
    page.click("#interpret-now")
    page.click("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="the call to end")
    assert page.is_disabled("#interpret-now") and page.is_hidden("#error")
    page.context.close()
