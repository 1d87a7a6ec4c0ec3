"""``bench soak --fleet N``: the soak against a fleet on network-namespace "hosts".

One namespace runs ``redis-server`` and ``dragoman api`` (Redis registry); each of N others
runs a ``dragoman worker`` (its own Janus, inference service, forkserver and agents). The
callers and the provider fake stay in the root namespace, on the bridge. ``FleetView`` is
what ``soak.Node`` is for ``serve``: health, metrics and processes, summed over the workers,
so the same churn, sampling and verdicts run against either. On top of the node faults it
injects the fleet's own: a Redis restart (no persistence: the registry starts empty), a
worker ``kill -9`` (its children must die with it) and restart, and a drain of one worker
(SIGTERM: it finishes its calls and exits) and restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis.asyncio as aioredis

from dragoman.bench.embedded import NO_ABUSE_LIMITS
from dragoman.bench.netns import Host, HostNet, dragoman_exe, redis_argv
from dragoman.bench.soak_observe import (
    agents_and_zombies,
    process_stats,
    quiescent_of,
    read_counters,
)
from dragoman.bench.soak_plan import Quiescent

API_PORT = 8000
API_INTERNAL_PORT = 9000  # the api's default internal port (port + 1000)
WORKER_PORT = 8100
REDIS_PORT = 6379
START_MAX_S = 300.0
DRAIN_EXIT_MAX_S = 90.0


@dataclass
class WorkerHost:
    name: str
    host: Host
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    down: bool = False  # killed or draining: not expected whole until restarted

    @property
    def url(self) -> str:
        return f"http://{self.host.ip}:{WORKER_PORT}"


@dataclass
class FleetRecord:
    """What the fleet's own faults left for the verdicts."""

    orphans: list[dict[str, Any]] = field(default_factory=list)  # survived their worker
    # Each worker kill -9: its last report's counts, when it died and when it came back
    # (``soak_plan.calls_lost_with_workers`` counts the calls that died with it).
    kills: list[dict[str, Any]] = field(default_factory=list)
    restarts: dict[str, list[float]] = field(default_factory=dict)  # worker → restart times
    redis_restarts: int = 0


