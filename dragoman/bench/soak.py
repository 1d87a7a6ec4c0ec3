"""``dragoman bench soak``: call churn with faults injected against an embedded ``serve``,
sampled as a time series, then a verdict on what was left behind.

The node runs the cloud provider ``openai-translate`` against the local provider fake
(``dragoman.fakes``, started here): churn, not AI, is the point, and the fake costs nothing
per call. The inference service still runs (a node always has one), so it can be stopped.
Callers are aiortc through Janus (real calls) sending precoded Opus silence; their
behaviours and arrival times, and the faults' kinds and times, come from a seed
(``soak_plan``). Every ``sample_s`` the node's internal ``/healthz`` and ``/metrics`` and
psutil over its processes (serve, Janus, inference service, forkserver, agents) are
recorded. After the churn and the faults the calls drain; the verdicts
(``soak_plan``) compare the node at rest with the node before the churn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection

from dragoman.bench.caller import Caller, PrecodedTrack, precode
from dragoman.bench.connect import machine
from dragoman.bench.embedded import embedded_process, free_port, internal_url
from dragoman.bench.soak_fleet import FleetView, fleet, wait_ready
from dragoman.bench.soak_observe import (
    agents_and_zombies,
    process_stats,
    quiescent_of,
    read_counters,
)
from dragoman.bench.soak_plan import (
    DEFAULT_MIX,
    FAULT_KINDS,
    FLEET_FAULT_KINDS,
    CallPlan,
    FaultPlan,
    Quiescent,
    Verdict,
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
    traceback_verdict,
)
from dragoman.contract.page import END_REASONS
from dragoman.fleet.dispatcher import FLEET_FULL

FAKE_KEY = "sk-soak-fake-key"  # the only key the fake accepts: no real provider is called
RECOVER_MAX_S = 120.0  # a fault's window ends when the node is whole again (or this)
GRACE_S = 3.0  # …plus this: a refusal decided just before the node came back is the fault's
CONNECT_MAX_S = 10.0  # a caller that is not connected by then counts as failed to connect
HANGUP_WAIT_S = 3.0
CALLER_SLACK_S = 60.0  # a caller still busy this long past its planned stay is stuck
CLOSE_MAX_S = 10.0


@dataclass(frozen=True)
class SoakParams:
    duration_s: float = 1800.0  # churn (faults within it)
    rate_per_s: float = 1.0
    median_call_s: float = 6.0
    sigma: float = 0.6
    seed: int = 1
    faults_per_kind: int | None = None  # None: one per 6 minutes of churn (at least 1)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    max_calls: int = 24
    idle_target: int = 4
    sample_s: float = 2.0
    bucket_s: float = 60.0  # connect p95 per bucket
    rss_bound_mb_per_1000: float = 20.0
    rss_min_calls: int = 200  # fewer calls after warm-up: the slope is not judged
    fd_slack: int = 8
    drift_ratio: float = 2.0
    drift_floor_ms: float = 300.0
    drain_max_s: float = 90.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    fleet: int = 0  # 0: an embedded serve; N: api + Redis + N workers on netns hosts

    @property
    def per_kind(self) -> int:
        if self.faults_per_kind is not None:
            return self.faults_per_kind
        return max(1, int(self.duration_s // 360))

    def fault_span(self) -> tuple[float, float]:
        """Faults fall in the middle of the churn: the first and last 10 % are clean."""
        return 0.1 * self.duration_s, 0.9 * self.duration_s


Say = Callable[[str], None]


# --- the provider fake ------------------------------------------------------------------


@contextlib.contextmanager
def provider_fake(log_path: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """``dragoman.fakes.server`` on a free port of ``host``; yields its base URL."""
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dragoman.fakes.server", "--host", host, "--port", str(port)]
            + ["--key", FAKE_KEY],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"provider fake exited; see {log_path}")
            try:
                httpx.get(f"{url}/fake/state", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"provider fake not ready; see {log_path}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- observing the node -----------------------------------------------------------------


class Node:
    """The embedded serve, seen from outside: health, metrics, its processes."""

    def __init__(self, url: str, serve_pid: int) -> None:
        self.url = url
        self.internal = internal_url(url)
        self.serve = psutil.Process(serve_pid)
        self.http = httpx.AsyncClient(timeout=5)

    async def health(self) -> dict[str, Any]:
        try:
            return (await self.http.get(f"{self.internal}/healthz")).json()
        except (httpx.HTTPError, ValueError):
            return {}

    async def metrics(self) -> dict[str, dict[str, float]]:
        """The counters a soak follows: call requests by outcome, calls ended by reason."""
        return await read_counters(self.http, self.internal)

    def pids(self, h: dict[str, Any]) -> dict[str, int | None]:
        return {
            "serve": self.serve.pid,
            "janus": (h.get("media") or {}).get("pid"),
            "inference": (h.get("inference") or {}).get("pid"),
            "forkserver": (h.get("supervision") or {}).get("forkserver_pid"),
        }

    def fault_pid(self, kind: str, h: dict[str, Any], _rng: random.Random) -> int | None:
        """The process a node fault hits: Janus (``janus_kill``) or the inference service."""
        return self.pids(h)["janus" if kind == "janus_kill" else "inference"]

    def processes(self, h: dict[str, Any]) -> dict[str, Any]:
        """RSS (MB) and open fds of each long-running process; agent and zombie counts."""
        pids = self.pids(h)
        agents, zombies = agents_and_zombies(self.serve.pid, pids["forkserver"])
        return {"procs": process_stats(pids), "agents": agents, "zombies": zombies}

    async def quiescent(self) -> tuple[Quiescent, dict[str, Any]]:
        h = await self.health()
        return quiescent_of(h, await asyncio.to_thread(self.processes, h)), h

    def whole(self, h: dict[str, Any]) -> bool:
        """Ready for calls: media and inference up, not draining, an idle agent waiting."""
        return (
            h.get("status") == "ok"
            and bool((h.get("media") or {}).get("up"))
            and bool((h.get("inference") or {}).get("up"))
            and h.get("idle_agents", 0) > 0
        )


def at_rest(q: Quiescent, idle_target: int) -> bool:
    return (
        q.active_calls == 0
        and q.fleet_active_calls == 0
        and q.starting_agents == 0
        and q.idle_agents >= idle_target
        and q.agent_processes == q.idle_agents
        and q.janus_handles == q.idle_agents
    )


async def settle(
    node: Node | FleetView, idle_target: int, max_s: float
) -> tuple[Quiescent, dict[str, Any]]:
    """Poll until the node is at rest (or ``max_s``); the last observation either way."""
    deadline = time.monotonic() + max_s
    while True:
        q, h = await node.quiescent()
        if at_rest(q, idle_target) or time.monotonic() > deadline:
            return q, h
        await asyncio.sleep(1.0)


# --- callers ----------------------------------------------------------------------------


@dataclass
class CallRecord:
    index: int
    behaviour: str
    planned_s: float
    pressed_s: float | None = None  # after the churn's start
    status: int | None = None
    code: str | None = None
    message: str | None = None  # the refusal's words (the dispatcher's FLEET_FULL: no slot)
    answer_s: float | None = None  # press → the server's answer (under load: seconds)
    call_id: str | None = None
    node_id: str | None = None  # the node that answered (a fleet's worker name)
    connect_ms: float | None = None  # press → WebRTC connected
    ended_reason: str | None = None  # the state "ended" the control channel said
    control_reconnected: bool | None = None
    after_reconnect: list[str] | None = None  # what the control channel said after it
    control_close: tuple[int, str] | None = None  # how it last closed
    stage: str = "planned"  # the step it is in (where a stuck caller stopped)
    error: str | None = None


def _vanish(caller: Caller) -> None:
    """The browser tab is gone: the control socket drops without a close frame and nothing
    more leaves the peer connection (its UDP sockets are closed first, so aiortc's own
    close — RTCP BYE, DTLS close_notify — goes nowhere)."""
    ws = caller._ws
    if ws is not None:
        ws.transport.abort()
    for t in caller.pc.getTransceivers():
        ice = t.sender.transport.transport if t.sender.transport else None
        conn = getattr(ice, "_connection", None)
        for proto in getattr(conn, "_protocols", []):
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.close()


async def _wait_connected(caller: Caller) -> float | None:
    deadline = time.monotonic() + CONNECT_MAX_S
    while caller.result.connected_ms is None and time.monotonic() < deadline:
        if caller.pc.connectionState in ("failed", "closed"):
            return None
        await asyncio.sleep(0.05)
    return caller.result.connected_ms


async def _ended_reason(caller: Caller, since: int) -> str | None:
    try:
        msg = await caller.wait_for(
            lambda m: m.get("type") == "state" and m.get("state") == "ended",
            HANGUP_WAIT_S,
            since=since,
        )
    except TimeoutError:
        return None
    return msg.get("reason")


async def run_caller(
    url: str, plan: CallPlan, rec: CallRecord, packets: list[bytes], http: httpx.AsyncClient
) -> None:
    if plan.behaviour == "no_ice":
        await _no_ice(url, rec, http)
        return
    caller = Caller(url, source="ja", target="en", keep_listening=False, mic=PrecodedTrack(packets))
    try:
        rec.stage = "offer"
        sent = time.monotonic()
        res = await caller.call(http)
        rec.answer_s = round(time.monotonic() - sent, 3)
        rec.status, rec.call_id, rec.node_id = res.status, res.call_id, res.node_id
        if res.status != 201:
            rec.code = (res.error or {}).get("code")
            rec.message = (res.error or {}).get("message")
            return
        rec.stage = "connect"
        rec.connect_ms = await _wait_connected(caller)
        if rec.connect_ms is None:
            rec.error = "not connected"
            return
        rec.stage = "talk"
        if plan.behaviour == "vanish":
            await asyncio.sleep(plan.duration_s)
            rec.stage = "vanish"
            _vanish(caller)
            return
        if plan.behaviour == "control_drop":
            await asyncio.sleep(plan.duration_s / 2)
            if caller._ws is not None:
                caller._ws.transport.abort()  # the network drops it: no close frame
            await asyncio.sleep(0.5)
            rec.stage = "reconnect"
            mark = caller.mark()
            await caller.open_control()
            try:  # a page that reconnects gets the call's latest state first
                await caller.wait_for(lambda m: m.get("type") == "state", 5, since=mark)
                rec.control_reconnected = True
            except TimeoutError:
                rec.control_reconnected = False
            rec.after_reconnect = [
                f"{m.get('type')}:{m.get('state') or m.get('code') or ''}"
                for m in caller.result.messages[mark:]
            ]
            rec.stage = "talk"
            await asyncio.sleep(plan.duration_s / 2)
        else:
            await asyncio.sleep(plan.duration_s)
        rec.stage = "hangup"
        if caller.channel_open:
            mark = caller.mark()
            caller.send({"v": 1, "type": "hangup"})
            rec.ended_reason = await _ended_reason(caller, mark)
        else:  # the call ended under it (a fault): the reason it was told, if any
            ended = [m for m in caller.result.messages if m.get("state") == "ended"]
            rec.ended_reason = ended[-1].get("reason") if ended else None
    except Exception as e:  # a caller's failure is a figure, not the end of the soak
        rec.error = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        rec.control_close = caller.result.control_close
        rec.stage = "close"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(caller.close(), CLOSE_MAX_S)
        rec.stage = "done"


async def _no_ice(url: str, rec: CallRecord, http: httpx.AsyncClient) -> None:
    """An offer posted by a page that never connects: no remote description is set, so no
    ICE check ever reaches Janus; the node must end it by its connect timeout."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    rec.stage = "offer"
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "source": "ja", "target": "en"}
        sent = time.monotonic()
        resp = await http.post(f"{url}/v1/calls", json=body)
        rec.answer_s = round(time.monotonic() - sent, 3)
        rec.status = resp.status_code
        data = resp.json()
        if resp.status_code == 201:
            rec.call_id, rec.node_id = data.get("call_id"), data.get("node_id")
        else:
            rec.code = (data.get("error") or {}).get("code")
            rec.message = (data.get("error") or {}).get("message")
    except Exception as e:
        rec.error = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        rec.stage = "close"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pc.close(), CLOSE_MAX_S)
        rec.stage = "done"


