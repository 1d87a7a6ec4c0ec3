"""`dragoman bench soak`: the pure parts (schedules from a seed, the slope fit, verdicts on
made-up samples that must fail), and a short soak as the suite's leak check: churn with one
fault of each kind against a real serve, whose verdict must pass."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dragoman.bench.soak import CallRecord, SoakParams, verdicts
from dragoman.bench.soak_plan import (
    BEHAVIOURS,
    FAULT_KINDS,
    HOLD_S,
    Quiescent,
    bucket_p95,
    call_schedule,
    calls_lost_with_workers,
    drift_verdict,
    failed,
    fault_schedule,
    leak_verdicts,
    reasons_verdict,
    refusal_verdict,
    rss_slope_verdict,
    slope_fit,
    traceback_verdict,
)

# --- schedules --------------------------------------------------------------------------


def test_call_schedule_is_determined_by_its_seed() -> None:
    a = call_schedule(7, 600, 2.0, 6.0, 0.6)
    assert a == call_schedule(7, 600, 2.0, 6.0, 0.6)
    assert a != call_schedule(8, 600, 2.0, 6.0, 0.6)
    # ~rate × span callers, in time order, inside the span, durations clipped to [1, 60].
    assert 1000 < len(a) < 1400
    times = [c.at_s for c in a]
    assert times == sorted(times) and times[0] > 0 and times[-1] < 600
    assert all(1.0 <= c.duration_s <= 60.0 for c in a)
    durations = sorted(c.duration_s for c in a)
    assert 5.0 < durations[len(durations) // 2] < 7.0  # the median asked for
    counts = Counter(c.behaviour for c in a)
    assert set(counts) == set(BEHAVIOURS)
    assert counts["polite"] > counts["vanish"] > 0


def test_call_schedule_follows_the_mix_and_refuses_unknown_behaviours() -> None:
    only = call_schedule(1, 100, 1.0, 5.0, 0.5, mix={"no_ice": 1.0})
    assert only and {c.behaviour for c in only} == {"no_ice"}
    with pytest.raises(ValueError, match="unknown behaviours"):
        call_schedule(1, 100, 1.0, 5.0, 0.5, mix={"teleport": 1.0})


def test_fault_schedule_spreads_each_kind_over_the_span() -> None:
    f = fault_schedule(3, 60, 660, 2)
    assert f == fault_schedule(3, 60, 660, 2)
    assert [x.kind for x in f] != [x.kind for x in fault_schedule(4, 60, 660, 2)]
    assert Counter(x.kind for x in f) == dict.fromkeys(FAULT_KINDS, 2)
    times = [x.at_s for x in f]
    assert times == sorted(times) and times[0] >= 60 and times[-1] <= 660
    slot = 600 / len(f)
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= slot / 2 - 1e-6
    for x in f:
        lo, hi = HOLD_S[x.kind]
        assert lo <= x.hold_s <= hi
    with pytest.raises(ValueError, match="unknown fault kinds"):
        fault_schedule(1, 0, 10, 1, ("power_cut",))
    fleet = fault_schedule(1, 0, 100, 1, ("redis_restart", "worker_kill", "worker_drain"))
    assert sorted(x.kind for x in fleet) == ["redis_restart", "worker_drain", "worker_kill"]


# --- slope and verdicts -----------------------------------------------------------------


def test_slope_fit_recovers_a_line_through_noise() -> None:
    xs = [float(i) for i in range(100)]
    ys = [3.0 + 0.25 * x + (0.5 if i % 2 else -0.5) for i, x in enumerate(xs)]
    fit = slope_fit(xs, ys)
    assert abs(fit.slope - 0.25) < 0.01 and abs(fit.intercept - 3.0) < 0.5 and fit.n == 100
    with pytest.raises(ValueError):
        slope_fit([1.0, 1.0], [2.0, 3.0])


def test_rss_slope_fails_a_leak_passes_a_flat_line_and_judges_nothing_on_few_calls() -> None:
    calls = [float(c) for c in range(0, 1001, 10)]
    # 50 KB per call, i.e. 50 MB per 1,000 calls, after a warm-up jump: a leak.
    leak = [200 + (20 if c > 50 else 0) + 0.05 * c for c in calls]
    v = rss_slope_verdict("serve", calls, leak, 20.0, 200)
    assert v.ok is False and 45 < v.value < 55
    # The warm-up jump alone (first 20 % of calls) is not a slope.
    flat = [200 + (20 if c > 50 else 0) + (0.3 if c % 20 else -0.3) for c in calls]
    assert rss_slope_verdict("serve", calls, flat, 20.0, 200).ok is True
    few = rss_slope_verdict("serve", calls[:10], leak[:10], 20.0, 200)
    assert few.ok is None and "not judged" in few.detail


def _rest(**kw: object) -> Quiescent:
    base = dict(
        active_calls=0,
        idle_agents=4,
        starting_agents=0,
        agent_processes=4,
        zombies=0,
        janus_handles=4,
        janus_sessions=1,
        fleet_active_calls=0,
        free_slots=24,
        capacity=24,
        fds={"serve": 100, "janus": 50},
    )
    base.update(kw)
    return Quiescent(**base)  # type: ignore[arg-type]


def test_leak_verdicts_pass_a_clean_node_and_name_each_leak() -> None:
    assert not failed(leak_verdicts(_rest(), _rest(fds={"serve": 105, "janus": 50}), 8))
    leaky = _rest(
        agent_processes=5,
        zombies=1,
        janus_handles=6,
        janus_sessions=2,
        fleet_active_calls=1,
        free_slots=23,
        fds={"serve": 140, "janus": 50},
    )
    bad = {v.name: v.value for v in failed(leak_verdicts(_rest(), leaky, 8))}
    assert bad == {
        "agent_processes": 1,
        "zombies": 1,
        "janus_handles": 2,
        "janus_sessions": 2,
        "registry_slots": 1,
        "fds:serve": 40,
    }
    # A Janus that does not answer its Admin API is a failure, not a pass.
    assert "janus_handles" in {
        v.name for v in failed(leak_verdicts(_rest(), _rest(janus_handles=None), 8))
    }


def test_a_fleet_holds_one_janus_session_per_worker_and_redis_fds_are_not_judged() -> None:
    fleet = {"nodes": 2, "janus_sessions": 2, "fds": {"redis": 10, "w1.janus": 14}}
    after = {**fleet, "fds": {"redis": 30, "w1.janus": 14}}
    vs = leak_verdicts(_rest(**fleet), _rest(**after), 8)
    assert not failed(vs)
    assert {v.name: v.ok for v in vs}["fds:redis"] is None  # reported, not judged
    assert "janus_sessions" in {
        v.name
        for v in failed(leak_verdicts(_rest(**fleet), _rest(**{**after, "janus_sessions": 3}), 8))
    }


def _fleet_run(**fleet: object) -> dict[str, object]:
    """A clean two-worker run's record, with ``fleet`` overriding what the faults left."""
    calls = [
        CallRecord(i, "polite", float(i), pressed_s=float(i), status=201, node_id=node)
        for i, node in enumerate(["w1"] * 7 + ["w2"] * 3)
    ]
    rest = _rest(nodes=2, janus_sessions=2)
    return {
        "calls": calls,
        "faults": [],
        "samples": [],
        "before": rest,
        "after": rest,
        # 10 placed, 3 of them on w2, killed mid-call: its own counts died with it (its last
        # report saw 2 calls, both running; the third was answered after that report).
        "health_after": {"outcomes": {"hangup": 7}, "calls_total": 7},
        "registry_keys": {
            "call_records": 0,
            "node_call_entries": 0,
            "live_holds": 0,
            "stale_hold_entries_not_counted": 5,
        },
        "fleet": {
            "orphans": [],
            "kills": [{"worker": "w2", "killed_s": 9.5, "calls_total": 2, "active_calls": 2}],
            "restarts": {"w2": [12.0]},
            "redis_restarts": 1,
            **fleet,
        },
    }


