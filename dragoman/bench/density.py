"""``dragoman bench density``: how many concurrent calls one core carries in cloud-AI mode.

Every call runs the real media plane: the caller's WebRTC (ICE, DTLS, SRTP) terminated by
the node's Janus, plain RTP to the call's agent process, Opus decode, streaming to the
provider (base64/JSON over its WebSocket) and back, paced 24 kHz Opus out. The provider is
the local FAKE of OpenAI's realtime translation (``dragoman.fakes``) in its own process, so
no AI time is counted; it answers speech with synthetic translated audio, so the output
path works as hard as in a real call.

The server (api, worker, Janus, agents — every process of ``dragoman serve``) is pinned to
``--server-cpus`` (default: CPU 0), the fake provider and the load clients to the other
CPUs, so the server's share is known exactly. Load clients are aiortc callers that send
Opus packets encoded once (no per-call encoding) and stop decoding once they hear the
agent, so a client process can hold dozens of calls. Calls are added in steps; after each
step settles, the window's punctuality is read from the agents' own counters (a 20 ms
packet is late when it leaves > 20 ms after its slot), with the server's CPU time, the
calls actually connected (the caller heard the agent) and each call process's unique
memory (USS/PSS). The ramp stops at the first step below the on-time goal (99.5 %) or
where calls fail to connect; the last step that met both is the capacity.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from dragoman.bench.caller import Caller, PrecodedTrack, precode
from dragoman.bench.connect import machine
from dragoman.bench.embedded import embedded_process, free_port, internal_url

ON_TIME_GOAL = 0.995
FAKE_KEY = "sk-bench-fake"
RATE = 48000  # what the load clients "record" at (WebRTC Opus)


@dataclass(frozen=True)
class DensityParams:
    step: int = 5  # calls added per step
    max_calls: int = 60
    step_s: float = 20.0  # each step is held this long
    settle_s: float = 6.0  # then measured after this much (answers, connects, first report)
    clients: int = 2  # load client processes
    server_cpus: str = "0"
    ptime_ms: int = 40  # the agents' packet length (DRAGOMAN_AGENT_PTIME_MS)


def speechlike(seconds: float = 3.0) -> np.ndarray:
    """2 s of syllable-rate modulated noise, then 1 s of silence. The fake provider only
    looks at energy, so real speech would cost no more."""
    t = np.arange(int(RATE * 2.0)) / RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    voiced = np.random.default_rng(7).normal(0, 3000, t.size) * envelope
    silence = np.zeros(int(RATE * (seconds - 2.0)))
    return np.concatenate([voiced, silence]).clip(-32000, 32000).astype(np.int16)


# --- load clients (separate processes) ---------------------------------------------------
async def _hold_calls(url: str, starts: list[float], conn: Any) -> list[dict[str, Any]]:
    """Place calls at ``starts``; answer "count" requests on ``conn`` with how many are
    connected; on "stop", hang up and return one row per call."""
    packets = precode(speechlike())
    callers: list[Caller] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def counts() -> dict[str, int]:
        results = [c.result for c in callers]
        return {
            "placed": len(results),
            "answered": sum(1 for r in results if r.status == 201),
            "connected": sum(1 for r in results if r.first_audio_ms is not None),
            "refused": sum(1 for r in results if r.status not in (None, 201)),
        }

    def on_command() -> None:
        while conn.poll():
            cmd = conn.recv()
            if cmd == "count":
                conn.send(counts())
            elif cmd == "stop":
                stop.set()

    loop.add_reader(conn.fileno(), on_command)

    async def one(at: float) -> None:
        try:  # wait for this call's step, unless the ramp ends first
            await asyncio.wait_for(stop.wait(), max(0.0, at - time.time()))
            return
        except TimeoutError:
            pass
        caller = Caller(
            url,
            keep_listening=False,
            provider="openai-translate",
            mic=PrecodedTrack(packets),
        )
        callers.append(caller)
        await caller.call()

    await asyncio.gather(*(one(s) for s in starts), stop.wait())
    loop.remove_reader(conn.fileno())
    for caller in callers:
        if caller.channel_open:
            caller.send({"v": 1, "type": "hangup"})
    await asyncio.sleep(0.5)
    for caller in callers:
        await caller.close()
    return [
        {
            "status": c.result.status,
            "answer_ms": c.result.answer_ms,
            "first_audio_ms": c.result.first_audio_ms,
        }
        for c in callers
    ]


def _client_process(url: str, starts: list[float], conn: Any, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    conn.send(asyncio.run(_hold_calls(url, starts, conn)))


# --- measurements --------------------------------------------------------------------------
FRAMES_SAMPLE = "dragoman_worker_audio_frames_total"


def parse_frame_counts(text: str) -> dict[str, float]:
    """Audio frames sent per outcome (on_time, late) from the worker's Prometheus text."""
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == FRAMES_SAMPLE and "outcome" in sample.labels
    }


