"""The pure parts of ``bench soak``: the seeded call and fault schedules, and the verdicts
on what was sampled (leaks, memory slopes, end reasons, refusals, connect-time drift).

Nothing here touches a process or a socket: ``soak.py`` does, and hands the samples in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# What a simulated caller does (weights in ``DEFAULT_MIX``):
#   polite        connects, talks (silence), hangs up on the control channel
#   vanish        connects, then disappears: no hang-up, no BYE, no DTLS close, no WS close
#   no_ice        posts an offer and never connects (no remote description, no ICE)
#   control_drop  connects, its control WebSocket drops mid-call and reconnects, then polite
BEHAVIOURS = ("polite", "vanish", "no_ice", "control_drop")
DEFAULT_MIX = {"polite": 0.6, "vanish": 0.15, "no_ice": 0.1, "control_drop": 0.15}

# Faults injected on a node (``serve``, or a worker of the fleet):
#   agent_kill      kill -9 of a call's agent process
#   agent_stop      SIGSTOP of a call's agent, SIGCONT after ``hold_s`` (supervision kills
#                   one silent for 5 s first when the hold is longer)
#   janus_kill      kill -9 of Janus
#   inference_stop  SIGSTOP of the inference service, SIGCONT after ``hold_s``
#   provider_drop   the provider fake closes every session opened during ``hold_s`` 1 s in
#   provider_stall  the provider fake stops answering (pings too) every session opened during
#                   ``hold_s``, 1 s in: our keepalive must find it dead
FAULT_KINDS = (
    "agent_kill",
    "agent_stop",
    "janus_kill",
    "inference_stop",
    "provider_drop",
    "provider_stall",
)
# …and on the netns fleet (``bench soak --fleet N``) also:
#   redis_restart   kill -9 of redis-server (no persistence: the registry comes back empty),
#                   started again after ``hold_s``
#   worker_kill     kill -9 of one worker (its Janus, inference service and agents must die
#                   with it), started again after ``hold_s``
#   worker_drain    SIGTERM of one worker: it takes no call, finishes its own and exits;
#                   then started again
FLEET_FAULT_KINDS = ("redis_restart", "worker_kill", "worker_drain")
ALL_FAULT_KINDS = FAULT_KINDS + FLEET_FAULT_KINDS
HOLD_S = {
    "agent_kill": (0.0, 0.0),
    "agent_stop": (2.0, 9.0),
    "janus_kill": (0.0, 0.0),
    "inference_stop": (1.0, 6.0),
    "provider_drop": (3.0, 8.0),
    "provider_stall": (3.0, 8.0),
    "redis_restart": (1.0, 5.0),
    "worker_kill": (1.0, 5.0),
    "worker_drain": (0.0, 0.0),
}


@dataclass(frozen=True)
class CallPlan:
    at_s: float  # after the churn's start
    duration_s: float  # how long the caller stays (from its answer)
    behaviour: str


@dataclass(frozen=True)
class FaultPlan:
    at_s: float
    kind: str
    hold_s: float  # SIGSTOP / fault length; 0 for a kill


def call_schedule(
    seed: int,
    churn_s: float,
    rate_per_s: float,
    median_s: float,
    sigma: float,
    mix: dict[str, float] | None = None,
    max_s: float | None = None,
) -> list[CallPlan]:
    """Poisson arrivals at ``rate_per_s`` over ``churn_s``; lognormal durations with median
    ``median_s`` and shape ``sigma`` (clipped to [1 s, ``max_s``], default 10 × median);
    each caller's behaviour drawn from ``mix``. The same seed gives the same schedule."""
    mix = mix or DEFAULT_MIX
    unknown = set(mix) - set(BEHAVIOURS)
    if unknown:
        raise ValueError(f"unknown behaviours {sorted(unknown)}; choose from {BEHAVIOURS}")
    rng = np.random.default_rng(seed)
    names = list(mix)
    weights = np.array([mix[n] for n in names], dtype=float)
    weights /= weights.sum()
    cap = max_s if max_s is not None else 10 * median_s
    out: list[CallPlan] = []
    t = 0.0
    while rate_per_s > 0:
        t += float(rng.exponential(1 / rate_per_s))
        if t >= churn_s:
            break
        d = float(np.clip(rng.lognormal(np.log(median_s), sigma), 1.0, cap))
        b = names[int(rng.choice(len(names), p=weights))]
        out.append(CallPlan(round(t, 3), round(d, 3), b))
    return out


