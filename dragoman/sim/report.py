"""The simulation's report: connect times, refusals, fleet size, idle capacity and cost."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dragoman.bench.stats import summarize
from dragoman.sim.calibrate import (
    AGENT_CALLER_RTTS,
    AGENT_PROVIDER_RTTS,
    DIRECT_CALLER_RTTS,
    DIRECT_PROVIDER_RTTS,
)
from dragoman.sim.engine import SAMPLE_FIELDS, Simulation

TARGET_P99_MS = 2000.0  # surge: p99 connect ≤ 2 s, none refused …
TARGET_KRW_DIRECT = 0.15  # day: ≤ 0.15 KRW per user-minute with direct-mode overflow …
TARGET_KRW = 0.25  # … ≤ 0.25 without (DESIGN.md)
CEILING_KRW_PER_USER_MINUTE = 2.0  # … hard ceiling 2 KRW


def target_krw(direct: bool) -> float:
    return TARGET_KRW_DIRECT if direct else TARGET_KRW


MAX_TIMELINE_POINTS = 1500


def build(sim: Simulation, end_s: float, wall_s: float) -> dict[str, Any]:
    p, trace, machine = sim.p, sim.trace, sim.machine
    served = ~np.isnan(sim.connect_s)
    direct = sim.direct
    agent = served & ~direct
    connect_ms = sim.connect_s[served] * 1000
    node_seconds = sum(nd.seconds(end_s) for nd in sim.nodes.values())
    usd = node_seconds * machine.usd_per_hour / 3600
    krw = usd * p.krw_per_usd
    served_minutes = float(sim.served_s[served].sum()) / 60
    agent_minutes = float(sim.served_s[agent].sum()) / 60
    direct_minutes = float(sim.served_s[direct].sum()) / 60
    busy_slot_s = float(sim.held_s[agent].sum())
    slot_s = node_seconds * sim.slots
    samples = np.array(sim.samples, dtype=float).reshape(-1, len(SAMPLE_FIELDS))
    col = {name: samples[:, k] for k, name in enumerate(SAMPLE_FIELDS)}
    p99 = float(np.percentile(connect_ms, 99)) if connect_ms.size else None
    krw_per_um = krw / served_minutes if served_minutes else None
    refused = int(sim.refused.sum())
    target = target_krw(p.direct)
    n_samples = len(col["t_s"])
    n_direct = int(direct.sum())
    return {
        "trace": {
            "name": trace.name,
            "description": trace.description,
            "calls": trace.calls,
            "user_minutes": round(trace.user_minutes, 2),
            "horizon_s": trace.horizon_s,
            "peak_concurrent": int((col["active_calls"] + col["direct_calls"]).max(initial=0)),
            "peak_direct": int(col["direct_calls"].max(initial=0)),
        },
        "params": {
            **asdict(p),
            "machine": asdict(machine),
            "slots_per_node": sim.slots,
            "media_slots_per_node": sim.media_slots,
            "local_capacity_per_node": sim.local_capacity,
            "local_ai": _local_ai(sim),
            "idle_target": sim.idle_target,
            "floor_slots": p.floor,
            "node_memory": _memory(sim),
            "policy": {**asdict(sim.policy), "lead_s": sim.policy.lead_s},
            "calibration": sim.cal.summary(),
            "assumed": {
                "agent_network_s": round(sim.agent_extra_s, 3),
                "direct_network_s": round(sim.direct_extra_s, 3),
                "why": f"loopback measurements + round trips: agent {AGENT_CALLER_RTTS:g} × "
                f"caller RTT {p.caller_rtt_s:g} s + {AGENT_PROVIDER_RTTS:g} × provider RTT "
                f"{p.provider_rtt_s:g} s (its session start); direct {DIRECT_CALLER_RTTS:g} × "
                f"caller RTT + {DIRECT_PROVIDER_RTTS:g} × provider RTT",
            },
        },
        "connect_ms": summarize(connect_ms.tolist()),
        "connect_agent_ms": summarize((sim.connect_s[agent] * 1000).tolist()),
        "connect_direct_ms": summarize((sim.connect_s[direct] * 1000).tolist()),
        "handshakes_per_node": summarize(sim.handshakes[agent].astype(float).tolist()),
        "calls": {
            "arrivals": trace.calls,
            "served": int(served.sum()),
            "served_agent": int(agent.sum()),
            "served_direct": n_direct,
            "direct_share": round(n_direct / trace.calls, 5) if trace.calls else 0.0,
            "cut_by_scale_down": int(sim.cut.sum()),
            "refused": refused,
            "retried": int((sim.tries > 1).sum()),  # got at least one 503 and retried
            "waited_for_agent": int(sim.forked_wait.sum()),  # a process was still forking
            "over_2s": int((connect_ms > TARGET_P99_MS).sum()),
            "requests": int(sim.tries.sum()),
        },
        "user_minutes": {
            "trace": round(trace.user_minutes, 2),
            "served": round(served_minutes, 2),
            "agent": round(agent_minutes, 2),
            "direct": round(direct_minutes, 2),
            "direct_share": round(direct_minutes / served_minutes, 5) if served_minutes else 0.0,
            "refused": round(float(trace.durations[sim.refused].sum()) / 60, 2),
            "cut": round(float((trace.durations - sim.served_s)[sim.cut].sum()) / 60, 2),
        },
        "nodes": {
            "peak_paid": int(col["paid_nodes"].max(initial=0)),
            "peak_warm": int(col["warm_slots"].max(initial=0)) // sim.slots,
            "asked_for": len(sim.nodes),
            "cancelled_boots": sim.cancelled,
            "drained": sim.drained,
            "drained_with_calls": sim.drained_busy,
            "node_seconds": round(node_seconds, 1),
            "mean_empty_ready": round(float(np.mean(col["empty_nodes"])), 1) if n_samples else 0,
            "max_load_fraction": round(sim.max_load_fraction, 4),
        },
        "capacity": {
            "slot_seconds": round(slot_s, 1),
            "busy_slot_seconds": round(busy_slot_s, 1),
            "idle_fraction": round(1 - busy_slot_s / slot_s, 4) if slot_s else None,
        },
        "cost": {
            "ai": machine.ai,
            # cloud: the provider's AI fee is outside this figure; local: the AI is the nodes
            "ai_fees_included": machine.ai == "local",
            "instance": machine.instance,
            "usd_per_hour": machine.usd_per_hour,
            "krw_per_usd": p.krw_per_usd,
            "usd": round(usd, 4),
            "krw": round(krw, 2),
            # Server cost over every minute a caller was interpreted (agent or direct: the AI
            # fee, outside this budget, is the same per minute either way) …
            "krw_per_user_minute": round(krw_per_um, 4) if krw_per_um is not None else None,
            # … and over the minutes agents served.
            "krw_per_agent_minute": round(krw / agent_minutes, 4) if agent_minutes else None,
        },
        "targets": {
            "surge_p99_ms": TARGET_P99_MS,
            "p99_met": p99 is not None and p99 <= TARGET_P99_MS,
            "none_refused": refused == 0,
            "krw_per_user_minute": target,
            "cost_met": krw_per_um is not None and krw_per_um <= target,
            "under_ceiling": krw_per_um is not None and krw_per_um <= CEILING_KRW_PER_USER_MINUTE,
        },
        "simulated_s": round(end_s, 1),
        "wall_s": round(wall_s, 2),
        "timeline": _timeline(col),
        "curve": _curve(trace.curve),
    }


def _local_ai(sim: Simulation) -> dict[str, Any] | None:
    local = sim.machine.local
    if local is None:
        return None
    per = sim.p.local_per_vcpu if sim.p.local_per_vcpu is not None else local.talkers_per_vcpu
    return {
        **asdict(local),
        "talkers_per_vcpu": per,
        "why": f"{per:g} talkers/vCPU × ({sim.machine.vcpus} − {local.service_vcpus:g} held "
        f"back) vCPU = {sim.local_capacity} local calls per node",
    }


def _memory(sim: Simulation) -> dict[str, Any] | None:
    """Does a full node fit the instance? Calls and idle agents at their measured USS (a
    local call at the profile's figure, plus the inference service's models once)."""
    cal, local = sim.cal, sim.machine.local
    call_mb = local.call_memory_mb if local else cal.call_uss_mb
    if not (call_mb and cal.idle_agent_mb):
        return None
    used = sim.slots * call_mb + sim.idle_target * cal.idle_agent_mb
    if local:
        used += local.service_memory_gib * 1024
    return {
        "calls_and_idle_agents_gib": round(used / 1024, 2),
        "instance_gib": sim.machine.memory_gib,
        "note": "plus the worker and Janus (the inference service's models counted)"
        if local
        else "plus the worker, Janus and the (idle) inference service",
    }


def _timeline(col: dict[str, np.ndarray]) -> dict[str, list[float]]:
    n = col["t_s"].size
    step = max(1, -(-n // MAX_TIMELINE_POINTS))
    return {k: [round(float(x), 2) for x in v[::step]] for k, v in col.items()}


def _curve(curve: tuple[np.ndarray, np.ndarray] | None) -> dict[str, list[float]] | None:
    if curve is None:
        return None
    t, c = curve
    step = max(1, -(-t.size // MAX_TIMELINE_POINTS))
    return {"t_s": t[::step].tolist(), "concurrent": [round(float(x), 1) for x in c[::step]]}


def write(rep: dict[str, Any], connect_ms: np.ndarray, out: Path) -> list[Path]:
    from dragoman.sim import plots

    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(rep, indent=2))
    prm = rep["params"]
    mode = "direct overflow" if prm["direct"] else "no overflow"
    title = f"{rep['trace']['name']}: {prm['profile']}, floor {prm['floor_slots']} slots, {mode}"
    demand = out / "demand_vs_capacity.png"
    cdf = out / "connect_cdf.png"
    plots.demand_vs_capacity(rep, demand, title)
    plots.connect_cdf(connect_ms, cdf, title, TARGET_P99_MS)
    return [path, demand, cdf]


def rows(rep: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary as (what, value) rows, for the console."""
    c, calls, cost = rep["connect_ms"], rep["calls"], rep["cost"]
    t = rep["targets"]

    def ok(flag: bool) -> str:
        return "✓" if flag else "✗"

    return [
        ("trace", f"{rep['trace']['name']}: {rep['trace']['description']}"),
        ("calls / user-minutes", f"{calls['arrivals']:,} / {rep['user_minutes']['trace']:,.0f}"),
        ("peak concurrent calls", f"{rep['trace']['peak_concurrent']:,}"),
        (
            "connect p50 / p95 / p99 / max",
            f"{_s(c['p50'])} / {_s(c['p95'])} / {_s(c['p99'])} / {_s(c['max'])}  "
            f"{ok(t['p99_met'])} p99 ≤ {t['surge_p99_ms'] / 1000:.0f} s",
        ),
        (
            "agent p50 / p99 · direct p50 / p99",
            f"{_s(rep['connect_agent_ms']['p50'])} / {_s(rep['connect_agent_ms']['p99'])} · "
            f"{_s(rep['connect_direct_ms']['p50'])} / {_s(rep['connect_direct_ms']['p99'])}",
        ),
        (
            "refused / retried / waited for agent",
            f"{calls['refused']} {ok(t['none_refused'])} / {calls['retried']} / "
            f"{calls['waited_for_agent']}  (over 2 s: {calls['over_2s']})",
        ),
        (
            "served direct: calls / user-minutes",
            f"{calls['served_direct']:,} ({calls['direct_share']:.2%}) / "
            f"{rep['user_minutes']['direct']:,.0f} ({rep['user_minutes']['direct_share']:.2%})"
            + ("" if rep["params"]["direct"] else "  (no provider key: no overflow)"),
        ),
        (
            "cut by a scale-down / drained with calls",
            f"{calls['cut_by_scale_down']} / {rep['nodes']['drained_with_calls']}",
        ),
        (
            "slots per node / peak nodes",
            f"{rep['params']['slots_per_node']} / "
            f"{rep['nodes']['peak_paid']} paid, {rep['nodes']['peak_warm']} warm",
        ),  # fmt: skip
        ("idle capacity", f"{rep['capacity']['idle_fraction']:.1%}"),
        ("node-hours", f"{rep['nodes']['node_seconds'] / 3600:,.1f}"),
        (
            "cost",
            f"{cost['krw']:,.0f} KRW (${cost['usd']:,.2f}, {cost['instance']} "
            f"${cost['usd_per_hour']}/h, {cost['krw_per_usd']:,.0f} KRW/USD)",
        ),
        (
            "KRW per user-minute",
            f"{cost['krw_per_user_minute']:.3f}  {ok(t['cost_met'])} ≤ {t['krw_per_user_minute']}"
            f"  (per agent-minute {cost['krw_per_agent_minute']:.3f})",
        ),
        ("calibration", _calibration(rep["params"])),
        ("simulated / wall time", f"{rep['simulated_s'] / 3600:.2f} h / {rep['wall_s']:.1f} s"),
    ]


