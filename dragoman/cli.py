"""The one entry point.

``serve``   api + worker + in-memory registry in one command (no external service)
``api``     a stateless control-plane replica (Redis registry)
``worker``  one per node: the pre-forked agent pool and its internal endpoint
``bench``   measurements
``simulate`` the fleet under a call trace: connect times, refusals, KRW per user-minute
``token``   mint a call ticket (signed with DRAGOMAN_CALL_TOKEN_SECRET) for testing
``providers check`` a short session per configured cloud provider (after setting keys)
``ops dashboard`` print the Grafana dashboard (deploy/grafana/dragoman.json)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dragoman import logs, tracing
from dragoman.config import Settings

if TYPE_CHECKING:  # imported when used: the CLI starts fast
    from dragoman.http.tls import Certificate


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    given = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "internal_port": getattr(args, "internal_port", None),
        "max_calls": getattr(args, "max_calls", None),
        "registry": getattr(args, "registry", None),
        "node_id": getattr(args, "node_id", None),
        "worker_host": getattr(args, "worker_host", None),
        "worker_port": getattr(args, "worker_port", None),
        "https": getattr(args, "https", None),
        **extra,
    }
    settings = _load_settings(**{k: v for k, v in given.items() if v is not None})
    logs.setup(settings)
    return settings


def _load_settings(**values: Any) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings(**values)
    except ValidationError as e:
        lines = [
            f"  DRAGOMAN_{'_'.join(str(x) for x in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        ]
        raise SystemExit("invalid settings:\n" + "\n".join(lines)) from None


def _say(message: str) -> None:
    print(message, flush=True)


def _internal(settings: Settings) -> tuple[str, int]:
    """Where health, metrics and the autoscale view listen (the api's internal port)."""
    assert settings.internal_port is not None  # Settings fills its default
    return settings.internal_host or settings.host, settings.internal_port


def _open_registry(settings: Settings) -> Any:
    if settings.registry == "memory":
        from dragoman.fleet.memory_registry import MemoryRegistry

        return MemoryRegistry(node_ttl_s=settings.node_ttl_s)
    if settings.registry.startswith(("redis://", "rediss://", "unix://")):
        from dragoman.fleet.redis_registry import RedisRegistry

        return RedisRegistry(settings.registry, node_ttl_s=settings.node_ttl_s)
    raise SystemExit(f"unknown registry {settings.registry!r}: use 'memory' or a redis:// URL")


def _require_token(settings: Settings) -> str:
    if not settings.internal_token:
        raise SystemExit("DRAGOMAN_INTERNAL_TOKEN must be set (the api ↔ worker shared secret)")
    return settings.internal_token


def _say_admission(settings: Settings) -> None:
    if settings.call_token_secret is None:
        _say(
            "admission: OPEN — anyone who can reach this server may start calls "
            "(development). For public use set DRAGOMAN_CALL_TOKEN_SECRET: see the README, "
            "'Running it in public'."
        )
    else:
        _say("admission: call tickets required (DRAGOMAN_CALL_TOKEN_SECRET is set)")


def _token(args: argparse.Namespace) -> int:
    from dragoman.api.tickets import mint

    settings = _load_settings()
    if settings.call_token_secret is None:
        raise SystemExit(
            "DRAGOMAN_CALL_TOKEN_SECRET is not set: there is nothing to sign a ticket with "
            "(and a server without it needs no ticket)"
        )
    if args.ttl > settings.call_token_max_ttl_s:
        raise SystemExit(
            f"--ttl {args.ttl} is over DRAGOMAN_CALL_TOKEN_MAX_TTL_S "
            f"({settings.call_token_max_ttl_s}): the server would refuse it"
        )
    providers = [p.strip() for p in args.providers.split(",")] if args.providers else None
    if providers is not None:
        from dragoman.pipeline.providers.catalog import PROVIDERS

        unknown = sorted(set(providers) - set(PROVIDERS))
        if unknown:  # a typo would mint a ticket no call can use
            raise SystemExit(f"--providers: unknown {unknown}; known: {', '.join(PROVIDERS)}")
    print(
        mint(
            settings.call_token_secret.get_secret_value(),
            args.sub,
            args.ttl,
            providers=providers,
            direct=args.direct,
            max_call_s=args.max_call_s,
        )
    )
    return 0


def _run_node(
    service: Any,
    registry: Any,
    make_app: Callable[[Any], Any],
    host: str,
    port: int,
    *,
    started: Callable[[], None],
    draining: str,
    stopped: str,
    internal: tuple[str, int] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> int:
    """Run a process that hosts a node (``serve``, ``worker``): the node starts with the app
    (``make_app(lifespan)``), the first signal drains its calls, the second ends them."""
    from fastapi import FastAPI

    from dragoman.http.server import run_app

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start(on_progress=_say)
        started()
        try:
            yield
        finally:
            await service.stop()  # already drained when a signal started the shutdown
            await registry.close()
            _say(stopped)

    async def drain() -> None:
        _say(draining)
        await service.stop()

    run_app(
        make_app(lifespan),
        host,
        port,
        drain=drain,
        on_force=service.end_calls_now,
        internal=internal,
        tls=tls,
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from dragoman.api import metrics
    from dragoman.api.app import create_app
    from dragoman.fleet.dispatcher import Dispatcher
    from dragoman.fleet.worker_client import LocalWorkerClient
    from dragoman.worker.service import WorkerService

    settings = _settings(args, registry="memory")
    tracing.setup("api", "worker")  # one process, both roles: a fleet's services in a trace
    registry = _open_registry(settings)
    service = WorkerService(settings, registry)
    local = LocalWorkerClient(service)
    dispatcher = Dispatcher(
        registry, lambda _address: local, settings.reservation_ttl_s, settings.retry_after_s
    )
    dispatcher.on_conflict = metrics.RESERVATION_CONFLICTS.inc
    host, port = _internal(settings)
    tls = _tls(settings)
    scheme = "https" if tls else "http"

    def started() -> None:
        _say_admission(settings)
        _say(f"dragoman is ready: open {scheme}://{settings.host}:{settings.port}")
        if tls:
            from dragoman.http.tls import ANY, lan_addresses

            if settings.host in ANY:
                for address in lan_addresses():
                    _say(f"  from a phone on this network: https://{address}:{settings.port}")
            _say(f"  certificate SHA-256 fingerprint: {tls.fingerprint}")
        _say(f"health, metrics, autoscale: http://{host}:{port} (internal port)")

    return _run_node(
        service,
        registry,
        lambda lifespan: create_app(
            settings,
            dispatcher,
            lifespan=lifespan,
            local_calls=service.calls,
            local_metrics=service.report,
        ),
        settings.host,
        settings.port,
        started=started,
        draining="draining calls (Ctrl-C again to end them now)…",
        stopped="stopped cleanly",
        internal=(host, port),
        tls=(tls.cert, tls.key) if tls else None,
    )


def _tls(settings: Settings) -> Certificate | None:
    """The public port's certificate (``http.tls.Certificate``), or None for plain HTTP."""
    if not (settings.https or settings.tls_cert):
        return None
    from dragoman.http import tls

    if settings.tls_cert is not None and settings.tls_key is not None:
        return tls.given(settings.tls_cert, settings.tls_key)
    made = tls.self_signed(tls.host_names(settings.host))
    _say(f"made a self-signed certificate for {', '.join(made.names)}")
    return made


def _api(args: argparse.Namespace) -> int:
    import httpx
    from fastapi import FastAPI

    from dragoman.api import metrics
    from dragoman.api.app import create_app
    from dragoman.fleet.dispatcher import Dispatcher
    from dragoman.fleet.worker_client import HttpWorkerClient
    from dragoman.http.server import run_app

    settings = _settings(args)
    tracing.setup("api")
    token = _require_token(settings)
    registry = _open_registry(settings)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))
    dispatcher = Dispatcher(
        registry,
        lambda address: HttpWorkerClient(address, http, token, settings.handoff_timeout_s),
        settings.reservation_ttl_s,
        settings.retry_after_s,
    )
    dispatcher.on_conflict = metrics.RESERVATION_CONFLICTS.inc

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _say(
            f"dragoman api on http://{settings.host}:{settings.port} (registry {settings.registry})"
        )
        _say_admission(settings)
        try:
            yield
        finally:
            await http.aclose()
            await registry.close()

    app = create_app(settings, dispatcher, lifespan=lifespan)
    run_app(app, settings.host, settings.port, internal=_internal(settings))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from dragoman.worker.app import create_worker_app
    from dragoman.worker.service import WorkerService

    settings = _settings(args)
    tracing.setup("worker")
    token = _require_token(settings)
    registry = _open_registry(settings)
    service = WorkerService(settings, registry)
    return _run_node(
        service,
        registry,
        lambda lifespan: create_worker_app(service, token, lifespan=lifespan),
        settings.worker_host,
        settings.worker_port,
        started=lambda: None,
        draining=f"node {settings.node_id} draining…",
        stopped=f"node {settings.node_id} drained; exiting",
    )


def _bench_connect(args: argparse.Namespace) -> int:
    from dragoman.bench.connect import ConnectParams
    from dragoman.bench.connect import main as bench_main

    params = ConnectParams(
        calls=args.calls,
        pattern=args.pattern,
        duration_s=args.duration,
        clients=args.clients,
        hold_s=args.hold,
        url=args.url,
    )
    rep = bench_main(params, Path(args.out))
    return 0 if rep["refused"] == 0 and rep["no_audio"] == 0 else 1


def _bench_density(args: argparse.Namespace) -> int:
    from dragoman.bench.density import DensityParams, run

    params = DensityParams(
        step=args.step,
        max_calls=args.max_calls,
        step_s=args.step_seconds,
        clients=args.clients,
        server_cpus=args.server_cpus,
        ptime_ms=args.ptime,
    )
    rep = run(params, Path(args.out))
    return 0 if rep["steps"] else 1


def _bench_latency(args: argparse.Namespace) -> int:
    from dragoman.bench.latency import LatencyParams, main

    rep = main(
        LatencyParams(sentences=args.sentences, voice=args.voice, url=args.url, room=args.room),
        Path(args.out),
    )
    return 0 if rep["failed"] == 0 else 1


def _bench_lag(args: argparse.Namespace) -> int:
    from dragoman.bench.lag import MODES, LagParams, main

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: a comma-separated list of {', '.join(MODES)}")
    rep = main(LagParams(talk_s=args.talk_s, pause_s=args.pause_s, modes=modes), Path(args.out))
    return 0 if all(not m.get("error") for m in rep["modes"].values()) else 1


def _bench_capacity(args: argparse.Namespace) -> int:
    from dragoman.bench.capacity import MODES, CapacityParams, main

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: a comma-separated list of {', '.join(MODES)}")
    try:
        steps = tuple(sorted({int(n) for n in args.steps.split(",") if n.strip()}))
        lo, hi = (float(x) for x in args.pause_s.split(","))
    except ValueError as e:
        raise SystemExit("--steps: e.g. 1,2,3; --pause-s: e.g. 1,2") from e
    if not steps or steps[0] < 1 or not 0 <= lo <= hi:
        raise SystemExit("--steps: positive call counts; --pause-s: min,max")
    params = CapacityParams(
        steps=steps,
        modes=modes,
        talk_s=args.talk_s,
        pause_s=(lo, hi),
        sentences=args.sentences,
        seed=args.seed,
        all_steps=args.all_steps,
        provider=args.provider,
    )
    rep = main(params, Path(args.out))
    return 0 if all(s.get("sentences") for m in rep["modes"].values() for s in m["steps"]) else 1


def _bench_soak(args: argparse.Namespace) -> int:
    from dragoman.bench.soak import SoakParams, main
    from dragoman.bench.soak_plan import FAULT_KINDS, FLEET_FAULT_KINDS

    allowed = FAULT_KINDS + (FLEET_FAULT_KINDS if args.fleet else ())
    if args.faults is None:
        kinds = allowed
    else:
        kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    if any(k not in allowed for k in kinds):
        fleet_only = "" if args.fleet else f" ({', '.join(FLEET_FAULT_KINDS)} need --fleet)"
        raise SystemExit(f"--faults: a comma-separated list of {', '.join(allowed)}{fleet_only}")
    params = SoakParams(
        fleet=args.fleet,
        idle_target=args.idle_target,
        duration_s=args.duration_s,
        rate_per_s=args.rate,
        median_call_s=args.median_call_s,
        seed=args.seed,
        faults_per_kind=args.faults_per_kind,
        fault_kinds=kinds,
        max_calls=args.max_calls,
    )
    rep = main(params, Path(args.out))
    return 0 if rep["passed"] else 1


def _bench_registry(args: argparse.Namespace) -> int:
    from dragoman.bench.registry_burst import RegistryParams, main

    main(RegistryParams(args.url, args.pairs, args.concurrency), Path(args.out))
    return 0


def _bench_whisper_window(args: argparse.Namespace) -> int:
    from dragoman.bench.whisper_window import WindowParams, run

    params = WindowParams(
        sentences=args.sentences,
        windows=args.windows,
        growing=args.growing,
        repeats=args.repeats,
        threads=args.threads,
    )
    run(params, Path(args.out), say=_say)
    return 0


def _bench_calibrate(args: argparse.Namespace) -> int:
    from dragoman.sim.measure import CalibrateParams, run

    params = CalibrateParams(
        bursts=tuple(int(x) for x in args.bursts.split(",")),
        loads=tuple(int(x) for x in args.loads.split(",")) if args.loads else (),
        direct_calls=args.direct_calls,
        density=not args.no_density,
        density_runs=args.density_runs,
        connect=not args.density_only,
        server_cpus=args.server_cpus,
    )
    run(params, Path(args.out))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from dragoman.sim.engine import SimParams
    from dragoman.sim.run import compare, sweep
    from dragoman.sim.run import main as sim_main

    given = {
        "trace": args.trace,
        "profile": args.profile,
        "direct": False if args.no_direct else None,
        "slots_per_node": args.slots,
        "idle_target": args.idle_target,
        "floor_slots": args.floor,
        "max_nodes": args.max_nodes,
        "headroom": args.headroom,
        "node_ready_s": args.node_ready,
        "interval_s": args.interval,
        "scaler": args.scaler,
        "scale_down": args.scale_down,
        "no_idle": args.no_idle,
        "pack_headroom": args.pack_headroom,
        "pack_spread": args.pack_spread,
        "caller_rtt_s": args.caller_rtt,
        "provider_rtt_s": args.provider_rtt,
        "krw_per_usd": args.krw_per_usd,
        "scale": args.scale,
        "seed": args.seed,
        "calibrate": args.calibrate,
        "uncalibrated": args.uncalibrated or None,
        "local_per_vcpu": args.local_per_core,
    }
    params = SimParams(**{k: v for k, v in given.items() if v is not None})
    suffix = "" if params.direct else "-no-direct"
    if args.compare:
        names = [n.strip() for n in args.compare.split(",")]
        compare(params, names, Path(args.out or f"results/sim/compare-{Path(params.trace).stem}"))
        return 0
    if args.sweep:
        default = DEFAULT_SWEEP_DIRECT if params.direct else DEFAULT_SWEEP
        floors = [int(x) for x in (args.floors or default).split(",")]
        sweep(params, floors, Path(args.out or f"results/sim/tradeoff{suffix}"))
        return 0
    sim_main(params, Path(args.out or f"results/sim/{Path(params.trace).stem}{suffix}"))
    return 0


DEFAULT_SWEEP_DIRECT = "0,100,200,400,800,1600"
DEFAULT_SWEEP = "3000,3500,4000,4500,5000,6000"


def _providers_check(args: argparse.Namespace) -> int:
    import asyncio

    from dragoman.pipeline.providers.catalog import CHECKED
    from dragoman.pipeline.providers.check import check_all

    settings = _settings(args)
    names = [n.strip() for n in args.provider.split(",")] if args.provider else list(CHECKED)
    unknown = sorted(set(names) - set(CHECKED))
    if unknown:
        raise SystemExit(f"unknown provider(s) {unknown}; checked ones: {', '.join(CHECKED)}")
    results = asyncio.run(check_all(settings, names, args.listen))
    for result in results:
        _say(result.line())
    configured = [r for r in results if r.configured]
    if not configured:
        _say("no cloud provider is configured: set its key (see the README, Providers)")
        return 1
    return 0 if all(r.ok for r in configured) else 1


def _ops_dashboard(args: argparse.Namespace) -> int:
    try:
        from dragoman.ops.dashboard import render
    except ModuleNotFoundError as e:  # grafana-foundation-sdk: the `ops` extra
        raise SystemExit(f"{e.name} is missing: pip install 'dragoman[ops]'") from None
    sys.stdout.write(render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dragoman", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="api + worker on this machine (no external service)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1, DRAGOMAN_HOST)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000, DRAGOMAN_PORT)")
    serve.add_argument(
        "--internal-port",
        type=int,
        help="health, metrics, autoscale (default port + 1000, DRAGOMAN_INTERNAL_PORT)",
    )
    serve.add_argument("--max-calls", type=int, help="concurrent calls (DRAGOMAN_MAX_CALLS)")
    serve.add_argument(
        "--https",
        action="store_true",
        default=None,
        help="HTTPS on the public port, for browsers on other devices (a phone's microphone "
        "needs it): DRAGOMAN_TLS_CERT/KEY, or a self-signed certificate made now (DRAGOMAN_HTTPS)",
    )
    serve.set_defaults(func=_serve)

    api = sub.add_parser("api", help="a stateless control-plane replica (needs --registry)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.add_argument("--internal-port", type=int)
    api.add_argument("--registry", help="redis://host:port/db (DRAGOMAN_REGISTRY)")
    api.set_defaults(func=_api)

    worker = sub.add_parser("worker", help="one per node: agent pool + internal endpoint")
    worker.add_argument("--registry", help="redis://host:port/db (DRAGOMAN_REGISTRY)")
    worker.add_argument("--node-id", help="unique node name (default: hostname)")
    worker.add_argument("--worker-host", help="internal listen address (default 127.0.0.1)")
    worker.add_argument("--worker-port", type=int, help="internal port (default 8100)")
    worker.add_argument("--max-calls", type=int)
    worker.set_defaults(func=_worker)

    bench = sub.add_parser("bench", help="measure a running or embedded deployment")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    connect = bench_sub.add_parser("connect", help="press Call → answer → first agent audio")
    connect.add_argument("--url", help="a running deployment (default: start an embedded serve)")
    connect.add_argument("--calls", type=int, default=20)
    connect.add_argument("--pattern", choices=("burst", "ramp", "poisson"), default="burst")
    connect.add_argument("--duration", type=float, default=10.0, help="ramp/poisson spread, s")
    connect.add_argument("--clients", type=int, default=4, help="client processes")
    connect.add_argument("--hold", type=float, default=2.0, help="seconds to stay on the call")
    connect.add_argument("--out", default="results/connect", help="folder for JSON and plots")
    connect.set_defaults(func=_bench_connect)
    density = bench_sub.add_parser(
        "density", help="concurrent calls per core in cloud-AI mode (fake provider)"
    )
    density.add_argument("--step", type=int, default=5, help="calls added per step")
    density.add_argument("--max-calls", type=int, default=60)
    density.add_argument("--step-seconds", type=float, default=20.0)
    density.add_argument("--clients", type=int, default=2, help="load client processes")
    density.add_argument(
        "--server-cpus", default="0", help="CPUs the server is pinned to, e.g. 0 or 0,1"
    )
    density.add_argument(
        "--ptime", type=int, default=40, choices=(20, 40, 60), help="agents' packet length, ms"
    )
    density.add_argument("--out", default="results/density", help="folder for JSON and plots")
    density.set_defaults(func=_bench_density)
    latency = bench_sub.add_parser(
        "latency", help="end of a sentence → first translated audio, local pipeline, by stage"
    )
    latency.add_argument("--url", help="a running deployment on this machine (default: embedded)")
    latency.add_argument("--sentences", type=int, default=8)
    latency.add_argument(
        "--voice",
        choices=("auto", "ja", "en"),
        default="auto",
        help="auto: Japanese (Kokoro) if installed, else English (Piper)",
    )
    latency.add_argument("--out", default="results/latency", help="folder for JSON and plots")
    latency.add_argument(
        "--room",
        action="store_true",
        help="a two-party room: the host speaks, an English guest hears the translation",
    )
    latency.set_defaults(func=_bench_latency)
    lag = bench_sub.add_parser(
        "lag", help="continuous talk: each sentence's end → its translation, both interpretations"
    )
    lag.add_argument(
        "--talk-s", type=float, default=60.0, help="talk length, s (60 ≈ 18 sentences)"
    )
    lag.add_argument("--pause-s", type=float, default=0.3, help="pause between sentences, s")
    lag.add_argument(
        "--modes", default="consecutive,simultaneous", help="interpretations to run, in order"
    )
    lag.add_argument("--out", default="results/lag", help="folder for JSON and plots")
    lag.set_defaults(func=_bench_lag)
    cap = bench_sub.add_parser(
        "capacity", help="local-pipeline talkers per node: N callers talking at once, per mode"
    )
    cap.add_argument("--provider", choices=("local",), default="local")
    cap.add_argument("--steps", default="1,2,3", help="talkers at once, step by step")
    cap.add_argument(
        "--modes", default="consecutive,simultaneous", help="interpretations to run, in order"
    )
    cap.add_argument("--talk-s", type=float, default=20.0, help="each caller's talk per step, s")
    cap.add_argument("--pause-s", default="1,2", help="pause between sentences: min,max s")
    cap.add_argument("--sentences", type=int, default=12, help="the sentence pool's size (≤ 20)")
    cap.add_argument("--seed", type=int, default=1, help="the talks' random schedule")
    cap.add_argument(
        "--all-steps", action="store_true", help="go on after a mode's first missed target"
    )
    cap.add_argument("--out", default="results/capacity", help="folder for JSON and plots")
    cap.set_defaults(func=_bench_capacity)

    soak = bench_sub.add_parser(
        "soak",
        help="call churn with faults injected against an embedded serve; fails on a leak",
        description="Callers (aiortc through Janus) arrive at a rate with lognormal durations "
        "and hang up, vanish, never connect or drop their control channel, while faults from "
        "the seed kill or stop agents, Janus and the inference service and make the provider "
        "fake drop sessions. Samples the node every 2 s; after the drain, fails (exit 1) on "
        "a leaked agent, Janus handle or session, fd or registry slot, an RSS slope over the "
        "bound, a call without a reason the page shows, a refusal outside a fault's window, "
        "connect p95 drift, or a traceback. Writes OUT/soak.json, soak-samples.json, soak.png.",
    )
    soak.add_argument("--duration-s", type=float, default=1800.0, help="churn, seconds")
    soak.add_argument("--rate", type=float, default=1.0, help="callers arriving per second")
    soak.add_argument("--median-call-s", type=float, default=6.0, help="median call length")
    soak.add_argument("--seed", type=int, default=1, help="callers' and faults' schedule")
    soak.add_argument(
        "--faults",
        default=None,
        help="fault kinds to inject, comma-separated (empty: none; default: every kind: "
        "agent_kill, agent_stop, janus_kill, inference_stop, provider_drop, provider_stall, "
        "and with --fleet also redis_restart, worker_kill, worker_drain)",
    )
    soak.add_argument(
        "--faults-per-kind", type=int, help="default: one per 6 minutes of churn (≥ 1)"
    )
    soak.add_argument("--max-calls", type=int, default=24, help="call slots per node")
    soak.add_argument("--idle-target", type=int, default=4, help="idle agents per node")
    soak.add_argument(
        "--fleet",
        type=int,
        default=0,
        metavar="N",
        help="run api + Redis + N workers on network-namespace hosts (root) instead of serve",
    )
    soak.add_argument("--out", default="results/soak", help="folder for JSON and plots")
    soak.set_defaults(func=_bench_soak)

    registry = bench_sub.add_parser(
        "registry",
        help="Redis registry reservation throughput: concurrent reserve+release pairs "
        "(keys under a throwaway prefix, removed afterwards)",
        description="Many concurrent clients reserve a call slot on one of a few live nodes and "
        "release it again; prints progress, then reserve+release pairs per second, and saves "
        "them to OUT/registry.json. Keys go under a fresh prefix and are removed afterwards.",
    )
    registry.add_argument("url", metavar="REDIS_URL", help="redis://host:port/db")
    registry.add_argument("-n", "--pairs", type=int, default=5000, help="reserve+release pairs")
    registry.add_argument("--concurrency", type=int, default=50, help="concurrent clients")
    registry.add_argument("--out", default="results/registry", help="folder for the JSON")
    registry.set_defaults(func=_bench_registry)

    window = bench_sub.add_parser(
        "whisper-window",
        help="Whisper's encoder window (30 s vs shorter): time and text, Kokoro Japanese "
        "(test extras; ≈ 2-4 min on 2 cores)",
    )
    window.add_argument("--sentences", type=int, default=12, help="Japanese sentences (≤ 12)")
    window.add_argument(
        "--windows",
        default="30,10,+1,+2,10:+3",
        help="comma-separated: 30 (Whisper's), 10 (≥ 10 s), +2 (audio + 2 s), 10:+2 (both)",
    )
    window.add_argument(
        "--growing", action="store_true", help="also a buffer re-decoded every second"
    )
    window.add_argument("--repeats", type=int, default=3, help="encoder runs per clip (median)")
    window.add_argument(
        "--threads", type=int, default=1, help="Whisper threads (1, as a service worker; 0: all)"
    )
    window.add_argument("--out", default="results/whisper-window", help="folder for JSON, table")
    window.set_defaults(func=_bench_whisper_window)

    calibrate = bench_sub.add_parser(
        "calibrate",
        help="what `dragoman simulate` is calibrated from: connect at several burst sizes "
        "and node loads, direct-mode overflow, density (≈ 10 min)",
    )
    calibrate.add_argument("--bursts", default="10,20,40", help="burst sizes on an idle node")
    calibrate.add_argument("--loads", default="10,20", help="calls already on the node")
    calibrate.add_argument("--direct-calls", type=int, default=10)
    calibrate.add_argument("--no-density", action="store_true", help="skip bench density")
    calibrate.add_argument("--density-runs", type=int, default=3, help="best of N (3)")
    calibrate.add_argument("--density-only", action="store_true", help="only bench density")
    calibrate.add_argument("--server-cpus", default="0")
    calibrate.add_argument("--out", default="results/calibration")
    calibrate.set_defaults(func=_bench_calibrate)

    sim = sub.add_parser("simulate", help="the fleet under a call trace: latency and cost")
    sim.add_argument("--trace", default="surge", help="surge | day | flash | a .csv file")
    sim.add_argument(
        "--profile",
        help="machine profile: cloud (= c7g-warm-pool), local (= c7i-4xlarge-local, "
        "self-hosted AI, no overflow) or a name in dragoman/sim/profiles.py",
    )
    sim.add_argument(
        "--compare",
        nargs="?",
        const="cloud,local",
        help="run the trace under each profile (default cloud,local) and print one table",
    )
    sim.add_argument(
        "--local-per-core",
        type=float,
        help="local talkers per vCPU (the local profile's measured 1.0)",
    )
    sim.add_argument(
        "--no-direct",
        action="store_true",
        help="no provider key: a full fleet answers 503 (the page retries), no direct overflow",
    )
    sim.add_argument("--floor", type=int, help="the policy's warm-buffer floor, call slots")
    sim.add_argument(
        "--max-nodes", type=int, help="the fleet's node limit (DRAGOMAN_MAX_NODES; 200)"
    )
    sim.add_argument("--headroom", type=float, help="× expected arrivals during the lead time")
    sim.add_argument("--slots", type=int, help="call slots per node (default: calibration)")
    sim.add_argument("--idle-target", type=int, help="pre-forked processes per node")
    sim.add_argument("--node-ready", type=float, help="boot time the policy assumes, s")
    sim.add_argument("--interval", type=float, help="scaler period, s (HPA sync, 15)")
    sim.add_argument("--scaler", choices=("hpa", "direct"), help="via the k8s HPA (hpa)")
    sim.add_argument(
        "--scale-down", choices=("cost", "random"), help="pods removed: by deletion cost"
    )
    sim.add_argument("--no-idle", choices=("wait", "retry"), help="no idle agent: wait|503")
    sim.add_argument("--pack-headroom", type=float, help="ranking's per-node headroom (0.1)")
    sim.add_argument("--pack-spread", type=int, help="fullest nodes a burst is shared by (4)")
    sim.add_argument("--caller-rtt", type=float, help="caller ↔ node round trip, s (0.05)")
    sim.add_argument("--provider-rtt", type=float, help="↔ provider round trip, s (0.1)")
    sim.add_argument("--krw-per-usd", type=float, help="exchange rate (1,400)")
    sim.add_argument("--scale", type=float, help="multiply a built-in trace's concurrency")
    sim.add_argument("--seed", type=int)
    sim.add_argument(
        "--calibrate",
        help="a `bench calibrate` folder or one bench JSON (default: results/calibration)",
    )
    sim.add_argument(
        "--uncalibrated", action="store_true", help="assumed constants, not measurements"
    )
    sim.add_argument("--out", help="folder for report.json and plots (results/sim/TRACE)")
    sim.add_argument("--sweep", action="store_true", help="cost vs p99 over --floors")
    sim.add_argument("--floors", help="comma-separated floors, slots (a default per mode)")
    sim.set_defaults(func=_simulate)

    providers = sub.add_parser("providers", help="the cloud providers this server is set for")
    providers_sub = providers.add_subparsers(dest="providers", required=True)
    check = providers_sub.add_parser(
        "check",
        help="open a short session per configured provider (a second of generated speech): "
        "connected?, first-audio latency, errors",
    )
    check.add_argument("--provider", help="comma-separated (default: every cloud provider)")
    check.add_argument("--listen", type=float, default=6.0, help="seconds to wait for audio")
    check.set_defaults(func=_providers_check)

    token = sub.add_parser(
        "token", help="print a call ticket signed with DRAGOMAN_CALL_TOKEN_SECRET (testing)"
    )
    token.add_argument("--sub", default="dev", help="subject: who the ticket is for")
    token.add_argument("--ttl", type=int, default=300, help="seconds until it expires")
    token.add_argument("--providers", help="comma-separated providers it allows (default any)")
    token.add_argument("--direct", action="store_true", help="allow direct mode")
    token.add_argument("--max-call-s", type=float, help="cap on the call's duration")
    token.set_defaults(func=_token)

    ops = sub.add_parser("ops", help="what operators deploy beside dragoman")
    ops_sub = ops.add_subparsers(dest="ops", required=True)
    dash = ops_sub.add_parser(
        "dashboard", help="print the Grafana dashboard (deploy/grafana/dragoman.json)"
    )
    dash.set_defaults(func=_ops_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