def test_fleet_verdicts_name_orphans_live_registry_keys_and_count_calls_lost_with_a_worker() -> (
    None
):
    p = SoakParams(fleet=2, fault_kinds=())
    ok = {v.name: v.ok for v in verdicts(_fleet_run(), p, "")}
    assert ok["end_reasons"] and ok["orphans"] and ok["registry_keys"]
    one_short = [{"worker": "w2", "killed_s": 9.5, "calls_total": 2, "active_calls": 1}]
    bad = {v.name for v in failed(verdicts(_fleet_run(kills=one_short), p, ""))}
    assert "end_reasons" in bad  # one placed call has no end anywhere
    orphan = [{"worker": "w1", "pid": 42, "cmd": "janus"}]
    assert "orphans" in {v.name for v in failed(verdicts(_fleet_run(orphans=orphan), p, ""))}
    run = _fleet_run()
    run["registry_keys"] = {**run["registry_keys"], "live_holds": 1}  # type: ignore[dict-item]
    assert "registry_keys" in {v.name for v in failed(verdicts(run, p, ""))}


def test_calls_lost_with_a_killed_worker_include_those_answered_after_its_last_report() -> None:
    # w1 ran from its restart at 100 s to its kill at 200 s; its last report (just before the
    # kill) counted 3 calls placed, 1 running. 4 calls were answered by it in that life: the
    # 4th after the report. A call it answered before 100 s (its previous life), one after its
    # restart at 205 s (the new process) and w2's calls are not its.
    answers = [("w1", 50.0), ("w1", 110.0), ("w1", 150.0), ("w1", 190.0), ("w1", 199.9)]
    answers += [("w1", 206.0), ("w2", 150.0)]
    kills = [{"worker": "w1", "killed_s": 200.0, "calls_total": 3, "active_calls": 1}]
    restarts = {"w1": [100.0, 205.0]}
    assert calls_lost_with_workers(answers, kills, restarts) == 1 + 1
    # Its report already counted every call it answered: only the running ones died.
    assert calls_lost_with_workers(answers[:4], kills, restarts) == 1
    # The first life of a worker starts at the run's start.
    assert calls_lost_with_workers([("w1", 10.0)], [{**kills[0], "calls_total": 0}], {}) == 2


