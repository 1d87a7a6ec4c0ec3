"""`dragoman bench lag`: the pure matching and statistics on made-up recordings, and a short
run end to end whose report must be consistent. Benchmarks are not tests: nothing here
asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dragoman.bench.caller import RATE
from dragoman.bench.lag_measure import (
    Span,
    audible_before,
    audible_spans,
    caption_events,
    clock_origin,
    covered_by_final,
    covers,
    first_audible,
    first_covering,
    fold_captions,
    keys_found,
    match,
    open_lines,
    origin_from_marks,
    slope,
)
from dragoman.bench.lag_report import Recording, analyse, table, verdicts
from dragoman.bench.lag_talk import SENTENCES, Sentence, Talk, join_clips, pick, voiced_bounds


def cap(uid: str, text: str, final: bool, t0: int, t1: int, side: str = "translation") -> dict:
    return {
        "v": 1,
        "type": "caption",
        "id": uid,
        "side": side,
        "lang": "en",
        "final": final,
        "text": text,
        "t_start_ms": t0,
        "t_end_ms": t1,
    }


# --- pure functions ------------------------------------------------------------------------
def test_partials_fold_into_their_final_line_and_withdrawn_lines_go() -> None:
    msgs = [
        cap("s1", "", False, 0, 0),  # an empty partial: not yet the line's first words
        cap("s1", "The train", False, 100, 900),
        cap("s1", "The train leaves at nine.", True, 100, 2400),
        cap("s2", "Uh", False, 2600, 2900),
        cap("s2", "", True, 2600, 3000),  # withdrawn
        cap("u1", "電車", True, 100, 2400, side="source"),
        {**cap("peer-u1", "Hello", True, 0, 900), "from": "peer"},
    ]
    lines = fold_captions(msgs, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert [(s.id, s.text, s.final, s.t_end_ms) for s in lines] == [
        ("s1", "The train leaves at nine.", True, 2400)
    ]
    assert lines[0].first_at == 2.0 and lines[0].last_at == 3.0
    assert open_lines(msgs[:4]) == 1 and open_lines(msgs) == 0


def test_a_caption_covers_the_sentences_it_shares_enough_audio_with() -> None:
    sentences = [Span(0.0, 3.0), Span(3.3, 6.0), Span(6.3, 9.0)]
    whole_turn = Span(-0.3, 9.5)  # consecutive: one utterance over the whole talk
    spill = Span(3.2, 6.4)  # 0.1 s of the next sentence: timestamp slack, not a cover
    clause = Span(6.5, 6.8)  # a short clause inside one sentence
    assert match(sentences, [whole_turn, spill, clause]) == [[0], [0, 1], [0, 2]]
    assert covers(Span(1.0, 1.2), Span(0.0, 3.0)) and not covers(Span(3.1, 3.3), Span(0, 3))


def test_a_growing_partial_covers_a_sentence_once_it_reaches_it() -> None:
    # One simultaneous line over two sentences (0–2 s, 2.3–4 s; the agent's zero at 10.0).
    msgs = [
        cap("u1", "Tanaka", False, 0, 1200),
        cap("u1", "Tanaka gets up at seven. He", False, 0, 2800),  # 0.5 s into the second
        cap("u1", "Tanaka gets up at seven. He goes to Osaka.", True, 0, 4100),
        cap("u1", "", False, 0, 0),  # nothing to show: not an event
    ]
    events = caption_events(msgs, [11.0, 12.5, 14.3, 14.4])
    assert [e.at for e in events] == [11.0, 12.5, 14.3]
    first, second = Span(10.0, 12.0), Span(12.3, 14.0)
    assert first_covering(events, 10.0, first).at == 11.0
    assert first_covering(events, 10.0, second).at == 12.5
    assert first_covering(events, 10.0, Span(15.0, 16.0)) is None


def test_the_agent_clock_is_placed_from_its_marks_before_the_first_onset() -> None:
    # The agent's zero is at client time 100.0: a caption of u1 ending 5.5 s after it, the
    # VAD's stop mark of the same utterance at 105.5 on the shared monotonic clock.
    msgs = [
        cap("u1", "田中", False, 200, 3000, side="source"),
        cap("u1", "Tanaka", True, 200, 5500),
        {"v": 1, "type": "metrics", "id": "u1", "marks": {"vad_stop": 105.5, "tts_start": 107}},
    ]
    assert origin_from_marks(msgs) == pytest.approx(100.0)
    origin, method, check = clock_origin(msgs, first_onset_at=100.5)
    assert origin == pytest.approx(100.0) and method.startswith("agent metrics")
    assert check == pytest.approx(0.3)  # onset 100.5 − 0.2 s: the caption starts 0.3 s late
    origin, method, check = clock_origin(msgs[:2], first_onset_at=100.5)
    assert origin == pytest.approx(100.3) and method.startswith("first source") and check is None
    assert clock_origin([], 1.0)[0] is None


def test_the_talk_is_done_once_a_final_caption_covers_its_last_sentence() -> None:
    last = Span(106.0, 109.0)  # client clock; the agent's zero at 100.0
    partial = [cap("u2", "Paris", False, 5800, 8000)]
    final = [cap("u2", "Sato lives in Paris.", True, 5800, 9400)]
    early = [cap("u1", "Tanaka", True, 0, 5900)]
    assert not covered_by_final(partial, [1.0], 100.0, last)
    assert covered_by_final(final, [1.0], 100.0, last)
    assert not covered_by_final(early, [1.0], 100.0, last)


def test_received_audio_spans_and_onsets() -> None:
    at = [10.02, 10.04, 10.06, 10.3, 10.32, 11.5, 11.52]
    rms = [0.0, 900.0, 900.0, 900.0, 10.0, 900.0, 900.0]
    assert audible_spans(at, rms, 500) == [Span(10.02, 10.3), Span(11.48, 11.52)]
    assert audible_spans(at, rms, 500, since=11.0) == [Span(11.48, 11.52)]
    assert first_audible(at, rms, after=10.31, threshold=500) == 11.5
    assert first_audible(at, rms, after=12.0, threshold=500) is None
    assert audible_before(at, rms, 10.07, 500) and not audible_before(at, rms, 11.4, 500)


def test_slope_is_least_squares() -> None:
    assert slope([0, 10, 20, 30], [1.0, 1.5, 2.0, 2.5]) == pytest.approx(0.05)
    assert slope([0, 10, 20], [2.0, 1.0, 3.0]) == pytest.approx(0.05)
    assert slope([5.0], [1.0]) is None and slope([3.0, 3.0], [1.0, 2.0]) is None


def test_key_words_are_whole_words_in_any_spelling() -> None:
    keys = [("tanaka",), ("7", "seven")]
    assert keys_found("Mr. Tanaka gets up at 7:00 every morning.", keys) == [True, True]
    assert keys_found("Tanaka-san wakes at seven.", keys) == [True, True]
    assert keys_found("Takasan is in Mayasa 17.", keys) == [False, False]
    assert keys_found("Two cats, on the 10th floor", [("cat",), ("10",)]) == [True, True]
    assert keys_found("Hawaiian food", [("hawaii",)]) == [False]


def test_the_talk_is_trimmed_clips_joined_by_the_pause() -> None:
    tone = (3000 * np.sin(np.arange(RATE) / 8)).astype(np.int16)  # 1 s, voiced
    pad = np.zeros(RATE // 2, np.int16)
    clips = [np.concatenate([pad, tone, pad]), np.concatenate([pad, tone[: RATE // 2], pad])]
    talk = join_clips(clips, ["a", "b"], [[("x",)], [("y",)]], pause_s=0.3)
    a, b = talk.sentences
    assert a.start_s < 0.05 and a.end_s == pytest.approx(1.0, abs=0.05)
    assert b.start_s - a.end_s == pytest.approx(0.3, abs=0.08)  # the pause (plus edges)
    assert b.end_s - b.start_s == pytest.approx(0.5, abs=0.02)
    assert talk.duration_s == pytest.approx(b.end_s, abs=0.05)
    assert voiced_bounds(np.zeros(RATE, np.int16), RATE) == (0, 0)
    assert pick(40, 0.3, [3.0] * 20) == 13 and pick(5, 0.3, [3.0]) == 2 and pick(0, 0.3, [3.0]) == 1


def test_the_sentences_are_not_the_tests_and_have_key_words() -> None:
    from conftest import JA_SENTENCE

    from dragoman.bench.latency import JA_SENTENCES

    texts = [t for t, _ in SENTENCES]
    assert len(texts) >= 8 and len(set(texts)) == len(texts)
    assert JA_SENTENCE not in texts and not set(JA_SENTENCES) & set(texts)
    assert all(keys and all(spellings for spellings in keys) for _, keys in SENTENCES)


def _recording() -> tuple[Recording, Talk]:
    """Two sentences (0–2 s, 2.3–4 s of the talk), the talk starting at client time 50.0,
    the agent's zero at 49.0; one consecutive turn covering both, heard at 57.0."""
    talk = Talk(
        pcm=np.zeros(4 * RATE, np.int16),
        sentences=[
            Sentence(0, "一", [("tokyo",)], 0.0, 2.0),
            Sentence(1, "二", [("osaka",), ("9",)], 2.3, 4.0),
        ],
        pause_s=0.3,
    )
    msgs = [
        {"v": 1, "type": "state", "state": "listening"},
        cap("u1", "東京", False, 800, 3000, side="source"),
        cap("u1", "Tokyo and Osaka.", True, 800, 5500),
        {"v": 1, "type": "metrics", "id": "u1", "marks": {"vad_stop": 54.5}},
    ]
    at = [48.0, 52.0, 56.0, 56.1]
    frames = np.arange(56.9, 58.0, 0.02).tolist()
    rec = Recording(
        "consecutive",
        talk_at=50.0,
        messages=msgs,
        message_at=at,
        audio_at=[45.0, *frames],  # 45.0: the connect chime, before any caption
        audio_rms=[5000.0] + [0.0] * 5 + [900.0] * (len(frames) - 5),
        in_force="consecutive",
        cpu_s=2.0,
    )
    return rec, talk


