"""``dragoman bench capacity --provider local``: how many local-pipeline talkers one node
serves, per interpretation mode.

N simulated callers (aiortc, real calls through Janus) talk at once to an embedded
``dragoman serve`` whose local capacity is set high enough to admit them all. Each talks
the way people do in a call: Kokoro Japanese sentences drawn from a pool (cached like
``bench lag``), 1–2 s pauses, a random lead so the callers are out of step
(``capacity_plan.schedule``, seeded). For each step (N) and mode the client measures every
sentence's end → the first audible translated audio after the caption that covers it
(``lag_report.analyse``), and the node its inference queue waits (the worker's ``/healthz``
``inference.stt``) and CPU (psutil over the serve's process tree). The largest N meeting the
mode's target (``capacity_plan.TARGETS``) is the node's local capacity, printed per core.
The callers run on the same machine as the server: on a small box they take CPU from it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from dragoman.bench.caller import AUDIBLE_RMS, RATE, Caller
from dragoman.bench.capacity_plan import (
    TARGETS,
    WITHIN_S,
    build_talk,
    capacity,
    lag_figures,
    queue_wait,
    schedule,
    speech_share,
    step_ok,
    trim,
)
from dragoman.bench.connect import machine
from dragoman.bench.density import tree_cpu_s
from dragoman.bench.embedded import embedded_process, internal_url
from dragoman.bench.lag import TalkMic, cpu_seconds, inference_process
from dragoman.bench.lag_report import Recording, analyse
from dragoman.bench.lag_talk import SENTENCES, Talk, sentence_clips
from dragoman.config import Settings

MODES = ("consecutive", "simultaneous")
CHIME_MAX_S = 8.0  # the connect chime plays before the talk, never over it
SAMPLE_EVERY_S = 1.0  # the inference queue's depth is sampled this often
PROGRESS_EVERY_S = 10.0
SETTLE_MAX_S = 30.0  # between steps: until the last step's calls are gone


@dataclass(frozen=True)
class CapacityParams:
    steps: tuple[int, ...] = (1, 2, 3)
    modes: tuple[str, ...] = MODES
    talk_s: float = 20.0  # each caller's talk per step
    pause_s: tuple[float, float] = (1.0, 2.0)
    sentences: int = 12  # the pool's size (the first of lag_talk.SENTENCES)
    seed: int = 1
    all_steps: bool = False  # go on after a mode's first failed step
    provider: str = "local"


Say = Callable[[str], None]


def make_talks(clips: list[Any], p: CapacityParams, n: int, step_seed: int) -> list[Talk]:
    """One talk per caller of a step, each with its own seed."""
    durations = [len(c) / RATE for c in clips]
    texts = [t for t, _ in SENTENCES[: len(clips)]]
    keys = [k for _, k in SENTENCES[: len(clips)]]
    mean_pause = sum(p.pause_s) / 2
    return [
        build_talk(
            clips,
            texts,
            keys,
            schedule(durations, p.talk_s, step_seed * 1000 + i, p.pause_s),
            mean_pause,
        )
        for i in range(n)
    ]


async def _healthz(url: str) -> dict[str, Any]:
    """The node's health view ({} when it does not answer: a busy node's gap, not an end)."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(f"{internal_url(url)}/healthz")).json()
    except (httpx.HTTPError, ValueError):
        return {}


def _stt(h: dict[str, Any]) -> dict[str, Any] | None:
    return (h.get("inference") or {}).get("stt")


async def _after_chime(caller: Caller) -> None:
    """Wait for the agent to listen and its connect chime to end."""
    await caller.wait_for(lambda m: m.get("state") == "listening", 20)
    deadline = time.monotonic() + CHIME_MAX_S
    while time.monotonic() < deadline:
        res = caller.result
        heard = zip(reversed(res.audio_at), reversed(res.audio_rms), strict=True)
        last = next((t for t, r in heard if r > AUDIBLE_RMS), 0.0)
        if time.monotonic() - last >= 0.8:
            return
        await asyncio.sleep(0.05)


async def _connect(url: str, mode: str, provider: str) -> tuple[Caller, TalkMic, str | None]:
    mic = TalkMic()
    caller = Caller(
        url,
        source="ja",
        target="en",
        keep_listening=True,
        mic=mic,
        interpretation=mode,
        provider=provider,
    )
    try:
        result = await caller.call()
        if result.status != 201:
            return caller, mic, f"refused ({result.status}): {result.error}"
        await caller.wait_open()
        await _after_chime(caller)
    except (TimeoutError, httpx.HTTPError) as e:
        return caller, mic, f"{type(e).__name__}: {str(e)[:200]}"
    return caller, mic, None


