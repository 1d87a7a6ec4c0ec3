"""What a soak reads off a node's processes, for ``soak.Node`` (serve) and
``soak_fleet.FleetView`` (api + workers) alike: RSS and fds per process role, the agent
processes (a forkserver's children) and zombies under a parent, and the node at rest."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from dragoman.bench.soak_plan import Quiescent


def process_stats(
    pids: dict[str, int | None], pooled_ports: frozenset[int] = frozenset()
) -> dict[str, dict[str, Any]]:
    """RSS (MB) and open fds of each role's process (gone or unknown ones left out), and
    ``pooled``: its TCP connections to ``pooled_ports`` (Redis, the workers' endpoint),
    and from them (a worker's inbound pool from the api), which client pools keep open and grow
    with concurrency — not a leak."""
    procs: dict[str, dict[str, Any]] = {}
    for role, pid in pids.items():
        if pid is None:
            continue
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            with p.oneshot():
                procs[role] = {
                    "pid": pid,
                    "rss_mb": round(p.memory_info().rss / 2**20, 2),
                    "fds": p.num_fds(),
                }
            if pooled_ports:
                procs[role]["pooled"] = pooled_sockets(pid, pooled_ports)
    return procs


def pooled_sockets(pid: int, ports: frozenset[int]) -> int:
    """``pid``'s TCP sockets with either end on one of ``ports``, read from its own
    ``/proc/<pid>/net/tcp*`` (psutil reads the caller's network namespace: a process on a
    namespace host showed none)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                f = line.split()
                if len(f) < 10 or f[9] not in inodes:
                    continue
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in (f[1], f[2]))
                if local in ports or remote in ports:
                    count += 1
    return count


def agents_and_zombies(parent: int | None, forkserver: int | None) -> tuple[int, int]:
    """Under ``parent`` (serve or a worker): the forkserver's live children (agent
    processes) and the defunct processes."""
    agents = zombies = 0
    if parent is None:
        return 0, 0
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(parent).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.status() == psutil.STATUS_ZOMBIE:
                    zombies += 1
                elif p.ppid() == forkserver:
                    agents += 1
    return agents, zombies


def quiescent_of(h: dict[str, Any], pr: dict[str, Any], nodes: int = 1) -> Quiescent:
    """The node (or fleet) at rest, from its health (``h``) and its processes (``pr``)."""
    media = h.get("media") or {}
    return Quiescent(
        active_calls=h.get("active_calls", -1),
        idle_agents=h.get("idle_agents", -1),
        starting_agents=h.get("starting_agents", -1),
        agent_processes=pr["agents"],
        zombies=pr["zombies"],
        janus_handles=media.get("janus_handles"),
        janus_sessions=media.get("janus_sessions"),
        fleet_active_calls=h.get("fleet_active_calls") or 0,
        free_slots=h.get("free_slots") or 0,
        capacity=h.get("capacity") or 0,
        fds={r: v["fds"] - v.get("pooled", 0) for r, v in pr["procs"].items()},
        nodes=nodes,
    )


async def read_counters(http: httpx.AsyncClient, internal: str) -> dict[str, dict[str, float]]:
    """The counters a soak follows from ``internal``'s /metrics: call requests by outcome
    (``api_calls``) and calls ended by reason (``ended``; a worker's, when it has them)."""
    try:
        text = (await http.get(f"{internal}/metrics")).text
    except httpx.HTTPError:
        return {}
    out: dict[str, dict[str, float]] = {"api_calls": {}, "ended": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "dragoman_api_calls_total":
                out["api_calls"][s.labels["outcome"]] = s.value
            elif s.name == "dragoman_worker_calls_ended_total":
                out["ended"][s.labels["reason"]] = s.value
    return out