def test_a_recording_becomes_consistent_lags() -> None:
    rec, talk = _recording()
    m = analyse(rec, talk)
    assert m["clock"]["agent_zero_before_talk_s"] == pytest.approx(1.0)
    assert [r["segments"] for r in m["per_sentence"]] == [["u1"], ["u1"]]
    start = m["per_sentence"][0]["translation_start_s"]
    assert start == pytest.approx(7.0, abs=0.021)  # 57.0: the first audible frame, not 45.0
    assert [r["lag_s"] for r in m["per_sentence"]] == pytest.approx(
        [start - 2.0, start - 4.0], abs=0.011
    )
    assert m["first_audio_s"] == start and m["end_caption_s"] == pytest.approx(2.0)
    assert m["end_audio_s"] == pytest.approx(3.98, abs=0.03)
    assert m["slope_s_per_s"] == pytest.approx(-2.0 / 2.0, abs=0.01)  # the same start for both
    assert [r["keys_found"] for r in m["per_sentence"]] == [[True], [True, False]]
    assert m["kept"] == 1 and (m["keys_found"], m["keys"]) == (2, 3)
    assert m["cpu_per_speech_s"] == pytest.approx(0.5)
    assert analyse(Recording("simultaneous", error="refused"), talk)["error"] == "refused"


