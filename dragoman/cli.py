"""The one entry point: ``dragoman serve`` (api + worker + in-memory registry, one command)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dragoman.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from fastapi import FastAPI

    from dragoman.api.app import create_app
    from dragoman.worker.node import Node

    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "max_calls": args.max_calls}.items()
        if v is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await node.start(on_progress=lambda m: print(m, flush=True))
        print(f"dragoman is ready: open http://{settings.host}:{settings.port}", flush=True)
        try:
            yield
        finally:
            print("draining calls (Ctrl-C again to force)…", flush=True)
            await node.stop()
            print("stopped cleanly", flush=True)

    app = create_app(settings, node, lifespan=lifespan)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"
    )
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it turned into a graceful shutdown; the drain above
        # already ran, so this is a clean exit.
        pass
    return 0


def _bench_connect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dragoman.bench.connect import main as bench_main

    rep = bench_main(args.url, args.calls, args.concurrency, Path(args.out))
    return 0 if rep["refused"] == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dragoman", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run api + worker on this machine (no external service)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1, DRAGOMAN_HOST)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000, DRAGOMAN_PORT)")
    serve.add_argument("--max-calls", type=int, help="concurrent calls (DRAGOMAN_MAX_CALLS)")
    serve.set_defaults(func=_serve)

    bench = sub.add_parser("bench", help="measure a running or embedded deployment")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    connect = bench_sub.add_parser("connect", help="press Call → answer → first agent audio")
    connect.add_argument("--url", help="a running deployment (default: start an embedded serve)")
    connect.add_argument("--calls", type=int, default=20)
    connect.add_argument("--concurrency", type=int, default=1)
    connect.add_argument("--out", default="results/connect", help="folder for connect.json")
    connect.set_defaults(func=_bench_connect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