def _calibration(prm: dict[str, Any]) -> str:
    cal = prm["calibration"]
    if not cal["calibrated"]:
        return "NONE — assumed constants: " + "; ".join(cal["notes"])
    per_core = cal["calls_per_core"]
    slots = f"{per_core:g} calls/core × {prm['machine']['vcpus']} vCPU" if per_core else "given"
    media = f"{cal['source']} ({slots} = {prm['media_slots_per_node']} media slots/node)"
    local = prm.get("local_ai")
    return f"{media}; local AI: {local['why']} ({local['source']})" if local else media


def _s(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s"


COMPARE_COLUMNS = (
    "profile",
    "AI",
    "calls/node",
    "nodes peak",
    "node-hours",
    "KRW/user-min",
    "p99 connect",
    "refused",
)


def compare_row(rep: dict[str, Any]) -> tuple[str, ...]:
    """One profile's line of ``dragoman simulate --compare``: cloud's KRW exclude the
    provider's AI fees, local's include the AI (it is the nodes' compute)."""
    cost, prm = rep["cost"], rep["params"]
    return (
        prm["machine"]["name"],
        f"{cost['ai']} ({'AI included' if cost['ai_fees_included'] else 'AI fees excluded'})",
        str(prm["slots_per_node"]),
        f"{rep['nodes']['peak_paid']:,}",
        f"{rep['nodes']['node_seconds'] / 3600:,.1f}",
        f"{cost['krw_per_user_minute']:.3f}",
        _s(rep["connect_ms"]["p99"]),
        f"{rep['calls']['refused']:,}",
    )


def print_comparison(reps: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    name = reps[0]["trace"]["name"] if reps else ""
    table = Table(title=f"dragoman simulate --compare — {name}")
    for col in COMPARE_COLUMNS:
        table.add_column(col)
    for rep in reps:
        table.add_row(*compare_row(rep))
    console = Console()
    console.width = max(console.width, 120)  # one line per profile, even when piped
    console.print(table)
    for rep in reps:
        prm = rep["params"]
        mode = "direct overflow" if prm["direct"] else "no overflow"
        console.print(
            f"{prm['machine']['name']}: {prm['machine']['instance']} "
            f"${prm['machine']['usd_per_hour']}/h ({prm['machine']['source']}); "
            f"floor {prm['floor_slots']} "
            f"calls, {mode}; {_calibration(prm)}",
            soft_wrap=True,
        )


def print_summary(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dragoman simulate — {rep['trace']['name']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for what, value in rows(rep):
        table.add_row(what, value)
    Console().print(table)