def test_the_table_puts_targets_next_to_measurements() -> None:
    rec, talk = _recording()
    cons = analyse(rec, talk)
    sim = {**cons, "mode": "simultaneous", "first_audio_s": 3.0, "kept": 1}
    sim["lag_s"] = {"count": 2, "p50": 2.0, "max": 3.5, "mean": 2.0}
    ok = verdicts(sim, cons)
    assert ok["first_audio_s"] is True and ok["lag_s"] is True and ok["meaning"] is True
    assert ok["end_caption_s"] is True and ok["end_audio_s"] is None
    text = table({"consecutive": cons, "simultaneous": sim}, talk.duration_s)
    assert "simultaneous target" in text and "16.6 s" in text and "3.0 s ✓" in text
    assert len(text.splitlines()) == 2 + 7
    lost = {**sim, "per_sentence": [*sim["per_sentence"][:-1], {"lag_s": None}]}
    assert verdicts(lost, cons)["end_caption_s"] is False
    assert "(last sentence lost)" in table({"simultaneous": lost}, talk.duration_s)


# --- the command, end to end -------------------------------------------------------------
@pytest.mark.e2e  # a whole command run
def test_lag_command_writes_a_consistent_report(tmp_path: Path) -> None:
    out = tmp_path / "lag"
    exe = Path(sys.executable).with_name("dragoman")
    proc = subprocess.run(
        [str(exe), "bench", "lag", "--talk-s", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((out / "lag.json").read_text())
    sentences = rep["talk"]["sentences"]
    assert len(sentences) >= 2 and rep["talk"]["duration_s"] >= 5
    assert set(rep["modes"]) == {"consecutive", "simultaneous"}
    for name, m in rep["modes"].items():
        assert "error" not in m, (name, m)
        assert m["interpretation_in_force"] == name, m  # the agent interpreted as asked
        assert m["sentences"] == len(sentences) == len(m["per_sentence"])
        ids = {s["id"] for s in m["segments"]}
        assert ids, m  # translation captions came
        for row, s in zip(m["per_sentence"], sentences, strict=True):
            assert (row["start_s"], row["end_s"]) == (s["start_s"], s["end_s"])
            assert set(row["segments"]) <= ids
            assert row["kept"] == all(row["keys_found"])
            if row["lag_s"] is None:
                continue
            # Its translation is heard after its caption, and after it began to be spoken.
            assert row["translation_start_s"] >= row["caption_s"]
            assert row["translation_start_s"] > row["start_s"]
            assert row["lag_s"] == pytest.approx(
                row["translation_start_s"] - row["end_s"], abs=0.011
            )
        assert m["translated"] >= 1
        assert m["first_audio_s"] <= min(
            r["translation_start_s"] for r in m["per_sentence"] if r["lag_s"] is not None
        )
        assert m["kept"] == sum(r["kept"] for r in m["per_sentence"])
        spans = m["speech_spans"]
        assert spans and all(a < b for a, b in spans)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
        assert m["end_audio_s"] == pytest.approx(spans[-1][1] - sentences[-1]["end_s"], abs=0.011)
        assert m["cpu_s"] is not None and m["cpu_s"] > 0  # the inference service was found
        assert m["end_caption_s"] is not None and m["end_caption_s"] > -1.0  # it waited for it
        check = m["clock"]["onset_minus_marks_s"]
        assert check is None or abs(check) < 1.0  # both ways of placing the talk agree
    assert (out / "lag.png").stat().st_size > 10_000
    raw = json.loads((out / "lag-raw.json").read_text())
    assert [r["mode"] for r in raw] == ["consecutive", "simultaneous"]
    assert all(r["messages"] and r["audio"] for r in raw)
    assert "simultaneous target" in proc.stdout and "placed on the agent's clock" in proc.stdout
