"""``dragoman bench density``: how many concurrent calls one core carries in cloud-AI mode.

Every call runs the agent's full real-time path: WebRTC (ICE, DTLS, SRTP), Opus decode and
encode, Silero VAD, resampling 16→24 kHz, base64/JSON streaming to the provider and back,
paced 24 kHz output. The provider is the local FAKE of OpenAI's realtime translation
(``dragoman.fakes``) in its own process, so no AI time is counted; it answers speech with
synthetic translated audio, so the output path works as hard as in a real call.

The server is pinned to ``--server-cpus`` (default: CPU 0), the fake provider and the
load clients to the other CPUs, so the server's share is known exactly. Calls are added in
steps; after each step settles, the window's punctuality is read from the agents' own
counters (a 20 ms frame is late when it leaves > 20 ms after its slot), with the server's
CPU time and each call process's unique memory (USS/PSS). The ramp stops at the first step
below the on-time goal (99.5 %); the last step that met it is the capacity.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
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

from dragoman.bench.caller import Caller
from dragoman.bench.connect import machine
from dragoman.bench.embedded import embedded_process, free_port

ON_TIME_GOAL = 0.995
FAKE_KEY = "sk-bench-fake"
RATE = 16000


@dataclass(frozen=True)
class DensityParams:
    step: int = 5  # calls added per step
    max_calls: int = 60
    step_s: float = 20.0  # each step is held this long
    settle_s: float = 6.0  # then measured after this much (answers, connects, first report)
    clients: int = 2  # load client processes
    server_cpus: str = "0"


def speechlike(seconds: float = 3.0) -> np.ndarray:
    """2 s of syllable-rate modulated noise, then 1 s of silence. The fake provider only
    looks at energy and the VAD runs the same per frame, so real speech would cost no more."""
    t = np.arange(int(RATE * 2.0)) / RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    voiced = np.random.default_rng(7).normal(0, 3000, t.size) * envelope
    silence = np.zeros(int(RATE * (seconds - 2.0)))
    return np.concatenate([voiced, silence]).clip(-32000, 32000).astype(np.int16)


# --- load clients (separate processes) ---------------------------------------------------
async def _hold_calls(url: str, starts: list[float], conn: Any) -> list[dict[str, Any]]:
    audio = speechlike()
    callers: list[Caller] = []
    rows: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def one(at: float) -> None:
        try:  # wait for this call's step, unless the ramp ends first
            await asyncio.wait_for(stop.wait(), max(0.0, at - time.time()))
            return
        except TimeoutError:
            pass
        caller = Caller(url, send_audio=True, keep_listening=False, provider="openai-translate")
        callers.append(caller)
        result = await caller.call()
        rows.append({"status": result.status, "answer_ms": result.answer_ms})
        while result.status == 201 and not stop.is_set():
            if not caller.mic.playing:
                caller.mic.play(audio)
            await asyncio.sleep(0.25)

    async def wait_stop() -> None:
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        stop.set()

    await asyncio.gather(wait_stop(), *(one(s) for s in starts))
    for caller in callers:
        if caller.channel_open:
            caller.send({"v": 1, "type": "hangup"})
    await asyncio.sleep(0.5)
    for caller in callers:
        await caller.close()
    return rows


def _client_process(url: str, starts: list[float], conn: Any, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    conn.send(asyncio.run(_hold_calls(url, starts, conn)))


# --- measurements --------------------------------------------------------------------------
FRAMES = re.compile(r'^dragoman_worker_audio_frames_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


def frame_counts(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in FRAMES.finditer(text)}


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
    pids = httpx.get(f"{url}/healthz", timeout=10).json().get("call_pids", [])
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
            on_time = frames1.get("on_time", 0) - frames0.get("on_time", 0)
            late = frames1.get("late", 0) - frames0.get("late", 0)
            total = on_time + late
            cores = (cpu1 - cpu0) / (w1 - w0)
            step = {
                "calls": calls,
                "frames": int(total),
                "on_time": round(on_time / total, 5) if total else None,
                "server_cores_used": round(cores, 3),
                "cpu_per_call_pct": round(100 * cores / calls, 2),
                **call_memory(url),
            }
            steps.append(step)
            print(
                f"  {calls:4d} calls: {step['on_time'] if total else 'n/a'} on time "
                f"({int(late)} late of {int(total)} frames), server {cores:.2f} cores, "
                f"USS {step['uss_mb']} MB",
                flush=True,
            )
            if total and on_time / total < ON_TIME_GOAL:
                break
    finally:
        for c in conns:
            c.send("stop")
        for c in conns:
            steps_rows = c.recv() if c.poll(60) else []
            refused = sum(1 for r in steps_rows if r["status"] != 201)
            if refused:
                print(f"  note: {refused} calls were refused by the server", flush=True)
        for proc in procs:
            proc.join(10)
    return steps


def report(steps: list[dict[str, Any]], p: DensityParams, server_cores: int) -> dict[str, Any]:
    good = [s for s in steps if s["on_time"] is not None and s["on_time"] >= ON_TIME_GOAL]
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
        "cpu_per_call_pct": best["cpu_per_call_pct"] if best else None,
        "call_uss_mb": best["uss_mb"] if best else None,
        "call_pss_mb": best["pss_mb"] if best else None,
        "steps": steps,
        "title": f"cloud-AI density, server on {server_cores} core(s) of {machine()['cores']}",
    }
