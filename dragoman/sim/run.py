"""``dragoman simulate``: one trace → report.json + plots; ``--sweep``: the cost/latency curve."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from dragoman.sim import report
from dragoman.sim.engine import SimParams, simulate


def main(params: SimParams, out: Path) -> dict[str, Any]:
    mode = "direct-mode overflow" if params.direct else "no overflow (no provider key)"
    print(
        f"simulate {params.trace}: profile {params.profile}, floor {params.floor} slots, "
        f"scaler {params.scaler}, {mode}",
        flush=True,
    )
    sim, end, wall = simulate(params, on_progress=lambda line: print(line, flush=True))
    rep = report.build(sim, end, wall)
    served = ~np.isnan(sim.connect_s)
    paths = report.write(rep, sim.connect_s[served] * 1000, out)
    report.print_summary(rep)
    print(f"saved {', '.join(str(p) for p in paths)}", flush=True)
    return rep


def _point(job: tuple[SimParams, str]) -> dict[str, Any]:
    params, trace = job
    sim, end, wall = simulate(replace(params, trace=trace), on_progress=lambda _line: None)
    return report.build(sim, end, wall)


def compare(params: SimParams, profiles: list[str], out: Path) -> list[dict[str, Any]]:
    """The same trace under each profile (e.g. cloud vs local AI), one process each: one
    table of peak nodes, node-hours, KRW per user-minute, p99 connect and refusals. A profile's
    own defaults (floor, overflow) apply unless the command set them."""
    jobs = [(replace(params, profile=name), params.trace) for name in profiles]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    print(f"compare {params.trace}: {', '.join(profiles)} on {workers} processes…", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        reps = list(pool.map(_point, jobs))
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(zip(report.COMPARE_COLUMNS, report.compare_row(r), strict=True)) for r in reps]
    summary = {
        "trace": params.trace,
        "rows": rows,
        "reports": [{k: v for k, v in r.items() if k not in ("timeline", "curve")} for r in reps],
    }
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    report.print_comparison(reps)
    print(f"saved {out / 'compare.json'}", flush=True)
    return reps


def sweep(params: SimParams, floors: list[int], out: Path) -> dict[str, Any]:
    """For each buffer floor: the surge's p99 connect and direct share, the day's KRW per
    user-minute and direct share."""
    jobs = [(replace(params, floor_slots=f), t) for f in floors for t in ("surge", "day")]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    print(f"sweep: {len(floors)} floors × (surge, day) on {workers} processes…", flush=True)
    results: dict[tuple[int, str], dict[str, Any]] = {}
    with ProcessPoolExecutor(workers) as pool:
        for (p, trace), rep in zip(jobs, pool.map(_point, jobs), strict=True):
            results[(p.floor, trace)] = rep
            print(
                f"  floor {p.floor:5d} {trace:5s}: p99 {rep['connect_ms']['p99']} ms, "
                f"refused {rep['calls']['refused']}, direct {rep['calls']['direct_share']:.2%}, "
                f"{rep['cost']['krw_per_user_minute']} KRW/user-min ({rep['wall_s']} s)",
                flush=True,
            )
    points = []
    for f in floors:
        s, d = results[(f, "surge")], results[(f, "day")]
        points.append(
            {
                "floor_slots": f,
                "surge_p99_ms": s["connect_ms"]["p99"],
                "surge_max_ms": s["connect_ms"]["max"],
                "surge_refused": s["calls"]["refused"],
                "surge_over_2s": s["calls"]["over_2s"],
                "surge_peak_nodes": s["nodes"]["peak_paid"],
                "surge_direct_calls": s["calls"]["direct_share"],
                "surge_direct_minutes": s["user_minutes"]["direct_share"],
                "day_krw_per_user_minute": d["cost"]["krw_per_user_minute"],
                "day_krw_per_agent_minute": d["cost"]["krw_per_agent_minute"],
                "day_direct_calls": d["calls"]["direct_share"],
                "day_direct_minutes": d["user_minutes"]["direct_share"],
                "day_cut": d["calls"]["cut_by_scale_down"],
                "day_p99_ms": d["connect_ms"]["p99"],
                "day_refused": d["calls"]["refused"],
                "day_idle_fraction": d["capacity"]["idle_fraction"],
                "day_node_hours": round(d["nodes"]["node_seconds"] / 3600, 1),
            }
        )
    ok = [
        pt
        for pt in points
        if pt["surge_p99_ms"] <= report.TARGET_P99_MS
        and pt["surge_refused"] == 0
        and pt["day_krw_per_user_minute"] <= report.target_krw(params.direct)
    ]
    best = min(ok, key=lambda pt: pt["day_krw_per_user_minute"]) if ok else None
    result = {"params": asdict(params), "points": points, "cheapest_meeting_both": best}
    out.mkdir(parents=True, exist_ok=True)
    (out / "tradeoff.json").write_text(json.dumps(result, indent=2))
    from dragoman.sim.plots import cost_vs_p99

    mode = "direct overflow" if params.direct else "no overflow"
    title = f"cost vs surge p99 ({params.profile}, {mode})"
    cost_vs_p99(points, out / "cost_vs_p99.png", title, report.target_krw(params.direct))
    print(f"cheapest floor meeting both targets: {best['floor_slots'] if best else 'none'}")
    print(f"saved {out / 'tradeoff.json'}, {out / 'cost_vs_p99.png'}", flush=True)
    return result
