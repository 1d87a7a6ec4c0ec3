"""``dragoman simulate``: short runs whose reports must be complete and add up; the
calibration it loads; direct-mode overflow; packing and Kubernetes' scale-down choice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dragoman import cli
from dragoman.fleet.node_state import NodeState
from dragoman.sim import calibrate, report
from dragoman.sim.engine import SimParams, Simulation, simulate
from dragoman.sim.hpa import Hpa, HpaBehavior
from dragoman.sim.node import GONE
from dragoman.sim.run import sweep

ROOT = Path(__file__).resolve().parent.parent

# A surge scaled down to 250 concurrent calls on 8-slot nodes: the same shape in ~1 s.
SMALL = SimParams(
    trace="surge", scale=0.05, slots_per_node=8, floor_slots=200, seed=3, direct=False
)


def _run(params: SimParams) -> tuple[Simulation, dict]:
    sim, end, wall = simulate(params, on_progress=lambda _line: None)
    return sim, report.build(sim, end, wall)


def _check_adds_up(sim: Simulation, rep: dict) -> None:
    calls, um = rep["calls"], rep["user_minutes"]
    assert calls["arrivals"] == sim.trace.calls
    assert calls["served"] + calls["refused"] == calls["arrivals"]
    assert calls["served_agent"] + calls["served_direct"] == calls["served"]
    assert um["agent"] + um["direct"] == pytest.approx(um["served"], abs=0.02)
    lost = um["refused"] + um["cut"]
    assert um["served"] + lost == pytest.approx(um["trace"], abs=0.02)
    # Cost is every node-second, from the boot request to removal, times the price.
    end = rep["simulated_s"]
    node_s = sum((n.removed_at if n.removed_at is not None else end) - n.requested_at
                 for n in sim.nodes.values())  # fmt: skip
    # simulated_s is rounded to 0.1 s: up to 0.05 s per node still running at the end.
    running = sum(1 for n in sim.nodes.values() if n.removed_at is None)
    assert rep["nodes"]["node_seconds"] == pytest.approx(node_s, abs=1 + 0.05 * running)
    cost = rep["cost"]
    usd = node_s * cost["usd_per_hour"] / 3600
    assert cost["usd"] == pytest.approx(usd, rel=1e-4, abs=1e-4)  # rounded to 4 decimals
    assert cost["krw"] == pytest.approx(usd * cost["krw_per_usd"], rel=1e-4, abs=0.01)
    per_minute = cost["krw"] / um["served"]
    assert cost["krw_per_user_minute"] == pytest.approx(per_minute, rel=1e-3, abs=1e-4)
    if um["agent"]:
        per_agent_minute = cost["krw"] / um["agent"]
        assert cost["krw_per_agent_minute"] == pytest.approx(per_agent_minute, rel=1e-3, abs=1e-4)
    # No node ever held more calls than its slots.
    assert all(n.max_busy <= n.capacity for n in sim.nodes.values())
    assert rep["nodes"]["max_load_fraction"] <= 1.0


def test_report_is_complete_and_adds_up(tmp_path: Path) -> None:
    sim, rep = _run(SMALL)
    for key in ("trace", "params", "connect_ms", "connect_agent_ms", "connect_direct_ms",
                "calls", "user_minutes", "nodes", "capacity", "cost", "targets", "timeline",
                "wall_s"):  # fmt: skip
        assert key in rep
    c = rep["connect_ms"]
    assert 0 < c["p50"] <= c["p95"] <= c["p99"] <= c["max"]
    assert rep["calls"]["arrivals"] > 300 and rep["calls"]["refused"] == 0
    assert rep["calls"]["served_direct"] == 0  # no provider key: no overflow
    _check_adds_up(sim, rep)
    # Every caller of the trace was served for exactly their minutes.
    assert rep["user_minutes"]["served"] == pytest.approx(sim.trace.user_minutes, abs=0.01)
    busy = rep["capacity"]["busy_slot_seconds"]
    assert busy >= rep["user_minutes"]["served"] * 60  # + the seconds to answer
    assert 0 < rep["capacity"]["idle_fraction"] < 1
    assert rep["nodes"]["peak_paid"] <= SMALL.max_nodes
    assert rep["nodes"]["peak_warm"] * 8 > rep["trace"]["peak_concurrent"]
    assert rep["targets"]["krw_per_user_minute"] == report.TARGET_KRW

    paths = report.write(rep, sim.connect_s[~np.isnan(sim.connect_s)] * 1000, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)
    assert json.loads((tmp_path / "report.json").read_text())["calls"] == rep["calls"]


# --- direct-mode overflow ---------------------------------------------------------------------


def test_direct_overflow_serves_what_no_node_takes_and_is_accounted() -> None:
    tight = replace(SMALL, floor_slots=0, max_nodes=4)
    sim, rep = _run(replace(tight, direct=True))
    calls, um = rep["calls"], rep["user_minutes"]
    assert calls["refused"] == 0 and calls["retried"] == 0  # overflow, never a 503 retry
    assert 0 < calls["served_direct"] < calls["arrivals"]
    assert calls["direct_share"] == pytest.approx(
        calls["served_direct"] / calls["arrivals"], abs=1e-4
    )
    assert um["direct_share"] == pytest.approx(um["direct"] / um["served"], abs=1e-4)
    # The direct calls are the ones the trace says, for their whole length, on no node.
    assert um["direct"] == pytest.approx(sim.trace.durations[sim.direct].sum() / 60, abs=0.01)
    assert all(sim.call_node[i] is None for i in np.flatnonzero(sim.direct))
    assert rep["trace"]["peak_direct"] > 0
    assert rep["targets"]["krw_per_user_minute"] == report.TARGET_KRW_DIRECT
    _check_adds_up(sim, rep)
    # A direct call's connect: the press plus the modelled direct set-up, no agent wait.
    d = sim.connect_s[sim.direct]
    assert np.all(d >= sim.direct_extra_s)
    # Without a provider key the same fleet refuses calls after the page's retries.
    sim2, rep2 = _run(replace(tight, direct=False))
    assert rep2["calls"]["served_direct"] == 0
    assert rep2["calls"]["refused"] > 0 and rep2["calls"]["retried"] > 0
    assert rep2["calls"]["requests"] > rep2["calls"]["arrivals"]  # retries are requests too
    _check_adds_up(sim2, rep2)


def test_overflow_lowers_the_policys_floor() -> None:
    with_key = Simulation(replace(SMALL, direct=True, floor_slots=None), _trace(), _cal())
    without = Simulation(replace(SMALL, direct=False, floor_slots=None), _trace(), _cal())
    assert with_key.policy.floor_slots < without.policy.floor_slots
    assert with_key.policy.overflow_available and not without.policy.overflow_available


def _trace():  # noqa: ANN202
    from dragoman.sim import traces

    return traces.load("surge", traces.Sessions(), 1, 0.01)


def _cal() -> calibrate.Calibration:
    return calibrate.load(uncalibrated=True)


# --- packing and scale-down ------------------------------------------------------------------


def test_packing_leaves_nodes_empty_and_scale_down_removes_only_those() -> None:
    sim, rep = _run(replace(SMALL, scaler="direct"))
    assert rep["nodes"]["drained"] > 0 and rep["nodes"]["drained_with_calls"] == 0
    assert rep["calls"]["cut_by_scale_down"] == 0
    gone = [n for n in sim.nodes.values() if n.state == GONE]
    assert gone and all(n.busy == 0 and n.removed_at is not None for n in gone)
    assert not any(n.state == NodeState.DRAINING for n in sim.nodes.values())
    left = sum(1 for n in sim.nodes.values() if n.state != GONE)
    assert 200 // 8 <= left < rep["nodes"]["peak_paid"]
    # Packing: while calls run, some READY nodes stay empty (drainable).
    assert rep["nodes"]["mean_empty_ready"] > 1


def test_without_the_deletion_cost_kubernetes_removes_busy_pods_and_cuts_calls() -> None:
    params = replace(SMALL, scaler="direct", scale_down="random", drain_timeout_s=30.0)
    sim, rep = _run(params)
    assert rep["nodes"]["drained_with_calls"] > 0
    assert rep["calls"]["cut_by_scale_down"] > 0
    assert rep["user_minutes"]["cut"] > 0
    cut = np.flatnonzero(sim.cut)
    assert np.all(sim.served_s[cut] < sim.trace.durations[cut])
    _check_adds_up(sim, rep)


def test_wait_or_503_when_no_agent_process_is_ready() -> None:
    # One pre-forked process per node: back-to-back calls find the next still forking.
    base = replace(SMALL, idle_target=1)
    _, waited = _run(replace(base, no_idle="wait"))
    _, refused = _run(replace(base, no_idle="retry"))
    assert waited["calls"]["waited_for_agent"] > 0
    assert refused["calls"]["waited_for_agent"] == 0
    assert refused["calls"]["retried"] > waited["calls"]["retried"]


# --- calibration -----------------------------------------------------------------------------


def _rows(ms: list[float], server: list[float] | None = None) -> list[dict]:
    server = server or [m / 10 for m in ms]
    return [
        {"status": 201, "first_packet_ms": m, "server_ms": s}
        for m, s in zip(ms, server, strict=False)
    ]


def _write_calibration(d: Path) -> Path:
    d.mkdir()
    runs = [
        {"burst": 1, "background_calls": 0, "per_call": _rows([50.0] * 10),
         "agent_ready_ms": [100.0, 300.0]},
        {"burst": 10, "background_calls": 0, "per_call": _rows([200.0] * 10, [20.0] * 10)},
        {"burst": 20, "background_calls": 0, "per_call": _rows([400.0] * 10)},
        {"burst": 10, "background_calls": 15, "per_call": _rows([300.0] * 10, [60.0] * 10),
         "agent_ready_ms": [500.0]},
    ]  # fmt: skip
    (d / "connect.json").write_text(
        json.dumps({"server_cpus": 1, "idle_agent_mb": 16.0, "runs": runs})
    )
    (d / "direct.json").write_text(
        json.dumps({"per_call": [{"connected_ms": 600.0}, {"connected_ms": None}]})
    )
    (d / "density.json").write_text(
        json.dumps({"calls_per_core": 30.0, "cpu_per_call_pct": 2.9, "call_uss_mb": 21.0})
    )
    return d


def test_calibration_is_loaded_from_bench_calibrate_outputs(tmp_path: Path) -> None:
    cal = calibrate.load(_write_calibration(tmp_path / "cal"))
    assert cal.calibrated and len(cal.sources) == 3
    m = cal.connect
    assert m is not None and m.sizes == (1, 10, 20)
    # Interpolated in the handshakes in flight; past the last size, the last slope.
    assert m.quantile(1, 0.5) == pytest.approx(0.05)
    assert m.quantile(15, 0.5) == pytest.approx(0.3)
    assert m.quantile(40, 0.5) == pytest.approx(0.8)
    # Node load: 15 calls on a 30-call core (fill 0.5) tripled the server's own part.
    assert m.fills == (0.0, 0.5) and m.factors == pytest.approx((1.0, 3.0))
    assert m.factor(0.25) == pytest.approx(2.0) and m.factor(0.75) == pytest.approx(4.0)
    rng = np.random.default_rng(0)
    # At fill 0.5 and 10 handshakes: 200 ms + (3 - 1) × the server's 20 ms.
    assert m.draw(rng, 10, 0.5) == pytest.approx(0.24)
    assert sorted(cal.refill_samples_s) == pytest.approx([0.1, 0.3, 0.5])
    assert cal.direct_samples_s == (0.6,)
    assert cal.idle_agent_mb == 16.0 and cal.calls_per_core == 30.0

    sim = Simulation(replace(SMALL, slots_per_node=None, direct=True), _trace(), cal)
    assert sim.slots == 30 * 4  # calls per core × the c7g.xlarge's vCPUs
    assert sim.idle_target == min(120, 1024 // 16)  # the idle memory budget ÷ measured USS
    assert sim.agent_extra_s == pytest.approx(4.5 * 0.05 + 3 * 0.1)
    assert sim.direct_extra_s == pytest.approx(1 * 0.05 + 7 * 0.1)
    summary = cal.summary()
    assert summary["connect"]["burst_sizes"] == [1, 10, 20]
    assert summary["calls_per_core"] == 30.0


def test_simulation_draws_connect_times_from_the_calibration(tmp_path: Path) -> None:
    d = _write_calibration(tmp_path / "cal")
    sim, rep = _run(replace(SMALL, calibrate=str(d), slots_per_node=None, floor_slots=240))
    agent = ~np.isnan(sim.connect_s) & ~sim.direct & (sim.tries == 1) & ~sim.forked_wait
    measured = sim.connect_s[agent] - sim.agent_extra_s
    assert measured.min() >= 0.05 - 1e-9  # a single call's 50 ms, at least
    assert rep["params"]["calibration"]["source"] == str(d)
    assert rep["params"]["slots_per_node"] == 120
    assert rep["handshakes_per_node"]["max"] >= 2
    assert rep["params"]["node_memory"]["instance_gib"] == 8.0


def test_a_single_bench_file_still_calibrates(tmp_path: Path) -> None:
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
    assert sim.cal.refill_samples_s == (0.05,)
    first_try = ~np.isnan(sim.connect_s) & (sim.tries == 1) & ~sim.forked_wait
    measured = sim.connect_s[first_try] - sim.agent_extra_s
    assert measured.min() >= 0.1 - 1e-9 and measured.max() <= 0.3 + 1e-9


def test_the_committed_calibration_is_the_default() -> None:
    committed = ROOT / "results" / "calibration"
    assert (committed / "connect.json").is_file() and (committed / "density.json").is_file()
    cal = calibrate.load()
    assert cal.calibrated and cal.connect is not None and cal.calls_per_core
    assert cal.connect.sizes[0] == 1 and len(cal.connect.sizes) >= 3
    assert len(cal.connect.fills) >= 2, "a burst on a loaded node was measured"
    assert cal.refill_samples_s and cal.direct_samples_s and cal.idle_agent_mb
    for name in ("connect.json", "direct.json", "density.json"):
        assert (committed / name).stat().st_size < 100_000
    # Uncalibrated is possible, and says so.
    assert not calibrate.load(uncalibrated=True).calibrated


# --- CLI, sweep, HPA -----------------------------------------------------------------------


def test_cli_runs_a_csv_trace(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0, 60, 120))
    durations = rng.uniform(10, 90, 120)
    csv = tmp_path / "trace.csv"
    csv.write_text("arrival_s,duration_s\n" + "".join(
        f"{a:.3f},{d:.3f}\n" for a, d in zip(arrivals, durations, strict=True)))  # fmt: skip
    out = tmp_path / "out"
    argv = ["simulate", "--trace", str(csv), "--slots", "4", "--floor", "8", "--out", str(out)]
    assert cli.main(argv + ["--interval", "5", "--scaler", "direct", "--no-direct"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["trace"]["calls"] == 120
    assert rep["params"]["direct"] is False
    assert rep["user_minutes"]["trace"] == pytest.approx(durations.sum() / 60, abs=0.01)
    assert (out / "demand_vs_capacity.png").exists() and (out / "connect_cdf.png").exists()


@pytest.mark.e2e  # a whole command run
def test_sweep_writes_the_tradeoff_with_the_direct_share(tmp_path: Path) -> None:
    params = replace(SMALL, scale=0.01, slots_per_node=4, direct=True)
    result = sweep(params, [0, 40], tmp_path)
    assert [p["floor_slots"] for p in result["points"]] == [0, 40]
    for p in result["points"]:
        assert 0 <= p["surge_direct_calls"] <= 1 and 0 <= p["day_direct_minutes"] <= 1
    # The surge overflows at both floors (4-slot nodes cannot boot fast enough), and a
    # smaller floor sends strictly more of it to the provider: 0 >= 0 would pass unnoticed.
    low, high = result["points"]
    for share in ("surge_direct_calls", "surge_direct_minutes"):
        assert low[share] > high[share] > 0, (share, low[share], high[share])
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


# --- self-hosted AI (issue 21, part 4) -----------------------------------------------------

# The day trace scaled to ~150 concurrent: both AI modes on the same calls in a few seconds.
DAY_SMALL = SimParams(trace="day", scale=0.05, seed=5)


@pytest.mark.e2e  # a whole simulation run
def test_local_profile_admits_local_calls_only_up_to_its_local_capacity() -> None:
    local = replace(DAY_SMALL, profile="local")
    assert local.direct is False  # self-hosted: no provider key, no overflow
    sim, rep = _run(local)
    _check_adds_up(sim, rep)
    machine = local.machine()
    assert machine.ai == "local" and machine.local is not None
    cap = machine.local.capacity(machine.vcpus)
    assert sim.local_capacity == cap == rep["params"]["local_capacity_per_node"]
    assert cap < sim.media_slots  # Whisper-bound, not media-bound
    assert all(n.local_capacity == cap and n.max_busy <= cap for n in sim.nodes.values())
    assert rep["calls"]["served_direct"] == 0
    assert rep["calls"]["served"] + rep["calls"]["refused"] == rep["calls"]["arrivals"]
    assert rep["cost"]["ai"] == "local" and rep["cost"]["ai_fees_included"] is True
    assert rep["params"]["local_ai"]["why"].endswith(f"= {cap} local calls per node")
    # The node's memory: its calls, idle agents and the inference service's models fit.
    mem = rep["params"]["node_memory"]
    assert mem is None or mem["calls_and_idle_agents_gib"] < mem["instance_gib"]
    # A fleet capped at two nodes fills them to their local capacity, media slots unused,
    # and refuses the rest (no overflow); quiet hours may drain one and bring up another.
    sim, rep = _run(replace(local, max_nodes=2, floor_slots=0))
    _check_adds_up(sim, rep)
    assert rep["nodes"]["peak_paid"] <= 2
    assert max(n.max_busy for n in sim.nodes.values()) == cap
    assert all(n.max_busy <= cap for n in sim.nodes.values())
    assert rep["calls"]["refused"] > 0


@pytest.mark.e2e  # a whole simulation run
def test_local_ai_costs_more_per_user_minute_than_cloud_on_the_same_trace() -> None:
    _, cloud = _run(DAY_SMALL)
    local_sim, local = _run(replace(DAY_SMALL, profile="local"))
    assert cloud["trace"]["calls"] == local["trace"]["calls"]  # the same calls
    assert cloud["cost"]["ai"] == "cloud" and cloud["cost"]["ai_fees_included"] is False
    assert local["cost"]["krw_per_user_minute"] >= cloud["cost"]["krw_per_user_minute"]
    # More talkers per vCPU: more calls per node, never more node-hours at the same floor.
    denser_sim, denser = _run(replace(DAY_SMALL, profile="local", local_per_vcpu=3.0))
    assert denser_sim.local_capacity > local_sim.local_capacity
    assert denser["nodes"]["node_seconds"] <= local["nodes"]["node_seconds"]


@pytest.mark.e2e  # a whole command run
def test_cli_compare_prints_one_table_of_both_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--trace", "day", "--scale", "0.02", "--seed", "2", "--compare"]
    assert cli.main(argv + ["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for word in ("KRW/user-min", "node-hours", "p99 connect", "refused", "c7g-warm-pool"):
        assert word in printed
    assert "c7i-4xlarge-local" in printed and "talkers/vCPU" in printed  # its assumptions
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["AI"].split()[0] for r in rows] == ["cloud", "local"]
    assert all(set(r) == set(report.COMPARE_COLUMNS) for r in rows)
    assert float(rows[1]["KRW/user-min"]) >= float(rows[0]["KRW/user-min"])
