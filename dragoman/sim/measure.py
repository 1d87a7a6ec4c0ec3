"""``dragoman bench calibrate``: the measurements the fleet simulator is calibrated from.

One command, run on the machine at hand, writes ``results/calibration/``:

* ``connect.json`` — ``bench connect``'s callers (aiortc, press Call → first agent packet)
  at several burst sizes on an idle node, the same burst on a node already carrying
  cloud-AI calls (node load), and one call at a time; with the pool's own fork → ready
  times of the replacement agents forked meanwhile (refill under load) and the measured
  unique memory of an idle agent. The measured calls use the local pipeline, so nothing
  outside the node is on their path; the simulator adds a provider's session start.
* ``direct.json`` — direct-mode overflow on a full node: press Call → the overflow answer
  (the api mints a client secret at the fake provider) → the caller's own WebRTC session
  with the fake provider connected. A round trip to a fake on loopback: the simulator adds
  the network round trips to a real provider (see ``dragoman.sim.calibrate``).
* ``density.json`` — ``bench density`` (calls per core at ≥ 99.5 % of packets on time, CPU
  and memory per call).

The server is pinned to ``--server-cpus`` (default CPU 0, as ``bench density``); the fake
provider and the load clients run on the other CPUs. Compact: per call only what the
simulator reads.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from dragoman.bench.caller import Caller
from dragoman.bench.connect import ConnectParams, machine, run_clients
from dragoman.bench.embedded import embedded_process, free_port, internal_url
from dragoman.bench.stats import summarize

CAL_DIR = Path("results/calibration")
COMMAND = "dragoman bench calibrate"


@dataclass(frozen=True)
class CalibrateParams:
    bursts: tuple[int, ...] = (10, 20, 40)  # simultaneous callers on an idle node
    single_calls: int = 20  # one at a time, 1 s apart (burst size 1)
    load_burst: int = 10  # the burst placed on a loaded node …
    loads: tuple[int, ...] = (10, 20)  # … carrying this many calls already
    direct_calls: int = 10  # direct-mode overflow calls on a full node (a burst)
    density: bool = True  # also run `bench density --step 5 --max-calls 45` …
    density_runs: int = 3  # … this many times, keeping the best (see _density)
    connect: bool = True  # the connect and direct runs (False: only density)
    server_cpus: str = "0"
    clients: int = 2
    repeats: int = 2  # each burst and load run, interleaved (the machine's noise)


def _cpus(spec: str) -> set[int]:
    return {int(c) for c in spec.split(",") if c.strip()}


def _compact(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("press_s", "status", "offer_ms", "answer_ms", "connected_ms", "first_packet_ms")
    out = []
    for r in rows:
        row = {k: r.get(k) for k in keep}
        row["server_ms"] = (r.get("server_timings") or {}).get("total")
        out.append(row)
    return out


def _health(url: str) -> dict[str, Any]:
    return httpx.get(f"{internal_url(url)}/healthz", timeout=10).json()


def _wait_idle(url: str, timeout_s: float = 90.0) -> dict[str, Any]:
    """Until the node has no call and its idle pool is full again."""
    deadline = time.monotonic() + timeout_s
    while True:
        h = _health(url)
        if (h["active_calls"] == 0 and h["idle_agents"] >= h["idle_target"]) or (
            time.monotonic() > deadline
        ):
            return h
        time.sleep(0.5)


class _Background:
    """``n`` calls held on the node by a load client (``bench density``'s: it sends speech-like
    audio, so each agent works as in a real call), until ``stop``."""

    def __init__(self, url: str, n: int, cpus: set[int] | None) -> None:
        from dragoman.bench.density import _client_process

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        starts = [time.time() + 1.0 + 0.2 * i for i in range(n)]
        self.proc = ctx.Process(target=_client_process, args=(url, starts, child, cpus))
        self.proc.start()
        self.n = n

    def wait_connected(self, timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        connected = 0
        while time.monotonic() < deadline:
            self.conn.send("count")
            if self.conn.poll(10):
                connected = self.conn.recv()["connected"]
            if connected >= self.n:
                break
            time.sleep(0.5)
        return connected

    def stop(self) -> None:
        self.conn.send("stop")
        if self.conn.poll(60):
            self.conn.recv()
        self.proc.join(10)


def _connect_run(
    url: str, p: CalibrateParams, burst: int, background: int, client_cpus: set[int] | None
) -> dict[str, Any]:
    single = burst == 1
    cp = ConnectParams(
        calls=p.single_calls if single else burst,
        pattern="ramp" if single else "burst",
        duration_s=float(p.single_calls) if single else 10.0,
        clients=1 if single else p.clients,
        hold_s=1.0 if single else 2.0,
    )
    _wait_idle(url)
    bg = _Background(url, background, client_cpus) if background else None
    try:
        up = bg.wait_connected() if bg else 0
        if bg:
            time.sleep(3.0)  # settle: the background calls' agents at work
        before = _health(url).get("agent_ready_ms", [])
        rows = run_clients(url, cp, on_progress=lambda _m: None)
        time.sleep(1.0)  # the replacements forked as its calls ended become ready
        after = _health(url).get("agent_ready_ms", [])
    finally:
        if bg:
            bg.stop()
    ok = [r for r in rows if r["status"] == 201]
    # The pool keeps its last 64 fork → ready times: this run's are the new ones.
    ready = after[len(before) :] if len(after) > len(before) else after[-len(ok) :]
    run = {
        "burst": burst,
        "background_calls": background,
        "background_connected": up,
        "pattern": cp.pattern,
        "calls": len(rows),
        "refused": len(rows) - len(ok),
        "first_packet_ms": summarize([r["first_packet_ms"] for r in ok]),
        "server_ms": summarize([(r.get("server_timings") or {}).get("total") for r in ok]),
        # Agents forked to replace this run's calls (fork requested → ready), while the
        # node still carried its background calls.
        "agent_ready_ms": ready,
        "per_call": _compact(rows),
    }
    fp = run["first_packet_ms"]
    print(
        f"  burst {burst:3d} on {background:2d} calls: first packet p50 {fp['p50']} ms, "
        f"p95 {fp['p95']} ms; refused {run['refused']}",
        flush=True,
    )
    return run


async def _direct_call(url: str, http: httpx.AsyncClient) -> dict[str, Any]:
    """Press Call on a full fleet: the overflow answer, then the page's own session with the
    provider (offer posted to ``call_url`` with the minted secret) until it is connected."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    caller = Caller(url, provider="openai-translate", send_audio=False)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: pc.connectionState == "connected" and connected.set())
    t0 = time.perf_counter()
    row: dict[str, Any] = {"status": None, "answer_ms": None, "connected_ms": None}
    try:
        result = await caller.call(http)
        row["status"] = result.status
        row["answer_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        if result.direct is None:
            return row
        from dragoman.bench.caller import PcmTrack

        pc.addTransceiver(PcmTrack(send=False), direction="sendrecv")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        resp = await http.post(
            result.direct["call_url"],
            content=pc.localDescription.sdp,
            headers={
                "Authorization": f"Bearer {result.direct['client_secret']}",
                "Content-Type": "application/sdp",
            },
        )
        row["provider_status"] = resp.status_code
        if resp.status_code != 201:
            return row
        await pc.setRemoteDescription(RTCSessionDescription(resp.text, "answer"))
        await asyncio.wait_for(connected.wait(), 10)
        row["connected_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return row
    except (TimeoutError, httpx.HTTPError) as e:
        row["error"] = repr(e)
        return row
    finally:
        await pc.close()
        await caller.close()


async def _direct_burst(url: str, n: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n + 2)) as http:
        return await asyncio.gather(*(_direct_call(url, http) for _ in range(n)))


def _start_fake(out: Path, cpus: set[int] | None) -> tuple[Any, str]:
    from dragoman.bench.density import _start_fake as start

    port = free_port()
    return start(port, cpus, out / "fake.log"), f"http://127.0.0.1:{port}/v1"


def _cloud_env(
    fake_url: str, max_calls: int, overflow: bool, provider: str = "openai-translate"
) -> dict[str, str]:
    from dragoman.bench.density import FAKE_KEY

    return {
        "DRAGOMAN_PROVIDER": provider,
        "DRAGOMAN_OPENAI_API_KEY": FAKE_KEY,
        "DRAGOMAN_OPENAI_BASE_URL": fake_url,
        "DRAGOMAN_MAX_CALLS": str(max_calls),
        # Cover every slot with an idle agent (the budget is not what is measured here).
        "DRAGOMAN_IDLE_MEMORY_BUDGET_MB": str(max_calls * 80),
        "DRAGOMAN_NO_MEDIA_TIMEOUT_S": "60",
        "DRAGOMAN_DIRECT_OVERFLOW": "true" if overflow else "false",
        # Not the default ranges: a `dragoman serve` of someone else on this machine (a
        # test run) must not make Janus' or the agents' binds fail.
        "DRAGOMAN_MEDIA_PORT_RANGE": "46000-46999",
        "DRAGOMAN_MEDIA_PLAIN_PORT_RANGE": "47000-47999",
        "DRAGOMAN_AGENT_RTP_PORT_RANGE": "48000-48999",
    }


def run(p: CalibrateParams, out: Path = CAL_DIR, work: Path | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    work = work or Path("results/calibration-work")
    work.mkdir(parents=True, exist_ok=True)
    all_cpus = set(range(psutil.cpu_count() or 1))
    server_cpus = _cpus(p.server_cpus) & all_cpus or all_cpus
    other = (all_cpus - server_cpus) or None
    if other:
        os.sched_setaffinity(0, other)  # load clients are spawned from here: they inherit it
    print(
        f"{COMMAND}: server on CPU {sorted(server_cpus)}, fake provider + load clients on "
        f"{sorted(other) if other else 'the same CPUs'}",
        flush=True,
    )
    connect: dict[str, Any] = {}
    direct: dict[str, Any] = {}
    if p.connect:
        connect, direct = _connect_and_direct(p, out, work, server_cpus, other)
    density = _density(p, out, work) if p.density else None
    print(f"saved {out}/connect.json, direct.json" + (", density.json" if density else ""))
    return {"connect": connect, "direct": direct, "density": density}


def _density(p: CalibrateParams, out: Path, work: Path) -> dict[str, Any]:
    """``bench density`` ``density_runs`` times; the run with the most calls per core is
    kept, the others are listed. Other processes on the machine (a shared box) can only make
    packets later, never earlier, so the best run is the closest to a node of its own."""
    from dragoman.bench.density import DensityParams
    from dragoman.bench.density import run as density_run

    runs = []
    for k in range(max(1, p.density_runs)):
        runs.append(
            density_run(
                DensityParams(step=5, max_calls=45, server_cpus=p.server_cpus, clients=p.clients),
                work / f"density-{k + 1}",
            )
        )
    best = max(runs, key=lambda r: (r["calls_per_core"], -(r["cpu_per_call_pct"] or 100)))
    density = {
        **best,
        "command": COMMAND,
        "runs_calls_per_core": [r["calls_per_core"] for r in runs],
        "runs_cpu_per_call_pct": [r["cpu_per_call_pct"] for r in runs],
        "kept": "the run with the most calls per core (contention only lowers it)",
    }
    (out / "density.json").write_text(json.dumps(density, indent=1))
    return density


def _connect_and_direct(
    p: CalibrateParams, out: Path, work: Path, server_cpus: set[int], other: set[int] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    fake, fake_url = _start_fake(work, other)
    try:
        cap = max([*p.bursts, p.load_burst + max(p.loads, default=0), 2])
        runs: list[dict[str, Any]] = []
        # The measured callers use the node's default provider, the local pipeline: nothing
        # outside the node is on their path (a provider's session start is added by the
        # simulator). Background calls are cloud-AI calls against the fake provider.
        env = _cloud_env(fake_url, cap, overflow=False, provider="local")
        with embedded_process(work / "serve.log", cpus=server_cpus, **env) as (url, _proc):
            start = _wait_idle(url)
            runs.append(_connect_run(url, p, 1, 0, other))
            for _ in range(p.repeats):
                for b in p.bursts:
                    runs.append(_connect_run(url, p, b, 0, other))
                for n in p.loads:
                    runs.append(_connect_run(url, p, p.load_burst, n, other))
        connect = {
            "command": COMMAND,
            "what": "press Call → first agent packet (aiortc callers on loopback, local "
            "pipeline: no provider on the path); background calls are cloud-AI calls "
            "sending speech-like audio against the local fake provider; callers, background "
            "clients and the fake share the CPUs the server is not pinned to",
            "machine": machine(),
            "server_cpus": len(server_cpus),
            "node_capacity_slots": cap,
            "idle_agent_mb": start.get("idle_agent_mb"),
            "params": asdict(p),
            "runs": runs,
        }
        (out / "connect.json").write_text(json.dumps(connect, indent=1))

        direct: dict[str, Any] = {}
        if p.direct_calls:
            env = _cloud_env(fake_url, 1, overflow=True)
            with embedded_process(work / "serve-direct.log", cpus=server_cpus, **env) as (
                url,
                _proc,
            ):
                _wait_idle(url)
                bg = _Background(url, 1, other)  # the node's one slot is taken: overflow
                try:
                    bg.wait_connected()
                    rows = asyncio.run(_direct_burst(url, p.direct_calls))
                finally:
                    bg.stop()
            direct = {
                "command": COMMAND,
                "what": "press Call on a full node → overflow answer (secret minted at the "
                "fake provider) → the caller's WebRTC session with the fake provider "
                "connected; all on loopback, a burst of simultaneous callers",
                "machine": machine(),
                "calls": len(rows),
                "connected": sum(1 for r in rows if r.get("connected_ms") is not None),
                "connected_ms": summarize([r.get("connected_ms") for r in rows]),
                "per_call": rows,
            }
            (out / "direct.json").write_text(json.dumps(direct, indent=1))
            print(
                f"  direct overflow: {direct['connected']}/{direct['calls']} connected, "
                f"p50 {direct['connected_ms']['p50']} ms, p95 {direct['connected_ms']['p95']} ms",
                flush=True,
            )
    finally:
        fake.terminate()
        fake.wait(10)
    return connect, direct