async def run_step(
    url: str,
    serve_pid: int,
    inference: psutil.Process | None,
    mode: str,
    talks: list[Talk],
    provider: str,
    say: Say,
) -> dict[str, Any]:
    """N calls at once, each playing its talk; figures for the step."""
    n = len(talks)
    joined = await asyncio.gather(*(_connect(url, mode, provider) for _ in talks))
    callers = [c for c, _, _ in joined]
    errors = [e for _, _, e in joined if e]
    try:
        if errors:
            return {"calls": n, "mode": mode, "ok": False, "error": "; ".join(errors)}
        h0, cpu0, inf0 = await _healthz(url), tree_cpu_s(serve_pid), cpu_seconds(inference)
        w0 = time.monotonic()
        for (_, mic, _), talk in zip(joined, talks, strict=True):
            mic.play_talk(talk.pcm)
        depth: list[int] = []
        end = w0 + max(t.sentences[-1].end_s for t in talks) + WITHIN_S + 0.5
        next_note = w0 + PROGRESS_EVERY_S
        while time.monotonic() < end:
            await asyncio.sleep(SAMPLE_EVERY_S)
            stt = _stt(await _healthz(url)) or {}
            depth.append(sum((stt.get("queued") or {}).values()))
            if time.monotonic() >= next_note:
                next_note += PROGRESS_EVERY_S
                say(
                    f"    {mode} N={n}: {time.monotonic() - w0:.0f} of "
                    f"{end - w0:.0f} s, inference queue {depth[-1]}"
                )
        h1, cpu1, inf1 = await _healthz(url), tree_cpu_s(serve_pid), cpu_seconds(inference)
        w1 = time.monotonic()
        analysed = []
        for caller, mic, _ in joined:
            res = caller.result
            rec = Recording(
                mode,
                talk_at=mic.talk_at or w0,
                messages=list(res.messages),
                message_at=list(res.message_at),
                audio_at=list(res.audio_at),
                audio_rms=list(res.audio_rms),
            )
            analysed.append(analyse(rec, talks[len(analysed)]))
    finally:
        for c in callers:
            if c.channel_open:
                c.send({"v": 1, "type": "hangup"})
        await asyncio.sleep(0.3)
        await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)
    lags: list[float | None] = []
    for a, talk in zip(analysed, talks, strict=True):
        # A call the talk could not be placed on (no caption at all): all its sentences lost.
        lags += (
            [None] * len(talk.sentences)
            if a.get("error")
            else [r["lag_s"] for r in a["per_sentence"]]
        )
    fig = lag_figures(lags)
    wall = w1 - w0
    step = {
        "calls": n,
        "mode": mode,
        **fig,
        "ok": step_ok(mode, fig),
        "queue_wait": queue_wait(_stt(h0), _stt(h1)),
        "queue_depth_max": max(depth, default=0),
        "node_cores": round((cpu1 - cpu0) / wall, 2),
        "inference_cores": None if inf0 is None or inf1 is None else round((inf1 - inf0) / wall, 2),
        "seconds": round(wall, 1),
        "speech_share": round(
            sum(s.end_s - s.start_s for t in talks for s in t.sentences)
            / sum(t.sentences[-1].end_s - t.sentences[0].start_s for t in talks),
            2,
        ),
        "caller_errors": [a["error"] for a in analysed if a.get("error")],
        "interpretation_in_force": sorted(
            {
                str(m.get("interpretation"))
                for c in callers
                for m in c.result.messages
                if m.get("type") == "languages"
            }
        ),
    }
    return step


async def _settle(url: str) -> None:
    """Until the last step's calls are gone, the idle pool is refilled and the inference
    queue's counters are known."""
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        h = await _healthz(url)
        # The worker's first ping of the inference service may not have come yet: the
        # queue's counters must exist before a step begins.
        if (
            h.get("active_calls", 0) == 0
            and h.get("idle_agents", 0) >= h.get("idle_target", 0)
            and _stt(h) is not None
        ):
            return
        await asyncio.sleep(0.5)


