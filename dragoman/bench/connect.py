"""``dragoman bench connect``: press Call → answer → ICE connected → first agent audio.

This first version runs calls from one client process, in waves of ``--concurrency``;
it is enough to time a single call honestly. (Arrival patterns, several client processes
and plots belong to the benchmark issue.)
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from dragoman.bench.caller import Caller, CallResult
from dragoman.bench.embedded import embedded_server
from dragoman.bench.stats import summarize

AUDIO_WAIT_S = 10.0


async def one_call(url: str, client: httpx.AsyncClient) -> CallResult:
    caller = Caller(url)
    try:
        result = await caller.call(client)
        if result.status != 201:
            return result
        deadline = time.monotonic() + AUDIO_WAIT_S
        while result.first_audio_ms is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if caller.channel_open:
            caller.send({"v": 1, "type": "hangup"})
        await asyncio.sleep(0.1)
        return result
    finally:
        await caller.close()


async def run(url: str, calls: int, concurrency: int) -> list[CallResult]:
    results: list[CallResult] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for start in range(0, calls, concurrency):
            n = min(concurrency, calls - start)
            results += await asyncio.gather(*(one_call(url, client) for _ in range(n)))
            print(f"  {len(results)}/{calls} calls done", flush=True)
            await asyncio.sleep(0.5)  # let the pool refill between waves
    return results


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def report(results: list[CallResult], params: dict[str, Any]) -> dict[str, Any]:
    ok = [r for r in results if r.status == 201]
    return {
        "params": params,
        "machine": machine(),
        "calls": len(results),
        "refused": sum(1 for r in results if r.status != 201),
        "no_audio": sum(1 for r in ok if r.first_audio_ms is None),
        "press_to_answer_ms": summarize([r.answer_ms for r in ok]),
        "press_to_connected_ms": summarize([r.connected_ms for r in ok]),
        "press_to_first_audio_ms": summarize([r.first_audio_ms for r in ok]),
        "server_dispatch_ms": summarize([r.server_timings.get("total") for r in ok]),
        "per_call": [
            {k: v for k, v in asdict(r).items() if k not in ("messages", "audio_rms")}
            for r in results
        ],
    }


def main(url: str | None, calls: int, concurrency: int, out: Path) -> dict[str, Any]:
    params = {"url": url or "embedded", "calls": calls, "concurrency": concurrency}
    print(f"bench connect: {calls} calls, {concurrency} at a time", flush=True)
    if url is None:
        env = {"DRAGOMAN_MAX_CALLS": str(max(concurrency, 2))}
        with embedded_server(out / "serve.log", **env) as embedded_url:
            results = asyncio.run(run(embedded_url, calls, concurrency))
    else:
        results = asyncio.run(run(url, calls, concurrency))
    rep = report(results, params)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "connect.json"
    path.write_text(json.dumps(rep, indent=2))
    for key in ("press_to_answer_ms", "press_to_connected_ms", "press_to_first_audio_ms"):
        s = rep[key]
        print(f"  {key:26s} p50 {s['p50']}  p95 {s['p95']}  max {s['max']}  (n={s['count']})")
    print(f"  refused {rep['refused']}, no audio {rep['no_audio']}; saved {path}")
    return rep