# --- faults -----------------------------------------------------------------------------


@dataclass
class FaultRecord:
    at_s: float
    kind: str
    hold_s: float
    injected_s: float | None = None
    target_pid: int | None = None
    skipped: str | None = None
    window: tuple[float, float] | None = None  # injection → node whole again + grace
    error: str | None = None  # the injection itself failed (said, and in the report)


async def _call_pid(node: Node | FleetView, rng: random.Random, wait_s: float = 10.0) -> int | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pids = (await node.health()).get("call_pids") or []
        if pids:
            return rng.choice(sorted(pids))
        await asyncio.sleep(0.5)
    return None


async def _fake_fault(http: httpx.AsyncClient, fake_url: str, fault: dict[str, float]) -> None:
    """Switch the provider fake's fault; its loop serves every session, so on a loaded box
    give it time, and try again once."""
    for attempt in range(2):
        try:
            (await http.post(f"{fake_url}/fake/fault", json=fault, timeout=30)).raise_for_status()
            return
        except httpx.HTTPError:
            if attempt:
                raise


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


async def inject(
    node: Node | FleetView,
    fake_url: str,
    f: FaultPlan,
    rec: FaultRecord,
    rng: random.Random,
    t0: float,
) -> None:
    """One fault, then its window: until the node is whole again, plus the grace."""
    h = await node.health()
    pid: int | None = None
    if f.kind in ("agent_kill", "agent_stop"):
        pid = await _call_pid(node, rng)
        if pid is None:
            rec.skipped = "no call running"
            return
    elif f.kind in ("janus_kill", "inference_stop"):
        pid = node.fault_pid(f.kind, h, rng)
    rec.injected_s = round(time.monotonic() - t0, 2)
    rec.target_pid = pid
    if f.kind in FLEET_FAULT_KINDS:
        if not isinstance(node, FleetView):
            rec.skipped = "a fleet fault: run with --fleet"
            return
        rec.target_pid = await node.fleet_fault(f.kind, f.hold_s, rng, t0)
    elif f.kind in ("agent_kill", "janus_kill") and pid:
        _signal(pid, signal.SIGKILL)
    elif f.kind in ("agent_stop", "inference_stop") and pid:
        _signal(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(f.hold_s)
        finally:  # also when the run is interrupted: never leave a process stopped
            _signal(pid, signal.SIGCONT)  # already killed by supervision: nothing to resume
    elif f.kind in ("provider_drop", "provider_stall"):
        after = "drop_after_s" if f.kind == "provider_drop" else "stall_after_s"
        await _fake_fault(node.http, fake_url, {after: 1.0})
        try:
            await asyncio.sleep(f.hold_s)
        finally:
            await _fake_fault(node.http, fake_url, {})
    deadline = time.monotonic() + RECOVER_MAX_S
    await asyncio.sleep(0.5)  # the node notices before it can be seen whole again
    while time.monotonic() < deadline and not node.whole(await node.health()):
        await asyncio.sleep(0.25)
    rec.window = (rec.injected_s, round(time.monotonic() - t0 + GRACE_S, 2))


async def run_faults(
    node: Node | FleetView,
    fake_url: str,
    plans: list[FaultPlan],
    seed: int,
    t0: float,
    say: Say,
    records: list[FaultRecord] | None = None,
) -> list[FaultRecord]:
    """Inject ``plans`` at their times; each fault's record goes into ``records`` as it
    starts (so a run stopped early still reports the faults it had)."""
    rng = random.Random(seed * 7919)
    records = [] if records is None else records
    for f in plans:
        delay = t0 + f.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = FaultRecord(f.at_s, f.kind, f.hold_s)
        records.append(rec)
        try:
            await inject(node, fake_url, f, rec, rng, t0)
        except Exception as e:  # noqa: BLE001 — one failed injection must not end the rest
            # (A 2-hour run lost every later fault to one 5 s timeout of the provider fake on
            # the loaded box.) Counted as not injected unless it was; its window is closed.
            rec.error = f"{type(e).__name__}: {str(e)[:160]}"
            if rec.injected_s is not None and rec.window is None:
                rec.window = (rec.injected_s, round(time.monotonic() - t0 + RECOVER_MAX_S, 2))
            say(f"  fault {f.kind}: the injection failed: {rec.error}")
            continue
        say(
            f"  fault {f.kind} at {rec.injected_s} s (pid {rec.target_pid}, hold {f.hold_s} s)"
            + (f": skipped, {rec.skipped}" if rec.skipped else f", window {rec.window}")
        )
    return records


# --- sampling ---------------------------------------------------------------------------


async def sample_loop(
    node: Node | FleetView,
    every_s: float,
    t0: float,
    out: list[dict[str, Any]],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        h = await node.health()
        m = await node.metrics()
        pr = await asyncio.to_thread(node.processes, h)
        media = h.get("media") or {}
        out.append(
            {
                "t_s": round(time.monotonic() - t0, 2),
                "status": h.get("status"),
                "active_calls": h.get("active_calls"),
                "idle_agents": h.get("idle_agents"),
                "starting_agents": h.get("starting_agents"),
                "capacity": h.get("capacity"),
                "calls_total": h.get("calls_total"),
                "outcomes": h.get("outcomes"),
                "free_slots": h.get("free_slots"),
                "fleet_active_calls": h.get("fleet_active_calls"),
                "media_up": media.get("up"),
                "janus_handles": media.get("janus_handles"),
                "janus_sessions": media.get("janus_sessions"),
                "inference_up": (h.get("inference") or {}).get("up"),
                "killed": (h.get("supervision") or {}).get("killed"),
                "metrics": m,
                **pr,
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


# --- the run ----------------------------------------------------------------------------


async def churn(node: Node | FleetView, fake_url: str, p: SoakParams, say: Say) -> dict[str, Any]:
    url = node.url
    calls = call_schedule(p.seed, p.duration_s, p.rate_per_s, p.median_call_s, p.sigma, p.mix)
    lo, hi = p.fault_span()
    faults = fault_schedule(p.seed, lo, hi, p.per_kind, p.fault_kinds)
    say(
        f"  {len(calls)} callers over {p.duration_s:g} s "
        f"({', '.join(f'{b} {sum(c.behaviour == b for c in calls)}' for b in p.mix)}); "
        f"{len(faults)} faults"
    )
    idle = p.idle_target * max(1, p.fleet)
    before, h0 = await settle(node, idle, 60)
    packets = precode(np.zeros(48000, dtype=np.int16))
    records = [CallRecord(i, c.behaviour, c.at_s) for i, c in enumerate(calls)]
    samples: list[dict[str, Any]] = []
    loop_errors = _count_loop_errors(say)
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampler = asyncio.create_task(sample_loop(node, p.sample_s, t0, samples, stop))
    fault_records: list[FaultRecord] = []
    fault_task = asyncio.create_task(
        run_faults(node, fake_url, faults, p.seed, t0, say, fault_records)
    )
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def one(plan: CallPlan, rec: CallRecord) -> None:
            delay = t0 + plan.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            rec.pressed_s = round(time.monotonic() - t0, 3)
            try:
                await asyncio.wait_for(
                    run_caller(url, plan, rec, packets, http), plan.duration_s + CALLER_SLACK_S
                )
            except TimeoutError:
                rec.error = f"stuck in {rec.stage}"

        progress = asyncio.create_task(_progress(records, samples, t0, p.duration_s, say))
        callers = asyncio.gather(*(one(c, r) for c, r in zip(calls, records, strict=True)))
        interrupted = _stop_early_on_signal(callers, fault_task, say)
        with contextlib.suppress(asyncio.CancelledError):
            await callers
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fault_task
    churn_end = round(time.monotonic() - t0, 1)
    say(f"  churn over at {churn_end} s; draining…")
    after, h1 = await settle(node, idle, p.drain_max_s)
    stop.set()
    await sampler
    m1 = await node.metrics()
    registry = await node.registry_keys() if isinstance(node, FleetView) else None
    await node.http.aclose()
    return {
        "calls": records,
        "caller_loop_errors": dict(loop_errors),
        "faults": fault_records,
        "samples": samples,
        "before": before,
        "after": after,
        "health_before": h0,
        "health_after": h1,
        "metrics_after": m1,
        "churn_end_s": churn_end,
        "interrupted": interrupted.is_set(),
        "registry_keys": registry,
        "fleet": asdict(node.fleet.record) if isinstance(node, FleetView) else None,
        "drained_s": round(time.monotonic() - t0, 1),
    }


def _stop_early_on_signal(
    callers: asyncio.Future[Any], faults: asyncio.Task[Any], say: Say
) -> asyncio.Event:
    """Ctrl-C (or SIGTERM) ends the churn early: callers still to come and running are
    cancelled, faults stop, and the node drains and is judged as usual (the report says
    it was interrupted). A second signal stops at once."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()

    def stop() -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        say("  interrupted: ending the churn now, then draining and reporting (again: quit)")
        callers.cancel()
        faults.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    return interrupted


def _count_loop_errors(say: Say) -> dict[str, int]:
    """Count the callers' unretrieved task errors (aioice's consent checks on a vanished
    caller's closed socket) instead of printing each traceback; say each kind once."""
    counts: dict[str, int] = {}

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        e = context.get("exception")
        kind = type(e).__name__ if e is not None else str(context.get("message"))[:80]
        if kind not in counts:
            say(f"  (caller side, counted from now on) {kind}: {context.get('message')}")
        counts[kind] = counts.get(kind, 0) + 1

    asyncio.get_running_loop().set_exception_handler(handler)
    return counts


async def _progress(
    records: list[CallRecord], samples: list[dict[str, Any]], t0: float, total: float, say: Say
) -> None:
    while True:
        await asyncio.sleep(30)
        pressed = sum(r.pressed_s is not None for r in records)
        last = samples[-1] if samples else {}
        say(
            f"  {time.monotonic() - t0:.0f}/{total:g} s: {pressed} callers pressed Call, "
            f"{last.get('active_calls')} active, {last.get('idle_agents')} idle, RSS MB "
            + ", ".join(f"{r} {v['rss_mb']}" for r, v in (last.get("procs") or {}).items())
        )


def verdicts(run: dict[str, Any], p: SoakParams, log_text: str) -> list[Verdict]:
    windows = [f.window for f in run["faults"] if f.window is not None]
    after: Quiescent = run["after"]
    out = leak_verdicts(run["before"], after, p.fd_slack)
    h1 = run["health_after"]
    fleet_rec = run.get("fleet")
    if fleet_rec is None:
        placed = h1.get("calls_total", 0)
    else:
        # A killed worker's own counts die with it: the calls it held were ended by the api
        # (agent_lost on their control channel); calls_lost_with_workers counts them.
        answers = [
            (r.node_id, r.pressed_s + (r.answer_s or 0.0))
            for r in run["calls"]
            if r.status == 201 and r.node_id is not None and r.pressed_s is not None
        ]
        lost = calls_lost_with_workers(answers, fleet_rec["kills"], fleet_rec["restarts"])
        placed = sum(r.status == 201 for r in run["calls"]) - lost
    out.append(reasons_verdict(h1.get("outcomes") or {}, placed, set(END_REASONS), {"rejected"}))
    if fleet_rec is not None:
        orphans = fleet_rec["orphans"]
        out.append(
            Verdict(
                "orphans",
                not orphans,
                f"{len(orphans)} processes outlived their worker: {orphans[:5]}",
                len(orphans),
            )
        )
        keys = run["registry_keys"] or {}
        left = {k: v for k, v in keys.items() if k != "stale_hold_entries_not_counted"}
        out.append(
            Verdict(
                "registry_keys",
                not any(left.values()),
                f"Redis after the drain: {keys}",
                keys,
            )
        )
    # Judged when the answer came: a request sent just before a fault is refused by it.
    refusals = [
        (r.pressed_s + (r.answer_s or 0.0), r.code or str(r.status), r.message == FLEET_FULL)
        for r in run["calls"]
        if r.status is not None and r.status != 201 and r.pressed_s is not None
    ]
    full_at = [
        (s["t_s"], (s["active_calls"] or 0) >= (s["capacity"] or 1))
        for s in run["samples"]
        if s.get("active_calls") is not None
    ]
    out.append(refusal_verdict(refusals, windows, full_at))
    connects = [(r.pressed_s, r.connect_ms) for r in run["calls"] if r.connect_ms is not None]
    buckets = bucket_p95(connects, p.bucket_s, windows)
    out.append(drift_verdict(buckets, p.drift_ratio, p.drift_floor_ms))
    roles = sorted({r for smp in run["samples"] for r in smp.get("procs") or {}})
    for role in roles:
        xs, ys = _rss_series(run["samples"], role)
        out.append(rss_slope_verdict(role, xs, ys, p.rss_bound_mb_per_1000, p.rss_min_calls))
    out.append(traceback_verdict(log_text))
    injected = {k: 0 for k in p.fault_kinds}
    for f in run["faults"]:
        if f.injected_s is not None:
            injected[f.kind] += 1
    out.append(
        Verdict(
            "faults_injected",
            all(n >= 1 for n in injected.values()),
            f"injected by kind {injected}",
            injected,
        )
    )
    return out


def _rss_series(samples: list[dict[str, Any]], role: str) -> tuple[list[float], list[float]]:
    """(calls placed, RSS MB) of ``role``'s longest-lived pid (a restarted Janus or
    inference service starts over: its first incarnation's memory is another process)."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for s in samples:
        pr = (s.get("procs") or {}).get(role)
        if pr and s.get("calls_total") is not None:
            by_pid.setdefault(pr["pid"], []).append((s["calls_total"], pr["rss_mb"]))
    if not by_pid:
        return [], []
    pts = max(by_pid.values(), key=lambda v: (v[-1][0] - v[0][0], len(v)))
    return [c for c, _ in pts], [r for _, r in pts]


def summary(run: dict[str, Any], p: SoakParams, vs: list[Verdict]) -> dict[str, Any]:
    calls: list[CallRecord] = run["calls"]
    windows = [f.window for f in run["faults"] if f.window is not None]
    connects = [(r.pressed_s, r.connect_ms) for r in calls if r.connect_ms is not None]
    by_status: dict[str, int] = {}
    for r in calls:
        key = str(r.status) if r.code is None else f"{r.status} {r.code}"
        by_status[key] = by_status.get(key, 0) + 1
    h1 = run["health_after"]
    return {
        "interrupted": run.get("interrupted", False),
        "params": asdict(p),
        "machine": machine(),
        "mode": (
            f"fleet: api + Redis + {p.fleet} workers on namespace hosts" if p.fleet else "serve"
        )
        + ", cloud provider openai-translate against the local provider fake",
        "callers": len(calls),
        "calls_placed": h1.get("calls_total"),
        "answers_by_status": by_status,
        "caller_errors": sum(r.error is not None for r in calls),
        # Our own callers' side (aioice after a vanished caller closed its sockets), not
        # the server's: counted, each kind said once.
        "caller_loop_errors": run.get("caller_loop_errors", {}),
        "callers_stuck": [r.error for r in calls if (r.error or "").startswith("stuck")],
        "control_reconnects": {
            "ok": sum(r.control_reconnected is True for r in calls),
            "failed": sum(r.control_reconnected is False for r in calls),
        },
        "outcomes": h1.get("outcomes"),
        "killed": (h1.get("supervision") or {}).get("killed"),
        "faults": [asdict(f) for f in run["faults"]],
        "connect_p95_buckets": bucket_p95(connects, p.bucket_s, windows),
        "churn_end_s": run["churn_end_s"],
        "drained_s": run["drained_s"],
        "before": asdict(run["before"]),
        "after": asdict(run["after"]),
        "verdicts": [asdict(v) for v in vs],
        "passed": not failed(vs),
    }


def _cloud_env(fake_url: str, p: SoakParams) -> dict[str, str]:
    """A node in cloud mode against the provider fake."""
    return {
        "DRAGOMAN_PROVIDER": "openai-translate",
        "DRAGOMAN_OPENAI_API_KEY": FAKE_KEY,
        "DRAGOMAN_OPENAI_BASE_URL": f"{fake_url}/v1",
        "DRAGOMAN_PROVIDER_CONNECT_TIMEOUT_S": "3",
        "DRAGOMAN_MAX_CALLS": str(p.max_calls),
        "DRAGOMAN_IDLE_TARGET": str(p.idle_target),
        "DRAGOMAN_DIRECT_OVERFLOW": "false",
    }


def _fleet_run(p: SoakParams, out: Path, say: Say) -> dict[str, Any]:
    """The churn against api + Redis + ``p.fleet`` workers on namespace hosts (root only)."""
    if os.geteuid() != 0:
        raise SystemExit("bench soak --fleet needs root (network namespaces)")
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(fleet(p.fleet, out, p.max_calls, p.idle_target))
        # The fake listens on the bridge, where the workers' agents can reach it.
        fake_url = stack.enter_context(provider_fake(out / "fake.log", host=f.gateway))
        f.start(_cloud_env(fake_url, p))
        say(
            f"  starting a fleet: Redis, an api and {p.fleet} workers on namespace hosts "
            f"({p.max_calls} slots, {p.idle_target} idle each; logs in {out})…"
        )

        async def go() -> dict[str, Any]:
            view = FleetView(f)
            await wait_ready(view)
            return await churn(view, fake_url, p, say)

        return asyncio.run(go())


def main(p: SoakParams, out: Path, say: Say | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    say = say or (lambda text: print(text, flush=True))
    say(f"bench soak: {p.duration_s:g} s of churn at {p.rate_per_s:g} calls/s, seed {p.seed}")
    if p.fleet:
        run = _fleet_run(p, out, say)
        logs = ["api.log", *(f"w{i}.log" for i in range(1, p.fleet + 1))]
    else:
        with provider_fake(out / "fake.log") as fake_url:
            env = _cloud_env(fake_url, p)
            say(
                f"  starting an embedded dragoman serve "
                f"({p.max_calls} slots, {p.idle_target} idle)…"
            )
            with embedded_process(out / "serve.log", **env) as (url, proc):
                run = asyncio.run(churn(Node(url, proc.pid), fake_url, p, say))
        logs = ["serve.log"]
    log_text = "\n".join((out / name).read_text(errors="replace") for name in logs)
    vs = verdicts(run, p, log_text)
    rep = summary(run, p, vs)
    (out / "soak.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False, default=str))
    (out / "soak-samples.json").write_text(
        json.dumps(
            {"samples": run["samples"], "calls": [asdict(c) for c in run["calls"]]},
            default=str,
        )
    )
    from dragoman.bench.plots import soak_plot

    soak_plot(run["samples"], rep["connect_p95_buckets"], rep["faults"], out / "soak.png")
    say("")
    say(
        f"  {rep['callers']} callers, {rep['calls_placed']} calls placed; answers "
        f"{rep['answers_by_status']}; outcomes {rep['outcomes']}"
    )
    if rep["caller_errors"]:
        errors = [c.error for c in run["calls"] if c.error]
        say(f"  {rep['caller_errors']} callers failed on their side: {errors[:10]}")
    for v in vs:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[v.ok]
        say(f"  [{mark}] {v.name}: {v.detail}")
    say(f"  {'PASSED' if rep['passed'] else 'FAILED'}; saved {out / 'soak.json'} + soak.png")
    return rep
