"""``dragoman simulate``: short runs whose reports must be complete and add up."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dragoman import cli
from dragoman.fleet.registry import DRAINING
from dragoman.sim import report
from dragoman.sim.engine import SimParams, simulate
from dragoman.sim.hpa import Hpa, HpaBehavior
from dragoman.sim.node import GONE
from dragoman.sim.run import sweep

# A surge scaled down to 250 concurrent calls on 8-slot nodes: the same shape in ~1 s.
SMALL = SimParams(trace="surge", scale=0.05, slots_per_node=8, floor_slots=200, seed=3)


def _run(params: SimParams) -> tuple[object, dict]:
    sim, end, wall = simulate(params, on_progress=lambda _line: None)
    return sim, report.build(sim, end, wall)


def test_report_is_complete_and_adds_up(tmp_path: Path) -> None:
    sim, rep = _run(SMALL)
    for key in ("trace", "params", "connect_ms", "calls", "user_minutes", "nodes", "capacity",
                "cost", "targets", "timeline", "wall_s"):  # fmt: skip
        assert key in rep
    for key in ("p50", "p95", "p99", "max"):
        assert rep["connect_ms"][key] is not None
    c = rep["connect_ms"]
    assert 0 < c["p50"] <= c["p95"] <= c["p99"] <= c["max"]

    calls = rep["calls"]
    assert calls["arrivals"] == sim.trace.calls > 300
    assert calls["served"] + calls["refused"] == calls["arrivals"]
    assert calls["refused"] == 0
    # Every caller of the trace was served for exactly their minutes.
    assert rep["user_minutes"]["served"] == pytest.approx(sim.trace.user_minutes, abs=0.01)
    assert rep["user_minutes"]["served"] == rep["user_minutes"]["trace"]

    # Cost is every node-second, from the boot request to removal, times the price.
    end = rep["simulated_s"]
    node_s = sum((n.removed_at if n.removed_at is not None else end) - n.requested_at
                 for n in sim.nodes.values())  # fmt: skip
    assert rep["nodes"]["node_seconds"] == pytest.approx(node_s, abs=1)
    cost = rep["cost"]
    assert cost["usd"] == pytest.approx(node_s * cost["usd_per_hour"] / 3600, rel=1e-4)
    assert cost["krw"] == pytest.approx(cost["usd"] * cost["krw_per_usd"], rel=1e-4)
    krw_per_minute = cost["krw"] / rep["user_minutes"]["served"]
    assert cost["krw_per_user_minute"] == pytest.approx(krw_per_minute, rel=1e-3)
    # Idle capacity: paid slot-seconds not holding a call.
    busy = rep["capacity"]["busy_slot_seconds"]
    assert busy >= rep["user_minutes"]["served"] * 60  # + the seconds to answer
    assert rep["capacity"]["slot_seconds"] == pytest.approx(node_s * 8, rel=1e-6)
    assert 0 < rep["capacity"]["idle_fraction"] < 1

    # No node ever held more calls than its slots.
    assert all(n.max_busy <= n.capacity for n in sim.nodes.values())
    assert rep["nodes"]["max_load_fraction"] <= 1.0
    assert rep["nodes"]["peak_paid"] <= SMALL.max_nodes
    # The fleet grew for the surge.
    assert rep["nodes"]["peak_warm"] * 8 > rep["trace"]["peak_concurrent"]

    paths = report.write(rep, sim.connect_s[~np.isnan(sim.connect_s)] * 1000, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)
    assert json.loads((tmp_path / "report.json").read_text())["calls"] == calls


def test_nodes_are_drained_only_when_empty_and_removed() -> None:
    sim, rep = _run(replace(SMALL, scaler="direct"))
    assert rep["nodes"]["drained"] > 0
    gone = [n for n in sim.nodes.values() if n.state == GONE]
    assert gone and all(n.busy == 0 and n.removed_at is not None for n in gone)
    # Only empty nodes are drained, so none lingers DRAINING with calls.
    assert not any(n.state == DRAINING for n in sim.nodes.values())
    # The fleet shrank after the surge, but never below what the floor asks for.
    left = sum(1 for n in sim.nodes.values() if n.state != GONE)
    assert 200 // 8 <= left < rep["nodes"]["peak_paid"]


def test_refusals_and_retries_add_up_when_the_fleet_is_too_small() -> None:
    sim, rep = _run(replace(SMALL, floor_slots=0, max_nodes=3))
    calls = rep["calls"]
    assert calls["refused"] > 0 and calls["retried"] > 0
    assert calls["served"] + calls["refused"] == calls["arrivals"]
    assert calls["requests"] > calls["arrivals"]  # retries are requests too
    um = rep["user_minutes"]
    assert um["served"] + um["refused"] == pytest.approx(um["trace"], abs=0.02)
    assert rep["nodes"]["peak_paid"] <= 3
    assert not rep["targets"]["none_refused"]


def test_overflow_wait_or_503_when_no_agent_process_is_ready() -> None:
    # One pre-forked process per node: back-to-back calls find the next still forking.
    base = replace(SMALL, idle_target=1)
    _, waited = _run(replace(base, overflow="wait"))
    _, refused = _run(replace(base, overflow="retry"))
    assert waited["calls"]["waited_for_agent"] > 0
    assert refused["calls"]["waited_for_agent"] == 0
    assert refused["calls"]["retried"] > waited["calls"]["retried"]


def test_calibration_from_a_bench_connect_file(tmp_path: Path) -> None:
    bench = {
        "per_call": [
            {"status": 201, "first_audio_ms": 100.0},
            {"status": 201, "first_audio_ms": 300.0},
            {"status": 503, "first_audio_ms": None},
        ],
        "agent_ready_ms": {"p50": 50.0},
    }
    path = tmp_path / "connect.json"
    path.write_text(json.dumps(bench))
    sim, rep = _run(replace(SMALL, calibrate=str(path)))
    assert rep["params"]["calibration"]["connect_samples"] == 2
    assert sim.cal.refill_s == pytest.approx(0.05)
    first_try = ~np.isnan(sim.connect_s) & (sim.tries == 1) & ~sim.forked_wait
    assert set(np.round(sim.connect_s[first_try], 3)) == {0.1, 0.3}  # exactly the measurements


def test_cli_runs_a_csv_trace(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0, 60, 120))
    durations = rng.uniform(10, 90, 120)
    csv = tmp_path / "trace.csv"
    csv.write_text("arrival_s,duration_s\n" + "".join(
        f"{a:.3f},{d:.3f}\n" for a, d in zip(arrivals, durations, strict=True)))  # fmt: skip
    out = tmp_path / "out"
    argv = ["simulate", "--trace", str(csv), "--slots", "4", "--floor", "8", "--out", str(out)]
    assert cli.main(argv + ["--interval", "5", "--scaler", "direct"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["trace"]["calls"] == 120
    assert rep["user_minutes"]["trace"] == pytest.approx(durations.sum() / 60, abs=0.01)
    assert (out / "demand_vs_capacity.png").exists() and (out / "connect_cdf.png").exists()


def test_sweep_writes_the_tradeoff(tmp_path: Path) -> None:
    params = replace(SMALL, scale=0.01, slots_per_node=4)
    result = sweep(params, [0, 40], tmp_path)
    assert [p["floor_slots"] for p in result["points"]] == [0, 40]
    assert (tmp_path / "cost_vs_p99.png").stat().st_size > 1000
    assert json.loads((tmp_path / "tradeoff.json").read_text())["points"] == result["points"]


def test_hpa_holds_scale_down_and_limits_its_pace() -> None:
    hpa = Hpa(HpaBehavior())
    assert hpa.step(0, 10, 10) == 10
    assert hpa.step(15, 105, 10) == 60  # up by max(100 %, 50 pods) per 15 s
    hpa.applied(15, 50)
    assert hpa.step(30, 105, 60) == 105
    hpa.applied(30, 45)
    assert hpa.step(45, 20, 105) == 105  # down only after 10 min of lower asks
    assert hpa.step(620, 20, 105) == 105
    assert hpa.step(700, 20, 105) == 94  # then 10 % per minute
    hpa.applied(700, -11)
    assert hpa.step(715, 20, 94) == 94
    assert hpa.step(765, 20, 94) == 84
    assert hpa.step(800, 83, 80) == 80  # within the 10 % tolerance: no change
