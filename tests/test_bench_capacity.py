"""`dragoman bench capacity`: the pure pieces (talk schedule, a step's figures, the capacity
decision, queue waits) on made-up data, and a tiny run end to end whose report must be
consistent. Benchmarks are not tests: nothing here asserts a speed or a capacity."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dragoman.bench.caller import RATE
from dragoman.bench.capacity_plan import (
    TARGETS,
    WITHIN_S,
    Turn,
    build_talk,
    capacity,
    lag_figures,
    nearest_rank,
    queue_wait,
    schedule,
    speech_share,
    step_ok,
)


# --- the talk ------------------------------------------------------------------------------
def test_the_schedule_is_seeded_paused_and_fits_the_talk() -> None:
    durations = [2.0, 2.5, 3.0, 1.8]
    turns = schedule(durations, 30.0, seed=7, pause_s=(1.0, 2.0), lead_s=(0.0, 2.0))
    assert turns == schedule(durations, 30.0, seed=7, pause_s=(1.0, 2.0), lead_s=(0.0, 2.0))
    assert turns != schedule(durations, 30.0, seed=8, pause_s=(1.0, 2.0), lead_s=(0.0, 2.0))
    assert 0.0 <= turns[0].start_s <= 2.0
    for a, b in zip(turns, turns[1:], strict=False):
        pause = b.start_s - (a.start_s + durations[a.clip])
        assert 1.0 - 1e-6 <= pause <= 2.0 + 1e-6
        assert a.clip != b.clip  # never the same sentence twice in a row
    assert turns[-1].start_s + durations[turns[-1].clip] <= 30.0
    assert 0.5 < speech_share(durations, turns) < 0.75  # 1–2 s pauses after ~2.3 s sentences
    # A talk shorter than any sentence still has one.
    assert len(schedule(durations, 0.5, seed=1)) == 1


def test_a_talk_places_each_clip_at_its_turn_with_its_voiced_span() -> None:
    tone = (np.sin(np.arange(RATE) * 0.05) * 8000).astype(np.int16)  # 1 s, all voiced
    clips = [tone, tone[: RATE // 2]]
    talk = build_talk(
        clips,
        ["a", "b"],
        [[("x",)], [("y",)]],
        [Turn(0, 0.5), Turn(1, 3.0)],
        1.5,
    )
    assert talk.duration_s == 3.5
    assert [(s.text, s.keys) for s in talk.sentences] == [("a", [("x",)]), ("b", [("y",)])]
    assert [round(s.start_s, 2) for s in talk.sentences] == [0.5, 3.0]
    assert [round(s.end_s, 2) for s in talk.sentences] == [1.5, 3.5]
    assert not talk.pcm[: RATE // 2].any() and not talk.pcm[int(1.6 * RATE) : 3 * RATE].any()


# --- a step's figures and the decision ---------------------------------------------------------
def test_nearest_rank_keeps_infinity() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0
    assert nearest_rank([1.0] * 19 + [math.inf], 95) == 1.0
    assert nearest_rank([1.0] * 18 + [math.inf] * 2, 95) == math.inf


def test_untranslated_sentences_count_as_infinitely_late() -> None:
    fig = lag_figures([1.0, 2.0, 3.0, None, WITHIN_S + 1])
    assert fig["sentences"] == 5 and fig["untranslated"] == 2
    assert fig["p50_s"] == 3.0 and fig["p95_s"] is None and fig["max_s"] is None
    assert fig["mean_translated_s"] == 2.0
    clean = lag_figures([1.0, 2.0, 2.4])
    assert clean == {
        "sentences": 3,
        "untranslated": 0,
        "p50_s": 2.0,
        "p95_s": 2.4,
        "max_s": 2.4,
        "mean_translated_s": 1.8,
    }


def test_each_mode_is_judged_by_its_own_target() -> None:
    assert TARGETS == {
        "consecutive": {"p95_s": 2.5},
        "simultaneous": {"p50_s": 2.5, "max_s": 4.0},
    }
    fig = {"sentences": 10, "p50_s": 2.0, "p95_s": 3.0, "max_s": 3.5}
    assert not step_ok("consecutive", fig) and step_ok("simultaneous", fig)
    fig = {"sentences": 10, "p50_s": 2.0, "p95_s": 2.4, "max_s": 4.5}
    assert step_ok("consecutive", fig) and not step_ok("simultaneous", fig)
    assert not step_ok("consecutive", {"sentences": 10, "p95_s": None})  # past WITHIN_S
    assert not step_ok("simultaneous", {"sentences": 0, "p50_s": None, "max_s": None})


def test_capacity_is_the_last_of_the_unbroken_passes() -> None:
    def s(n: int, ok: bool) -> dict:
        return {"calls": n, "ok": ok}

    assert capacity([]) == 0
    assert capacity([s(1, False), s(2, True)]) == 0
    assert capacity([s(2, True), s(1, True), s(3, False)]) == 2
    assert capacity([s(1, True), s(2, False), s(3, True)]) == 1  # a pass above a miss: noise
    assert capacity([s(1, True), s(2, True), s(4, True)]) == 4


def test_queue_wait_is_the_difference_of_two_snapshots() -> None:
    def snap(count: int, sum_ms: float, le: list[int], superseded: int) -> dict:
        bounds = ("5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000")
        return {
            "wait_ms": {
                "final": {
                    "count": count,
                    "sum_ms": sum_ms,
                    "le_ms": dict(zip(bounds, le, strict=True)),
                },
                "partial": {"count": 0, "sum_ms": 0.0, "le_ms": dict.fromkeys(bounds, 0)},
            },
            "superseded": superseded,
        }

    before = snap(10, 100.0, [10] * 10, 1)
    # 20 more finals: 10 within 5 ms, 8 more within 250 ms, the last 2 within 1 s.
    after = snap(30, 2100.0, [20, 20, 20, 20, 20, 28, 28, 30, 30, 30], 4)
    got = queue_wait(before, after)
    assert got["final"] == {"jobs": 20, "mean_ms": 100.0, "p95_le_ms": 1000.0}
    assert got["partial"] == {"jobs": 0, "mean_ms": None, "p95_le_ms": None}
    assert got["superseded"] == 3
    assert queue_wait(before, None) == {}
    assert queue_wait(None, after)["final"]["jobs"] == 30


# --- a tiny run end to end ---------------------------------------------------------------------
@pytest.mark.e2e  # a whole command run
def test_capacity_command_writes_a_consistent_report(tmp_path: Path) -> None:
    out = tmp_path / "capacity"
    exe = Path(sys.executable).with_name("dragoman")
    proc = subprocess.run(
        [
            str(exe),
            "bench",
            "capacity",
            "--provider",
            "local",
            "--steps",
            "1",
            "--modes",
            "consecutive",
            "--talk-s",
            "9",
            "--sentences",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((out / "capacity.json").read_text())
    assert list(rep["modes"]) == ["consecutive"]
    mode = rep["modes"]["consecutive"]
    [step] = mode["steps"]
    assert step["calls"] == 1 and step["mode"] == "consecutive" and not step.get("error")
    assert step["interpretation_in_force"] == ["consecutive"]
    assert step["sentences"] >= 1 and 0 <= step["untranslated"] <= step["sentences"]
    assert step["ok"] == step_ok("consecutive", step)
    assert mode["capacity_calls"] == capacity(mode["steps"])
    assert mode["capacity_per_core"] == round(mode["capacity_calls"] / rep["cores"], 2)
    assert step["node_cores"] > 0 and step["inference_cores"] > 0
    assert step["queue_wait"]["final"]["jobs"] >= 1  # the finals went through the lane
    assert (out / "capacity.png").stat().st_size > 10_000
    assert "local capacity" in proc.stdout and "consecutive N=1" in proc.stdout