def test_every_call_needs_an_end_the_page_can_show() -> None:
    known = {"hangup", "no_media", "agent_lost"}
    ok = reasons_verdict({"hangup": 8, "no_media": 2, "rejected": 3}, 10, known, {"rejected"})
    assert ok.ok is True
    assert reasons_verdict({"hangup": 8}, 10, known, {"rejected"}).ok is False  # 2 never ended
    odd = reasons_verdict({"hangup": 9, "kaboom": 1}, 10, known, {"rejected"})
    assert odd.ok is False and "kaboom" in odd.detail


def test_a_refusal_counts_only_outside_faults_and_below_capacity() -> None:
    windows = [(10.0, 20.0)]
    samples = [(t, t >= 40) for t in range(0, 60, 2)]  # full from 40 s on
    inside = [(15.0, "no_agent", False), (41.0, "no_agent", False)]
    assert refusal_verdict(inside, windows, samples).ok
    bad = refusal_verdict([(15.0, "no_agent", False), (25.0, "no_agent", False)], windows, samples)
    assert bad.ok is False and bad.value == 1
    # Between two samples that saw a free slot, the registry itself said full: not a fault.
    assert refusal_verdict([(25.0, "no_agent", True)], windows, samples).ok


def test_connect_drift_in_fault_free_buckets() -> None:
    def points(p95_by_minute: list[float]) -> list[tuple[float, float]]:
        return [(60 * m + i, v) for m, v in enumerate(p95_by_minute) for i in range(10)]

    steady = bucket_p95(points([300, 320, 310, 900, 330]), 60, [(185, 230)])
    assert [b["fault_free"] for b in steady] == [True, True, True, False, True]
    assert drift_verdict(steady, 2.0, 300).ok is True  # the slow minute had a fault
    drifted = bucket_p95(points([300, 320, 310, 900, 1200]), 60, [(185, 230)])
    assert drift_verdict(drifted, 2.0, 300).ok is False
    assert drift_verdict(steady[:1], 2.0, 300).ok is None
    # Two fault-free buckets: the second against the first.
    assert drift_verdict(bucket_p95(points([300, 1000]), 60, []), 2.0, 300).ok is False
    assert drift_verdict(bucket_p95(points([300, 500]), 60, []), 2.0, 300).ok is True
    # One slow minute among many (a shared box) is not drift; the last minutes all slow is.
    many = [300.0] * 12
    spike = many[:6] + [5000.0] + many[7:]
    assert drift_verdict(bucket_p95(points(spike), 60, []), 2.0, 300).ok is True
    assert drift_verdict(bucket_p95(points(spike), 60, []), 2.0, 300).value["worst_ms"] == 5000
    creeping = many[:8] + [900.0, 950.0, 1000.0, 1100.0]
    assert drift_verdict(bucket_p95(points(creeping), 60, []), 2.0, 300).ok is False