class Fleet:
    """The processes: a bridge, namespaces, Redis, the api and the workers."""

    def __init__(self, workers: int, out: Path, max_calls: int, idle_target: int) -> None:
        self.out = out
        self.net = HostNet()
        self.env = {
            **os.environ,
            "DRAGOMAN_LOG_LEVEL": "WARNING",
            "DRAGOMAN_INTERNAL_TOKEN": secrets.token_hex(16),
            **NO_ABUSE_LIMITS,
            # On (but never binding) so the registry's concurrency holds are exercised.
            "DRAGOMAN_CONCURRENT_CALLS_PER_IP": "10000",
        }
        self.n = workers
        self.max_calls = max_calls
        self.idle_target = idle_target
        self.api_host: Host | None = None
        self.redis: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.workers: list[WorkerHost] = []
        self.record = FleetRecord()

    @property
    def gateway(self) -> str:
        return self.net.gateway

    @property
    def registry(self) -> str:
        assert self.api_host is not None
        return f"redis://{self.api_host.ip}:{REDIS_PORT}/0"

    @property
    def url(self) -> str:
        assert self.api_host is not None
        return f"http://{self.api_host.ip}:{API_PORT}"

    @property
    def internal(self) -> str:
        assert self.api_host is not None
        return f"http://{self.api_host.ip}:{API_INTERNAL_PORT}"

    def up(self) -> None:
        """The bridge and the hosts; nothing runs on them yet (``start``)."""
        self.net.up()
        self.api_host = self.net.add_host("api")
        for i in range(1, self.n + 1):
            host = self.net.add_host(f"w{i}")
            self.workers.append(WorkerHost(f"w{i}", host, {}, self.out / f"w{i}.log"))

    def start(self, env: dict[str, str]) -> None:
        """Redis, the api and the workers, each with ``env`` on top of the fleet's own."""
        assert self.api_host is not None
        self.env.update(env)
        self.start_redis()
        argv = [dragoman_exe(), "api", "--host", self.api_host.ip, "--port", str(API_PORT)]
        self.api = self.api_host.popen(
            [*argv, "--registry", self.registry], self.env, self.out / "api.log"
        )
        for w in self.workers:
            w.env = {
                **self.env,
                "DRAGOMAN_REGISTRY": self.registry,
                "DRAGOMAN_NODE_ID": w.name,
                "DRAGOMAN_WORKER_HOST": w.host.ip,
                "DRAGOMAN_WORKER_PORT": str(WORKER_PORT),
                "DRAGOMAN_MAX_CALLS": str(self.max_calls),
                "DRAGOMAN_IDLE_TARGET": str(self.idle_target),
            }
            self.start_worker(w)

    def start_redis(self) -> None:
        assert self.api_host is not None
        with (self.out / "redis.log").open("a") as log:
            self.redis = subprocess.Popen(
                ["ip", "netns", "exec", self.api_host.ns, *redis_argv(self.api_host.ip)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_worker(self, w: WorkerHost) -> None:
        w.starts += 1
        with w.log.open("a") as log:
            log.write(f"\n--- start {w.starts} ---\n")
        with w.log.open("a") as log:
            w.proc = subprocess.Popen(
                ["ip", "netns", "exec", w.host.ns, dragoman_exe(), "worker"],
                env=w.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def host_pids(self, w: WorkerHost) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", w.host.ns], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def reap_orphans(self, w: WorkerHost, at_s: float) -> None:
        """Whatever still runs in a dead worker's namespace outlived it: record and kill."""
        for pid in self.host_pids(w):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                self.record.orphans.append(
                    {"at_s": at_s, "worker": w.name, "pid": pid, "cmd": " ".join(p.cmdline())[:120]}
                )
                p.kill()

    def down(self) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.wait(30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
        for p in (self.api, self.redis):
            if p is not None and p.poll() is None:
                p.kill()
        self.net.down()


@contextlib.contextmanager
def fleet(workers: int, out: Path, max_calls: int, idle_target: int) -> Iterator[Fleet]:
    """A fleet's hosts, up (``Fleet.start`` starts its processes); all removed afterwards."""
    f = Fleet(workers, out, max_calls, idle_target)
    try:
        f.up()
        yield f
    finally:
        f.down()


def _merge_counts(into: dict[str, float], more: dict[str, Any]) -> None:
    for k, v in more.items():
        if isinstance(v, int | float):
            into[k] = into.get(k, 0) + v


class FleetView:
    """The fleet, seen from outside as one node (``soak.Node``'s interface)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.url = fleet.url
        self.internal = fleet.internal
        self.http = httpx.AsyncClient(timeout=5)
        # (worker, pid) → its last outcomes / calls_total: a restarted worker starts at 0.
        self._outcomes: dict[tuple[str, int], dict[str, int]] = {}
        self._totals: dict[tuple[str, int], int] = {}
        self._pids: dict[tuple[str, int], dict[str, Any]] = {}

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            return (await self.http.get(url)).json()
        except (httpx.HTTPError, ValueError):
            return {}

    async def worker_health(self, w: WorkerHost) -> dict[str, Any]:
        h = await self._get(f"{w.url}/healthz")
        if h and w.proc is not None:
            key = (w.name, w.proc.pid)
            self._outcomes[key] = dict(h.get("outcomes") or {})
            self._totals[key] = int(h.get("calls_total") or 0)
            self._pids[key] = h
        return h

    async def health(self) -> dict[str, Any]:
        api = await self._get(f"{self.internal}/healthz")
        ws = await asyncio.gather(*(self.worker_health(w) for w in self.fleet.workers))
        outcomes: dict[str, float] = {}
        for o in self._outcomes.values():
            _merge_counts(outcomes, o)
        killed: dict[str, float] = {}
        for h in ws:
            _merge_counts(killed, (h.get("supervision") or {}).get("killed") or {})
        handles = [(h.get("media") or {}).get("janus_handles") for h in ws if h]
        sessions = [(h.get("media") or {}).get("janus_sessions") for h in ws if h]
        live = [h for h in ws if h]
        return {
            "status": api.get("status"),
            "nodes": api.get("nodes"),
            "active_calls": sum(h.get("active_calls", 0) for h in live),
            "idle_agents": sum(h.get("idle_agents", 0) for h in live),
            "starting_agents": sum(h.get("starting_agents", 0) for h in live),
            "capacity": sum(h.get("capacity", 0) for h in live),
            "free_slots": api.get("free_slots"),
            "fleet_active_calls": api.get("fleet_active_calls"),
            "calls_total": sum(self._totals.values()),
            "outcomes": {k: int(v) for k, v in outcomes.items()},
            "call_pids": sorted(p for h in live for p in h.get("call_pids") or []),
            "media": {
                "up": all((h.get("media") or {}).get("up") for h in live) and len(live) > 0,
                "janus_handles": None if None in handles else sum(handles),  # type: ignore[arg-type]
                "janus_sessions": None if None in sessions else sum(sessions),  # type: ignore[arg-type]
            },
            "inference": {"up": all((h.get("inference") or {}).get("up") for h in live)},
            "supervision": {"killed": {k: int(v) for k, v in killed.items()}},
            "workers": {w.name: h for w, h in zip(self.fleet.workers, ws, strict=True)},
        }

    async def metrics(self) -> dict[str, dict[str, float]]:
        """The api's call requests by outcome; ends by reason summed over every worker
        process seen (a killed worker's last report included)."""
        out = await read_counters(self.http, self.internal)
        ended: dict[str, float] = {}
        for o in self._outcomes.values():
            _merge_counts(ended, o)
        return {**out, "ended": ended} if out else out

    def pids(self, h: dict[str, Any]) -> dict[str, int | None]:
        f = self.fleet
        pids: dict[str, int | None] = {
            "api": f.api.pid if f.api else None,
            "redis": f.redis.pid if f.redis else None,
        }
        for w in f.workers:
            wh = (h.get("workers") or {}).get(w.name) or {}
            pids[w.name] = w.proc.pid if w.proc and w.proc.poll() is None else None
            pids[f"{w.name}.janus"] = (wh.get("media") or {}).get("pid")
            pids[f"{w.name}.inference"] = (wh.get("inference") or {}).get("pid")
            pids[f"{w.name}.forkserver"] = (wh.get("supervision") or {}).get("forkserver_pid")
        return pids

    def processes(self, h: dict[str, Any]) -> dict[str, Any]:
        pids = self.pids(h)
        agents = zombies = 0
        for w in self.fleet.workers:
            a, z = agents_and_zombies(pids.get(w.name), pids.get(f"{w.name}.forkserver"))
            agents, zombies = agents + a, zombies + z
        procs = process_stats(pids, frozenset({REDIS_PORT, WORKER_PORT}))
        return {"procs": procs, "agents": agents, "zombies": zombies}

    async def quiescent(self) -> tuple[Quiescent, dict[str, Any]]:
        h = await self.health()
        pr = await asyncio.to_thread(self.processes, h)
        return quiescent_of(h, pr, self.fleet.n), h

    def whole(self, h: dict[str, Any]) -> bool:
        """Every worker back and ready, the api sees them all in the registry."""
        workers = h.get("workers") or {}
        return (
            h.get("status") == "ok"
            and h.get("nodes") == self.fleet.n
            and all(
                (wh.get("state") == "READY")
                and (wh.get("media") or {}).get("up")
                and (wh.get("inference") or {}).get("up")
                and wh.get("idle_agents", 0) > 0
                for wh in workers.values()
            )
            and len(workers) == self.fleet.n
        )

    def fault_pid(self, kind: str, h: dict[str, Any], rng: random.Random) -> int | None:
        """Janus or the inference service of a worker chosen from the seed."""
        w = rng.choice(self.fleet.workers)
        role = {"janus_kill": "janus", "inference_stop": "inference"}[kind]
        return self.pids(h).get(f"{w.name}.{role}")

    async def fleet_fault(
        self, kind: str, hold_s: float, rng: random.Random, t0: float
    ) -> int | None:
        """Inject one of the fleet's own faults; returns the pid it hit."""
        f = self.fleet
        if kind == "redis_restart":
            assert f.redis is not None
            pid = f.redis.pid
            f.redis.kill()
            f.redis.wait()
            try:
                await asyncio.sleep(hold_s)
            finally:  # also when the run is interrupted
                f.start_redis()
                f.record.redis_restarts += 1
            return pid
        w = rng.choice(f.workers)
        assert w.proc is not None
        pid = w.proc.pid
        h = await self.worker_health(w)  # its last counts, just before it goes
        w.down = True
        try:
            if kind == "worker_kill":
                w.proc.kill()
                w.proc.wait()
                kill = {
                    "worker": w.name,
                    "killed_s": round(time.monotonic() - t0, 3),
                    "calls_total": int(h.get("calls_total") or 0),
                    "active_calls": int(h.get("active_calls") or 0),
                }
                f.record.kills.append(kill)
                await asyncio.sleep(hold_s)
            else:  # worker_drain: SIGTERM; it finishes its calls, deregisters and exits
                w.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + DRAIN_EXIT_MAX_S
                while w.proc.poll() is None and time.monotonic() < deadline:
                    await self.worker_health(w)
                    await asyncio.sleep(0.25)
            await asyncio.sleep(1.0)  # children notice their parent is gone (pdeathsig)
        finally:  # also when the run is interrupted: the worker comes back either way
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            f.reap_orphans(w, round(time.monotonic() - t0, 2))
            f.record.restarts.setdefault(w.name, []).append(round(time.monotonic() - t0, 3))
            f.start_worker(w)
            w.down = False
        return pid

    async def registry_keys(self) -> dict[str, int]:
        """What Redis still holds for calls: call records, node call-set entries, and
        concurrency holds that still count (an ended call's entry is pruned lazily, at the
        key's next admission, and the key expires: those are not leaks)."""
        r = aioredis.from_url(self.fleet.registry)
        try:
            calls = [k async for k in r.scan_iter("dragoman:call:*")]
            in_sets = 0
            async for k in r.scan_iter("dragoman:node:*"):
                if k.endswith((b":calls", b":local")):
                    in_sets += int(await r.zcard(k))
            live_holds = stale = 0
            async for k in r.scan_iter("dragoman:hold:*"):
                for member in await r.zrange(k, 0, -1):
                    call = member.decode()
                    ended = await r.exists(f"dragoman:ended:{call}")
                    if not ended and await r.exists(f"dragoman:call:{call}"):
                        live_holds += 1
                    else:
                        stale += 1
            return {
                "call_records": len(calls),
                "node_call_entries": in_sets,
                "live_holds": live_holds,
                "stale_hold_entries_not_counted": stale,
            }
        finally:
            await r.aclose()


async def wait_ready(view: FleetView, max_s: float = START_MAX_S) -> None:
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        if view.whole(await view.health()):
            return
        for w in view.fleet.workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited at start; see {w.log}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the fleet was not ready after {max_s:g} s; logs in {view.fleet.out}")