def frame_counts(url: str) -> dict[str, float]:
    return parse_frame_counts(httpx.get(f"{internal_url(url)}/metrics", timeout=10).text)


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def call_memory(url: str, sample: int = 6) -> dict[str, float | None]:
    """Median USS/PSS (MB) of processes holding a call (the server lists them)."""
    pids = httpx.get(f"{internal_url(url)}/healthz", timeout=10).json().get("call_pids", [])
    uss, pss = [], []
    for pid in pids[:sample]:
        try:
            info = psutil.Process(pid).memory_full_info()
            uss.append(info.uss / 2**20)
            pss.append(info.pss / 2**20)
        except psutil.Error:
            continue
    return {
        "uss_mb": round(median(uss), 1) if uss else None,
        "pss_mb": round(median(pss), 1) if pss else None,
        "sampled": len(uss),
    }


def _start_fake(port: int, cpus: set[int] | None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dragoman.fakes.server", "--port", str(port), "--key", FAKE_KEY]
    proc = subprocess.Popen(
        cmd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/fake/state", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the fake provider did not start; see {log}")


def _cpus(spec: str) -> set[int]:
    return {int(c) for c in spec.split(",") if c.strip()}


def run(p: DensityParams, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    all_cpus = set(range(psutil.cpu_count() or 1))
    server_cpus = _cpus(p.server_cpus) & all_cpus or all_cpus
    other = (all_cpus - server_cpus) or None
    print(
        f"bench density: server on CPU {sorted(server_cpus)}, fake provider + clients on "
        f"{sorted(other) if other else 'the same CPUs (only one CPU)'}",
        flush=True,
    )
    fake_port = free_port()
    fake = _start_fake(fake_port, other, out / "fake.log")
    env = {
        "DRAGOMAN_PROVIDER": "openai-translate",
        "DRAGOMAN_OPENAI_API_KEY": FAKE_KEY,
        "DRAGOMAN_OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
        "DRAGOMAN_MAX_CALLS": str(p.max_calls + p.step),
        "DRAGOMAN_IDLE_TARGET": str(p.step * 2),
        "DRAGOMAN_IDLE_MEMORY_BUDGET_MB": str(p.step * 2 * 80),
        "DRAGOMAN_NO_MEDIA_TIMEOUT_S": "60",
        "DRAGOMAN_DIRECT_OVERFLOW": "false",
        "DRAGOMAN_AGENT_PTIME_MS": str(p.ptime_ms),
    }
    steps: list[dict[str, Any]] = []
    try:
        print("  starting an embedded dragoman serve (cloud-AI mode, fake provider)…", flush=True)
        with embedded_process(out / "serve.log", cpus=server_cpus, **env) as (url, proc):
            steps = _ramp(url, proc.pid, p, other)
    finally:
        fake.terminate()
        fake.wait(10)
    rep = report(steps, p, len(server_cpus))
    path = out / "density.json"
    path.write_text(json.dumps(rep, indent=2))
    from dragoman.bench.plots import density_plot

    density_plot(steps, ON_TIME_GOAL, out / "density.png", rep["title"])
    print(
        f"  capacity: {rep['calls_at_goal']} calls on {len(server_cpus)} core(s) at ≥ 99.5 % "
        f"on time → {rep['calls_per_core']} calls/core; CPU per call "
        f"{rep['cpu_per_call_pct']} % of a core; call process USS {rep['call_uss_mb']} MB, "
        f"PSS {rep['call_pss_mb']} MB. Saved {path} + density.png",
        flush=True,
    )
    return rep


def _ramp(url: str, pid: int, p: DensityParams, client_cpus: set[int] | None) -> list[dict]:
    n_steps = max(1, p.max_calls // p.step)
    t0 = time.time() + 2.0
    starts = [t0 + k * p.step_s + i * 0.2 for k in range(n_steps) for i in range(p.step)]
    ctx = multiprocessing.get_context("spawn")
    conns, procs = [], []
    for i in range(p.clients):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_client_process, args=(url, starts[i :: p.clients], child, client_cpus)
        )
        proc.start()
        conns.append(parent)
        procs.append(proc)
    steps: list[dict[str, Any]] = []
    try:
        for k in range(n_steps):
            calls = (k + 1) * p.step
            window_start = t0 + k * p.step_s + p.settle_s
            time.sleep(max(0.0, window_start - time.time()))
            frames0, cpu0, w0 = frame_counts(url), tree_cpu_s(pid), time.monotonic()
            time.sleep(max(0.0, t0 + (k + 1) * p.step_s - time.time()))
            frames1, cpu1, w1 = frame_counts(url), tree_cpu_s(pid), time.monotonic()
            clients = _client_counts(conns)
            on_time = frames1.get("on_time", 0) - frames0.get("on_time", 0)
            late = frames1.get("late", 0) - frames0.get("late", 0)
            total = on_time + late
            cores = (cpu1 - cpu0) / (w1 - w0)
            step = {
                "calls": calls,
                "connected": clients["connected"],
                "refused": clients["refused"],
                "frames": int(total),
                "on_time": round(on_time / total, 5) if total else None,
                "server_cores_used": round(cores, 3),
                # Per call that is actually up (the caller hears the agent).
                "cpu_per_call_pct": round(100 * cores / max(1, clients["connected"]), 2),
                **call_memory(url),
            }
            steps.append(step)
            print(
                f"  {calls:4d} calls ({clients['connected']} connected): "
                f"{step['on_time'] if total else 'n/a'} on time "
                f"({int(late)} late of {int(total)} frames), server {cores:.2f} cores "
                f"({step['cpu_per_call_pct']} % of a core per call), USS {step['uss_mb']} MB",
                flush=True,
            )
            if not step_ok(step):
                break
    finally:
        for c in conns:
            c.send("stop")
        for c in conns:
            rows = c.recv() if c.poll(60) else []
            refused = sum(1 for r in rows if r["status"] != 201)
            if refused:
                print(f"  note: {refused} calls were refused by the server", flush=True)
        for proc in procs:
            proc.join(10)
    return steps


def _client_counts(conns: list[Any]) -> dict[str, int]:
    total = {"placed": 0, "answered": 0, "connected": 0, "refused": 0}
    for c in conns:
        c.send("count")
    for c in conns:
        if c.poll(10):
            for k, v in c.recv().items():
                total[k] += v
    return total


def step_ok(step: dict[str, Any]) -> bool:
    """A step meets the goal: every call connected and ≥ 99.5 % of packets on time."""
    return (
        step["on_time"] is not None
        and step["on_time"] >= ON_TIME_GOAL
        and step["connected"] == step["calls"]
    )


def report(steps: list[dict[str, Any]], p: DensityParams, server_cores: int) -> dict[str, Any]:
    good = [s for s in steps if step_ok(s)]
    best = good[-1] if good else None
    calls = best["calls"] if best else 0
    return {
        "params": asdict(p),
        "machine": machine(),
        "server_cores": server_cores,
        "mode": "cloud-AI (openai-translate wire protocol against the local FAKE provider)",
        "on_time_goal": ON_TIME_GOAL,
        "late_threshold_ms": 20,
        "calls_at_goal": calls,
        "calls_per_core": round(calls / server_cores, 1),
        "stopped_by": "goal missed" if len(good) < len(steps) else "max_calls reached",
        "cpu_counted": "every process of the server: api + worker, Janus, the agents, the "
        "(idle) inference service",
        "cpu_per_call_pct": best["cpu_per_call_pct"] if best else None,
        "call_uss_mb": best["uss_mb"] if best else None,
        "call_pss_mb": best["pss_mb"] if best else None,
        "steps": steps,
        "title": f"cloud-AI density, {p.ptime_ms} ms packets, server on {server_cores} core(s) "
        f"of {machine()['cores']}",
    }