async def run_all(
    url: str, serve_pid: int, p: CapacityParams, clips: list[Any], say: Say
) -> list[dict[str, Any]]:
    inference = inference_process(serve_pid, url)
    if inference is None:
        say("  WARNING: no inference service found in the serve's tree: no inference CPU")
    steps: list[dict[str, Any]] = []
    for mode in p.modes:
        for k, n in enumerate(p.steps):
            talks = make_talks(clips, p, n, p.seed * 100 + k)
            say(f"  {mode}, N={n}: {sum(len(t.sentences) for t in talks)} sentences…")
            await _settle(url)
            step = await run_step(url, serve_pid, inference, mode, talks, p.provider, say)
            steps.append(step)
            say("    " + line(step))
            if not step["ok"] and not p.all_steps:
                say(f"  {mode}: N={n} misses the target; higher N not tried (--all-steps)")
                break
    return steps


def line(s: dict[str, Any]) -> str:
    if s.get("error"):
        return f"{s['mode']} N={s['calls']}: ERROR {s['error']}"
    wait = s["queue_wait"].get("final") or {}
    return (
        f"{s['mode']} N={s['calls']}: p50 {s['p50_s']} s, p95 {s['p95_s']} s, max {s['max_s']} s "
        f"({s['untranslated']} of {s['sentences']} untranslated in {WITHIN_S:g} s); final queue "
        f"wait mean {wait.get('mean_ms')} ms; node {s['node_cores']} cores, inference "
        f"{s['inference_cores']} → {'meets' if s['ok'] else 'misses'} the target"
    )


def report(p: CapacityParams, steps: list[dict[str, Any]]) -> dict[str, Any]:
    cores = machine()["cores"]
    per_mode = {}
    for mode in p.modes:
        ms = [s for s in steps if s["mode"] == mode]
        n = capacity(ms)
        per_mode[mode] = {
            "target": TARGETS[mode],
            "capacity_calls": n,
            "capacity_per_core": round(n / cores, 2),
            "steps": ms,
        }
    return {
        "params": asdict(p),
        "machine": machine(),
        "cores": cores,
        "within_s": WITHIN_S,
        "note": "callers (aiortc) run on the same cores as the server; percentiles are "
        "nearest-rank over every sentence of the step, a sentence untranslated within "
        f"{WITHIN_S:g} s counting as infinitely late",
        "modes": per_mode,
    }


def main(p: CapacityParams, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(text, flush=True)

    cache = Settings().cache_dir / "bench" / "lag-talk"
    say(f"bench capacity: a pool of {p.sentences} Kokoro sentences (cached in {cache})…")
    clips = [trim(c) for c in sentence_clips(p.sentences, cache, say)]
    durations = [len(c) / RATE for c in clips]
    # Over a long stretch: a short talk's share is mostly its rounding.
    share = speech_share(durations, schedule(durations, 600.0, p.seed, p.pause_s))
    lo, hi = p.pause_s
    say(f"  talks of ~{p.talk_s:g} s, pauses {lo:g}–{hi:g} s, ~{share:.0%} of the time speech")
    top = max(p.steps)
    env = {
        "DRAGOMAN_PROVIDER": p.provider,
        "DRAGOMAN_MAX_CALLS": str(top + 1),
        "DRAGOMAN_LOCAL_CAPACITY": str(top + 1),  # measure past the placeholder default
        "DRAGOMAN_IDLE_TARGET": str(top + 1),
        "DRAGOMAN_DIRECT_OVERFLOW": "false",
    }
    say(f"  starting an embedded dragoman serve ({p.provider} pipeline, {top + 1} slots)…")
    with embedded_process(out / "serve.log", **env) as (url, proc):
        steps = asyncio.run(run_all(url, proc.pid, p, clips, say))
    rep = report(p, steps)
    (out / "capacity.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False))
    from dragoman.bench.plots import capacity_plot

    capacity_plot(
        {m: v["steps"] for m, v in rep["modes"].items()},
        TARGETS,
        f"local-pipeline talkers per node ({rep['cores']} cores, callers on the same box)",
        out / "capacity.png",
    )
    say("")
    for mode, v in rep["modes"].items():
        say(
            f"  {mode}: local capacity {v['capacity_calls']} talkers = "
            f"{v['capacity_per_core']} per core (target {v['target']})"
        )
    say(f"  saved {out / 'capacity.json'} + capacity.png")
    return rep
