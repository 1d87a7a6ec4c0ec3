"""The page's transcript formats (dragoman/web/transcript.js) run in Node, without a browser:
times in WebVTT and SRT notation, lines in time order (an utterance's source before its
translation), a line without a duration given one, and text that cannot break a cue."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

TRANSCRIPT_JS = Path(__file__).resolve().parent.parent / "dragoman" / "web" / "transcript.js"

LINES = [
    # A translation that arrived before the words it translates (same times).
    {
        "speaker": "Interpreter (English)",
        "text": "Let's walk.",
        "start": 1200,
        "end": 4100,
        "rank": 1,
    },
    {
        "speaker": "You (Japanese)",
        "text": "散歩しましょう。",
        "start": 1200,
        "end": 4100,
        "rank": 0,
    },
    {"speaker": "You (Japanese)", "text": "a <b> & c", "start": 3_723_045, "end": 3_723_045},
    {"speaker": "You (Japanese)", "text": "公園", "start": 800, "end": 1000, "rank": 0},
]


def run_js(expression: str) -> object:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node is not installed; run scripts/setup.sh --test (it installs npm)")
    script = (
        f"import * as t from {json.dumps(TRANSCRIPT_JS.as_uri())};\n"
        f"const lines = {json.dumps(LINES)};\n"
        f"console.log(JSON.stringify({expression}));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_timestamps() -> None:
    assert run_js("[t.timestamp(0), t.timestamp(3723045), t.timestamp(61001, ',')]") == [
        "00:00:00.000",
        "01:02:03.045",
        "00:01:01,001",
    ]


def test_webvtt_cues_in_time_order_with_their_speakers() -> None:
    vtt = run_js("t.toWebVtt(lines)")
    assert vtt.startswith("WEBVTT\n\n1\n00:00:00.800 --> 00:00:01.000\n")
    cues = vtt.strip().split("\n\n")[1:]
    assert [c.splitlines()[2] for c in cues] == [
        "<v You (Japanese)>公園",
        "<v You (Japanese)>散歩しましょう。",
        "<v Interpreter (English)>Let's walk.",
        "<v You (Japanese)>a &lt;b&gt; &amp; c",  # markup in speech cannot open a tag
    ]
    assert [c.splitlines()[0] for c in cues] == ["1", "2", "3", "4"]
    # A line without a duration still gets a cue that ends after it starts.
    assert cues[3].splitlines()[1] == "01:02:03.045 --> 01:02:03.545"


def test_srt_and_text() -> None:
    srt = run_js("t.toSrt(lines)")
    assert srt.split("\n\n")[2].splitlines() == [
        "3",
        "00:00:01,200 --> 00:00:04,100",
        "Interpreter (English): Let's walk.",
    ]
    text = run_js("t.toText(lines, 'heading')")
    assert text.splitlines()[:3] == [
        "heading",
        "",
        "[00:00:00.800 – 00:00:01.000] You (Japanese): 公園",
    ]
    assert "[00:00:01.200 – 00:00:04.100] You (Japanese): 散歩しましょう。" in text
