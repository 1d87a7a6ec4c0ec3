"""`dragoman bench registry`: reservation throughput of the Redis registry.

Many concurrent clients reserve a slot and release it again, against a few live nodes with
room for every client, so what is measured is the atomic reserve (a Lua script) and its
round trips, not refusals. Keys go under a fresh prefix and are removed afterwards, so a
shared Redis is left as it was.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from dragoman.bench.connect import machine
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.redis_registry import RedisRegistry
from dragoman.fleet.registry import NodeReport

NODES = 4


@dataclass(frozen=True)
class RegistryParams:
    url: str
    pairs: int = 5000  # reserve+release pairs
    concurrency: int = 50


async def measure(p: RegistryParams, progress: float = 1.0) -> float:
    """Reserve+release pairs per second; prints how many are done every ``progress`` s."""
    prefix = f"dragoman-bench-{uuid.uuid4().hex[:8]}"
    registry = RedisRegistry(p.url, prefix=prefix)
    ids = [f"bench-{i}" for i in range(NODES)]
    try:
        for node_id in ids:
            report = NodeReport(node_id, f"http://{node_id}", p.concurrency, 0, NodeState.READY)
            await registry.register(report)
        remaining = p.pairs

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                call_id = uuid.uuid4().hex
                # Each pair ranks the nodes from a different one, as several api replicas would.
                ranked = ids[remaining % NODES :] + ids[: remaining % NODES]
                if await registry.reserve(call_id, ranked, ttl_s=10) is None:
                    raise RuntimeError("bench reservation refused")
                await registry.release(call_id)

        async def report_progress() -> None:
            while True:
                await asyncio.sleep(progress)
                print(f"  {p.pairs - max(0, remaining):,}/{p.pairs:,} pairs", flush=True)

        ticker = asyncio.create_task(report_progress())
        start = time.perf_counter()
        try:
            await asyncio.gather(*(client() for _ in range(p.concurrency)))
        finally:
            ticker.cancel()
        return p.pairs / (time.perf_counter() - start)
    finally:
        for node_id in ids:
            await registry.remove_node(node_id)
        await registry.close()
        await _forget(p.url, prefix)


async def _forget(url: str, prefix: str) -> None:
    # Released calls leave markers that would expire within minutes: remove them now.
    redis = Redis.from_url(url)
    try:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.unlink(key)
    finally:
        await redis.aclose()


def redacted(url: str) -> str:
    """The URL without its password, for output and the saved report."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def main(p: RegistryParams, out: Path) -> dict[str, Any]:
    print(
        f"bench registry: {p.pairs:,} reserve+release pairs, {p.concurrency} concurrent, "
        f"against {redacted(p.url)}",
        flush=True,
    )
    rate = asyncio.run(measure(p))
    rep = {
        "params": {**asdict(p), "url": redacted(p.url)},
        "machine": machine(),
        "pairs_per_s": round(rate, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "registry.json"
    path.write_text(json.dumps(rep, indent=2))
    print(f"  {rate:,.0f} reservations/s (reserve+release pairs, {p.concurrency} concurrent)")
    print(f"  saved {path}", flush=True)
    return rep