def fault_schedule(
    seed: int,
    start_s: float,
    end_s: float,
    per_kind: int,
    kinds: tuple[str, ...] = FAULT_KINDS,
) -> list[FaultPlan]:
    """``per_kind`` faults of each kind between ``start_s`` and ``end_s``: the span is cut
    into one slot per fault, the kinds are shuffled over the slots, and each fault lands at
    a random point of its slot's middle half (so two faults are never closer than half a
    slot, and their windows rarely overlap)."""
    unknown = set(kinds) - set(ALL_FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {ALL_FAULT_KINDS}")
    rng = random.Random(seed)
    order = [k for k in kinds for _ in range(per_kind)]
    rng.shuffle(order)
    if not order or end_s <= start_s:
        return []
    slot = (end_s - start_s) / len(order)
    out = []
    for i, kind in enumerate(order):
        at = start_s + slot * (i + 0.25 + 0.5 * rng.random())
        lo, hi = HOLD_S[kind]
        out.append(FaultPlan(round(at, 3), kind, round(rng.uniform(lo, hi), 2)))
    return out


# --- verdicts ---------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    ok: bool | None  # None: not enough data to judge (reported, not failed)
    detail: str
    value: Any = None


@dataclass(frozen=True)
class Fit:
    slope: float  # y per unit x
    intercept: float
    n: int


def slope_fit(xs: list[float], ys: list[float]) -> Fit:
    """Least-squares line through the points (needs two distinct x)."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    if x.size < 2 or float(np.ptp(x)) == 0:
        raise ValueError("a slope needs at least two distinct x values")
    slope, intercept = np.polyfit(x, y, 1)
    return Fit(float(slope), float(intercept), int(x.size))


def rss_slope_verdict(
    name: str,
    calls: list[float],
    rss_mb: list[float],
    bound_mb_per_1000: float,
    min_calls: int,
    warmup_share: float = 0.2,
) -> Verdict:
    """The process's RSS against calls placed so far, after the first ``warmup_share`` of
    the calls (allocator and lazy imports settle): the fitted slope per 1,000 calls must be
    within the bound. Fewer than ``min_calls`` calls in the fit: not judged."""
    pts = sorted(zip(calls, rss_mb, strict=True))
    if not pts:
        return Verdict(f"rss_slope:{name}", None, "no samples")
    lo = pts[0][0] + warmup_share * (pts[-1][0] - pts[0][0])
    kept = [(c, r) for c, r in pts if c >= lo]
    span = kept[-1][0] - kept[0][0] if kept else 0
    if span < min_calls:
        return Verdict(
            f"rss_slope:{name}", None, f"{span:.0f} calls after warm-up < {min_calls}: not judged"
        )
    fit = slope_fit([c for c, _ in kept], [r for _, r in kept])
    per_1000 = fit.slope * 1000
    ok = per_1000 <= bound_mb_per_1000
    return Verdict(
        f"rss_slope:{name}",
        ok,
        f"{per_1000:+.2f} MB per 1,000 calls over {span:.0f} calls ({fit.n} samples; "
        f"bound {bound_mb_per_1000:g})",
        round(per_1000, 3),
    )


@dataclass
class Quiescent:
    """The node at rest (no call): before the churn and after the drain."""

    active_calls: int
    idle_agents: int
    starting_agents: int
    agent_processes: int  # the forkserver's live children
    zombies: int  # defunct processes under the serve
    janus_handles: int | None
    janus_sessions: int | None
    fleet_active_calls: int
    free_slots: int
    capacity: int
    fds: dict[str, int] = field(default_factory=dict)  # role → open fds (less pooled conns)
    nodes: int = 1  # workers (one Janus session each)


# Redis' fds are its clients' pooled connections (the api's and workers' pools grow with
# concurrency and reconnect after a restart): they say nothing about a leak in Redis.
FDS_NOT_JUDGED = frozenset({"redis"})


def leak_verdicts(before: Quiescent, after: Quiescent, fd_slack: int) -> list[Verdict]:
    """Nothing the churn made may be left once it drained: an agent process beyond the idle
    pool, a zombie, a Janus handle beyond one per idle agent, a Janus session beyond the
    worker's one, a registry slot still held, more fds than at the start (plus slack)."""
    out = [
        Verdict(
            "calls_drained",
            after.active_calls == 0,
            f"{after.active_calls} calls still active",
            after.active_calls,
        ),
        Verdict(
            "agent_processes",
            after.agent_processes == after.idle_agents + after.starting_agents,
            f"{after.agent_processes} agent processes for {after.idle_agents} idle + "
            f"{after.starting_agents} starting",
            after.agent_processes - after.idle_agents - after.starting_agents,
        ),
        Verdict("zombies", after.zombies == 0, f"{after.zombies} defunct processes", after.zombies),
        Verdict(
            "registry_slots",
            after.fleet_active_calls == 0 and after.free_slots == after.capacity,
            f"registry: {after.fleet_active_calls} calls held, {after.free_slots} of "
            f"{after.capacity} slots free",
            after.capacity - after.free_slots,
        ),
    ]
    if after.janus_handles is None:
        out.append(Verdict("janus_handles", False, "Janus' Admin API did not answer"))
    else:
        extra = after.janus_handles - after.idle_agents
        out.append(
            Verdict(
                "janus_handles",
                extra <= 0,
                f"{after.janus_handles} handles for {after.idle_agents} idle agents",
                extra,
            )
        )
    if after.janus_sessions is None:
        out.append(Verdict("janus_sessions", None, "session count not available"))
    else:
        out.append(
            Verdict(
                "janus_sessions",
                after.janus_sessions <= after.nodes,
                f"{after.janus_sessions} Janus sessions (each of {after.nodes} workers holds 1)",
                after.janus_sessions,
            )
        )
    for role, fds in sorted(after.fds.items()):
        base = before.fds.get(role)
        if base is None:
            continue
        if role in FDS_NOT_JUDGED:
            out.append(Verdict(f"fds:{role}", None, f"{fds} open fds after vs {base} before"))
            continue
        out.append(
            Verdict(
                f"fds:{role}",
                fds <= base + fd_slack,
                f"{fds} open fds after vs {base} before (slack {fd_slack})",
                fds - base,
            )
        )
    return out


def calls_lost_with_workers(
    answers: list[tuple[str, float]],
    kills: list[dict[str, Any]],
    restarts: dict[str, list[float]],
) -> int:
    """Calls that died with a ``kill -9``-ed worker, whose own end counts died with it.

    ``answers``: (node, when its 201 arrived) for every call placed; ``kills``: each kill's
    worker, time, and its last health report's ``calls_total`` and ``active_calls``;
    ``restarts``: each worker's restart times. The calls the killed process answered are the
    201s from its node between its own start (the worker's previous restart) and its restart
    (the new process cannot have answered before it started); those beyond the report's
    ``calls_total`` came after the report. Lost: the report's running calls plus those."""
    lost = 0
    for kill in kills:
        name, killed_s = kill["worker"], kill["killed_s"]
        times = restarts.get(name, [])
        began = max((t for t in times if t < killed_s), default=-math.inf)
        back = min((t for t in times if t >= killed_s), default=math.inf)
        answered = sum(1 for node, t in answers if node == name and began <= t < back)
        lost += kill["active_calls"] + max(0, answered - kill["calls_total"])
    return lost


def reasons_verdict(
    outcomes: dict[str, int], calls_total: int, known: set[str], not_ends: set[str]
) -> Verdict:
    """Every call placed ended, each with a reason the page has words for: the node's end
    counts (outcomes that are not ends, e.g. ``rejected``, left out) add up to the calls it
    placed, and none is a reason the page does not know."""
    ends = {r: n for r, n in outcomes.items() if r not in not_ends}
    unknown = sorted(r for r in ends if r not in known)
    ended = sum(ends.values())
    ok = not unknown and ended == calls_total
    detail = f"{ended} ends for {calls_total} calls placed; by reason {dict(sorted(ends.items()))}"
    if unknown:
        detail += f"; reasons the page cannot show: {unknown}"
    return Verdict("end_reasons", ok, detail, ends)


def in_window(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def refusal_verdict(
    refusals: list[tuple[float, str, bool]],
    windows: list[tuple[float, float]],
    full_at: list[tuple[float, bool]],
) -> Verdict:
    """No caller refused while capacity was free, outside a fault's window. ``refusals``:
    (time, code, the registry had no free slot: the dispatcher's own "fleet full" answer);
    ``full_at``: (time, node full) samples; a refusal also counts as at capacity when the
    samples on either side of it say full."""
    bad = []
    for t, code, full in refusals:
        if full or in_window(t, windows):
            continue
        before = [f for at, f in full_at if at <= t]
        after = [f for at, f in full_at if at >= t]
        if (before and before[-1]) or (after and after[0]):
            continue
        bad.append((round(t, 1), code))
    inside = len(refusals) - len(bad)
    return Verdict(
        "refusals_outside_faults",
        not bad,
        f"{len(refusals)} refusals, {inside} inside a fault's window or at capacity; "
        f"outside: {bad[:10]}",
        len(bad),
    )


def bucket_p95(
    points: list[tuple[float, float]], bucket_s: float, windows: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Connect times (press time, ms) as one p95 per ``bucket_s``, each bucket marked
    fault-free when no fault window overlaps it."""
    if not points:
        return []
    last = max(t for t, _ in points)
    out = []
    for i in range(int(last // bucket_s) + 1):
        a, b = i * bucket_s, (i + 1) * bucket_s
        xs = [v for t, v in points if a <= t < b]
        clean = not any(wa < b and wb > a for wa, wb in windows)
        out.append(
            {
                "start_s": a,
                "n": len(xs),
                "p95_ms": round(float(np.percentile(xs, 95)), 1) if xs else None,
                "fault_free": clean,
            }
        )
    return out


def drift_verdict(
    buckets: list[dict[str, Any]], ratio: float, floor_ms: float, min_n: int = 5
) -> Verdict:
    """Connect p95 of the fault-free buckets must not drift: the median of the last quarter
    of them (at most 10, at least 1) at most ``ratio`` × the median of the first quarter,
    and never judged below ``floor_ms`` of difference, the noise of a shared machine.

    Drift is a sustained shift (a slow leak makes every later minute slower), so one slow
    minute — another process on a shared box — does not fail the run alone; the worst
    minute is reported beside it. Fewer than two such buckets: not judged."""
    clean = [b for b in buckets if b["fault_free"] and b["n"] >= min_n]
    if len(clean) < 2:
        return Verdict("connect_drift", None, f"{len(clean)} fault-free buckets: not judged")
    k = max(1, min(10, len(clean) // 4))
    early = float(np.median([b["p95_ms"] for b in clean[:k]]))
    late = float(np.median([b["p95_ms"] for b in clean[-k:]]))
    worst = max(b["p95_ms"] for b in clean[k:])
    ok = late <= max(ratio * early, early + floor_ms)
    return Verdict(
        "connect_drift",
        ok,
        f"fault-free connect p95, median of the first {k} minutes {early:.0f} ms, of the "
        f"last {k} {late:.0f} ms (bound ×{ratio:g} or +{floor_ms:g} ms); worst later minute "
        f"{worst:.0f} ms",
        {"early_ms": early, "late_ms": late, "worst_ms": worst, "buckets_each": k},
    )


def traceback_verdict(log_text: str) -> Verdict:
    n = log_text.count("Traceback (most recent call last)")
    first = ""
    if n:
        i = log_text.index("Traceback (most recent call last)")
        first = log_text[max(0, i - 300) : i + 900]
    return Verdict("tracebacks", n == 0, f"{n} tracebacks in the server log", first or None)


def failed(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.ok is False]
