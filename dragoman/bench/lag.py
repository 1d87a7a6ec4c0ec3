"""``dragoman bench lag``: how far behind a continuous talk the interpreter stays, for
simultaneous and consecutive interpretation in one run (local pipeline, embedded server).

A talk of Kokoro Japanese sentences joined by short pauses (``lag_talk``) is played into
one call per mode (``"interpretation"`` in ``POST /v1/calls``). The client records every
control message and every received audio frame; afterwards (``lag_report``), for each
sentence: the translation captions that cover it (by the agent's source timestamps, on a
clock mapped onto the client's — see ``lag_measure``), the first audible audio received after
such a caption, and that minus the sentence's end as played. Also: the first translated
audio after the talk started, the talk's end → last caption / last translated audio, the
lag's least-squares trend, the key words that reached the captions, and the inference
service's CPU-seconds per second of talk (its process, found in the serve's process tree).
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
import numpy as np
import psutil

from dragoman.bench.caller import AUDIBLE_RMS, Caller, PcmTrack
from dragoman.bench.connect import machine
from dragoman.bench.embedded import embedded_process, internal_url
from dragoman.bench.lag_measure import Span, clock_origin, covered_by_final, open_lines
from dragoman.bench.lag_report import TARGET, TODAY, Recording, analyse, table, verdicts
from dragoman.bench.lag_talk import Talk, make_talk
from dragoman.config import Settings

MODES = ("consecutive", "simultaneous")
CHIME_MAX_S = 8.0  # the connect chime plays before the talk, never over it
QUIET_S = 3.0  # after the talk: done when the last sentence is translated and all is quiet
GIVE_UP_QUIET_S = 20.0  # …or when nothing at all came for this long (it was dropped)
SETTLE_S = 1.5  # after the talk: at least this long before "done" is judged
DRAIN_MAX_S = 90.0  # after the talk: give up waiting for the interpreter
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class LagParams:
    talk_s: float = 60.0
    pause_s: float = 0.3
    modes: tuple[str, ...] = MODES


class TalkMic(PcmTrack):
    """The caller's microphone, noting when a talk's first sample went out (the clock every
    sentence's onset and end are counted from)."""

    def __init__(self) -> None:
        super().__init__()
        self.talk_at: float | None = None
        self._talk_left: int | None = None  # samples of the talk not yet sent

    def play_talk(self, pcm: np.ndarray) -> None:
        assert not self.playing, "the talk starts on an empty queue"
        self.talk_at, self._talk_left = None, len(pcm)
        self.play(pcm)

    async def recv(self) -> Any:
        frame = await super().recv()
        # The frame that took the talk's first samples was just handed to the sender.
        if self._talk_left is not None and len(self._pending) < self._talk_left:
            self.talk_at, self._talk_left = time.monotonic(), None
        return frame


# --- the inference service's CPU --------------------------------------------------------
def inference_process(serve_pid: int, url: str) -> psutil.Process | None:
    """The node's inference service: the serve's descendant whose pid the health view
    names, else the spawned interpreter that is neither the forkserver nor a tracker."""
    tree = psutil.Process(serve_pid).children(recursive=True)
    try:
        health = httpx.get(f"{internal_url(url)}/healthz", timeout=5).json()
        named = health.get("inference", {}).get("pid")
    except (httpx.HTTPError, ValueError):
        named = None
    for p in tree:
        if p.pid == named:
            return p
    for p in tree:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd and "forkserver" not in cmd and "tracker" not in cmd:
            return p
    return None


def cpu_seconds(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    try:
        t = proc.cpu_times()
    except psutil.Error:  # restarted mid-run: no before/after pair
        return None
    return t.user + t.system


# --- one call -----------------------------------------------------------------------------
def _last_audible(caller: Caller) -> float:
    res = caller.result
    return next(
        (
            t
            for t, r in zip(reversed(res.audio_at), reversed(res.audio_rms), strict=False)
            if r > AUDIBLE_RMS
        ),
        0.0,
    )


def _last_state(messages: list[dict[str, Any]]) -> str | None:
    return next((m["state"] for m in reversed(messages) if m.get("type") == "state"), None)


def _last_news(caller: Caller) -> float:
    """When the last caption or state message came."""
    res = caller.result
    return next(
        (
            at
            for m, at in zip(reversed(res.messages), reversed(res.message_at), strict=True)
            if m.get("type") in ("caption", "state")
        ),
        0.0,
    )


async def _quiet_for(caller: Caller, quiet_s: float, max_s: float) -> None:
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and time.monotonic() - _last_audible(caller) < quiet_s:
        await asyncio.sleep(0.05)


def _done(caller: Caller, talk: Talk, talk_at: float, now: float) -> bool:
    """The interpreter has finished with the talk: its last sentence has a final translation
    (a state alone cannot say so: consecutive mode is "listening" again after one turn's
    speech while the next turn is still being translated), nothing is open and all is quiet
    — or nothing at all has come for ``GIVE_UP_QUIET_S``."""
    res = caller.result
    last = talk.sentences[-1]
    if now < talk_at + last.end_s + SETTLE_S:
        return False
    quiet = now - max(_last_audible(caller), _last_news(caller))
    if quiet >= GIVE_UP_QUIET_S:
        return True
    if quiet < QUIET_S or open_lines(res.messages) or _last_state(res.messages) == "speaking":
        return False
    origin, _, _ = clock_origin(res.messages, talk_at + talk.sentences[0].start_s)
    return origin is not None and covered_by_final(
        res.messages,
        res.message_at,
        origin,
        Span(talk_at + last.start_s, talk_at + last.end_s),
    )


async def record_mode(
    url: str,
    mode: str,
    talk: Talk,
    inference: psutil.Process | None,
    say: Callable[[str], None],
) -> Recording:
    """One call in ``mode``: the talk played once, everything received recorded."""
    mic = TalkMic()
    caller = Caller(
        url, source="ja", target="en", keep_listening=True, mic=mic, interpretation=mode
    )
    rec = Recording(mode)
    try:
        result = await caller.call()
        if result.status != 201:
            rec.error = f"the call was refused ({result.status}): {result.error}"
            return rec
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 15)
        await _quiet_for(caller, 0.8, CHIME_MAX_S)
        cpu0 = cpu_seconds(inference)
        mic.play_talk(talk.pcm)
        next_note = time.monotonic() + PROGRESS_EVERY_S
        while mic.playing or mic.talk_at is None:
            await asyncio.sleep(0.05)
            if time.monotonic() >= next_note and mic.talk_at is not None:
                next_note += PROGRESS_EVERY_S
                say(
                    f"  {mode}: {time.monotonic() - mic.talk_at:.0f} of {talk.duration_s:.0f} s "
                    f"talked, {_translations(caller)} translation lines so far"
                )
        assert mic.talk_at is not None
        talk_end = mic.talk_at + talk.sentences[-1].end_s
        say(f"  {mode}: talk over; waiting for the interpreter to finish…")
        deadline = talk_end + DRAIN_MAX_S
        while not _done(caller, talk, mic.talk_at, time.monotonic()):
            if time.monotonic() > deadline:
                say(f"  {mode}: still busy {DRAIN_MAX_S:.0f} s after the talk; measuring what came")
                break
            await asyncio.sleep(0.1)
        cpu1 = cpu_seconds(inference)
        rec.cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        rec.talk_at = mic.talk_at
        res = caller.result
        rec.messages, rec.message_at = list(res.messages), list(res.message_at)
        rec.audio_at, rec.audio_rms = list(res.audio_at), list(res.audio_rms)
        rec.in_force = next(
            (
                m.get("interpretation")
                for m in reversed(res.messages)
                if m.get("type") == "languages"
            ),
            None,
        )
        if caller.channel_open:
            caller.send({"v": 1, "type": "hangup"})
            await asyncio.sleep(0.2)
    except (TimeoutError, httpx.HTTPError) as e:
        rec.error = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        await caller.close()
    return rec


def _translations(caller: Caller) -> int:
    return len(
        {
            m.get("id")
            for m in caller.result.messages
            if m.get("type") == "caption" and m.get("side") == "translation"
        }
    )


async def record_all(
    url: str,
    modes: tuple[str, ...],
    talk: Talk,
    inference: psutil.Process | None,
    say: Callable[[str], None],
) -> list[Recording]:
    recs = []
    for mode in modes:
        say(f"  {mode}: calling…")
        recs.append(await record_mode(url, mode, talk, inference, say))
        r = recs[-1]
        if r.error:
            say(f"  {mode}: {r.error}")
        elif r.in_force != mode:
            say(
                f"  {mode}: WARNING the agent interprets {r.in_force!r}, not {mode!r} "
                "(a server that predates the choice?)"
            )
    return recs


# --- the command --------------------------------------------------------------------------
def report(p: LagParams, talk: Talk, recs: list[Recording]) -> dict[str, Any]:
    modes = {r.mode: analyse(r, talk) for r in recs}
    sim = modes.get("simultaneous")
    return {
        "params": asdict(p),
        "machine": machine(),
        "talk": {
            "duration_s": round(talk.duration_s, 2),
            "pause_s": talk.pause_s,
            "sentences": [
                {
                    "sentence": s.index,
                    "text": s.text,
                    "start_s": round(s.start_s, 2),
                    "end_s": round(s.end_s, 2),
                    "keys": [list(k) for k in s.keys],
                }
                for s in talk.sentences
            ],
        },
        "consecutive_today": TODAY,
        "targets": TARGET,
        "modes": modes,
        "verdicts": verdicts(sim, modes.get("consecutive")) if sim else None,
    }


def raw(rec: Recording) -> dict[str, Any]:
    """What a call recorded, times in seconds after the talk's first sample: enough to
    analyse the run again (``lag_report.analyse``) or to see what the agent sent."""
    t0 = rec.talk_at
    return {
        "mode": rec.mode,
        "error": rec.error,
        "cpu_s": rec.cpu_s,
        "messages": [
            [round(at - t0, 3), m] for m, at in zip(rec.messages, rec.message_at, strict=True)
        ],
        "audio": [
            [round(at - t0, 3), round(r)]
            for at, r in zip(rec.audio_at, rec.audio_rms, strict=True)
            if at >= t0
        ],
    }


def main(p: LagParams, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(line, flush=True)

    cache = Settings().cache_dir / "bench" / "lag-talk"
    say(f"bench lag: making a talk of ≥ {p.talk_s:g} s (Kokoro, cached in {cache})…")
    talk = make_talk(p.talk_s, p.pause_s, cache, say)
    say(f"  {len(talk.sentences)} sentences, {talk.duration_s:.1f} s, pauses {p.pause_s:g} s")
    say("  starting an embedded dragoman serve (local pipeline)…")
    with embedded_process(out / "serve.log", DRAGOMAN_MAX_CALLS="2") as (url, proc):
        inference = inference_process(proc.pid, url)
        if inference is None:
            say("  WARNING: no inference service found in the serve's tree: no CPU figures")
        recs = asyncio.run(record_all(url, p.modes, talk, inference, say))
    rep = report(p, talk, recs)
    (out / "lag.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False))
    (out / "lag-raw.json").write_text(json.dumps([raw(r) for r in recs], ensure_ascii=False))
    from dragoman.bench.plots import lag_timeline

    lag_timeline(
        talk_spans=[(s["start_s"], s["end_s"]) for s in rep["talk"]["sentences"]],
        modes={name: m for name, m in rep["modes"].items() if not m.get("error")},
        title=f"continuous talk → interpretation ({rep['machine']['cores']} cores)",
        path=out / "lag.png",
    )
    say("")
    say(table(rep["modes"], talk.duration_s))
    for name, m in rep["modes"].items():
        if "clock" in m:
            say(f"  {name}: talk placed on the agent's clock by {m['clock']['method']}")
    say(f"  saved {out / 'lag.json'} + lag.png (+ lag-raw.json: what each call received)")
    return rep