def test_a_traceback_in_the_log_fails() -> None:
    assert traceback_verdict("INFO all fine\n").ok is True
    v = traceback_verdict("x\nTraceback (most recent call last):\n  File ...\nKeyError: 1\n")
    assert v.ok is False and "KeyError" in v.value


# --- the short soak: a leak check -------------------------------------------------------


@pytest.mark.e2e  # a whole command run
@pytest.mark.timeout(600)  # ≈ 3.5 min: 180 s of churn, the serve's start and the drain
def test_a_short_soak_with_every_fault_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    exe = Path(sys.executable).with_name("dragoman")
    proc = subprocess.run(
        [str(exe), "bench", "soak", "--duration-s", "180", "--rate", "2.0"]
        + ["--median-call-s", "5", "--faults-per-kind", "1", "--seed", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=570,
    )
    rep = json.loads((out / "soak.json").read_text())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert rep["passed"] is True
    verdicts = {v["name"]: v for v in rep["verdicts"]}
    # Each fault kind really happened, and the leak verdicts were judged, not skipped.
    assert verdicts["faults_injected"]["value"] == dict.fromkeys(FAULT_KINDS, 1)
    for name in ("agent_processes", "janus_handles", "janus_sessions", "registry_slots"):
        assert verdicts[name]["ok"] is True, verdicts[name]
    assert rep["calls_placed"] >= 200
    # Enough calls after the warm-up that every process' memory slope was judged.
    slopes = [v for name, v in verdicts.items() if name.startswith("rss_slope:")]
    assert slopes and all(v["ok"] is True for v in slopes), slopes
    # Each behaviour reached the node, and the control channel came back after its drop.
    assert rep["control_reconnects"]["ok"] >= 1 and rep["control_reconnects"]["failed"] == 0
    assert (out / "soak.png").stat().st_size > 10_000


class _FlakyNode:
    """A node whose first health read fails (as the provider fake's switch timed out once on
    the loaded box); janus_kill finds no Janus pid, so nothing is really signalled."""

    def __init__(self) -> None:
        self.reads = 0

    async def health(self) -> dict[str, object]:
        self.reads += 1
        if self.reads == 1:
            raise RuntimeError("health read timed out")
        return {"status": "ok"}

    def fault_pid(self, kind: str, h: dict[str, object], rng: object) -> int | None:
        return None

    def whole(self, h: dict[str, object]) -> bool:
        return True


def test_one_failed_injection_does_not_end_the_fault_schedule() -> None:
    import asyncio
    import time

    from dragoman.bench.soak import run_faults
    from dragoman.bench.soak_plan import FaultPlan

    plans = [FaultPlan(0.0, "janus_kill", 0.0), FaultPlan(0.0, "janus_kill", 0.0)]
    said: list[str] = []
    node = _FlakyNode()
    records = asyncio.run(
        run_faults(node, "http://fake", plans, 1, time.monotonic(), said.append)  # type: ignore[arg-type]
    )
    assert [r.error is not None for r in records] == [True, False]
    assert records[1].injected_s is not None and records[1].window is not None
    assert "injection failed" in said[0]


def test_a_signal_ends_the_churn_early_and_a_second_one_quits() -> None:
    import asyncio
    import contextlib
    import os
    import signal

    from dragoman.bench.soak import _stop_early_on_signal

    async def run() -> None:
        callers = asyncio.ensure_future(asyncio.sleep(30))
        faults = asyncio.create_task(asyncio.sleep(30))
        said: list[str] = []
        interrupted = _stop_early_on_signal(callers, faults, said.append)
        os.kill(os.getpid(), signal.SIGINT)
        with contextlib.suppress(asyncio.CancelledError):
            await callers
        assert interrupted.is_set() and callers.cancelled()
        with contextlib.suppress(asyncio.CancelledError):
            await faults
        assert faults.cancelled() and "interrupted" in said[0]
        os.kill(os.getpid(), signal.SIGTERM)  # the second: quit now
        await asyncio.sleep(1)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run())


def test_pooled_sockets_counts_this_process_connections_to_a_port_from_either_end() -> None:
    import os
    import socket

    from dragoman.bench.soak_observe import pooled_sockets

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [server.accept()[0] for _ in clients]
    try:
        # 3 outbound (remote port) + 3 accepted (local port); the listener has no peer yet
        # but its local port matches too.
        assert pooled_sockets(os.getpid(), frozenset({port})) == 7
        assert pooled_sockets(os.getpid(), frozenset({1})) == 0
    finally:
        for s in clients + accepted + [server]:
            s.close()
