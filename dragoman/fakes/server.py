"""One local process serving the FAKE provider APIs (see ``dragoman.fakes``).

    python -m dragoman.fakes.server --port 9900 --key sk-fake [--gemini-key g-fake]
        [--tls-port 9901 --cert-dir DIR]

OpenAI-shaped routes live under ``/v1``, Gemini Live under its BidiGenerateContent path and
``/v1alpha/auth_tokens``. With ``--tls-port`` the same routes are also served over TLS with
a self-signed certificate written to ``--cert-dir`` (``cert.pem``): the Gemini SDK reaches
the Live API over ``wss://`` only.
``/fake/state`` (GET) shows what our side sent; ``/fake/fault`` (POST) makes the fake
misbehave for the next sessions (refuse, drop, stall, error). Both are fake-only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import ssl
from pathlib import Path

from aiohttp import web

from dragoman.fakes import (
    gemini_live,
    openai_cascade,
    openai_transcription,
    openai_translate,
    tls,
)
from dragoman.fakes.state import FakeState, Fault

STATE = web.AppKey("state", FakeState)


@web.middleware
async def cors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    # Browsers call the direct-mode endpoint from the dragoman page's origin, as they do
    # the real provider's.
    if request.method == "OPTIONS":
        resp: web.StreamResponse = web.Response(status=204)
    else:
        resp = await handler(request)
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    resp.headers["Access-Control-Expose-Headers"] = "Location"
    return resp


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].snapshot())


async def _fault(request: web.Request) -> web.Response:
    body = await request.json()
    fields = {f.name for f in dataclasses.fields(Fault)}
    unknown = set(body) - fields
    if unknown:
        return web.json_response({"error": f"unknown fault fields {sorted(unknown)}"}, status=400)
    request.app[STATE].fault = Fault(**body)
    return web.json_response(dataclasses.asdict(request.app[STATE].fault))


def build_app(api_key: str, gemini_key: str | None = None) -> web.Application:
    app = web.Application(middlewares=[cors], client_max_size=2**22)
    state = FakeState(api_key=api_key, gemini_key=gemini_key)
    app[STATE] = state
    app.router.add_get("/fake/state", _state)
    app.router.add_post("/fake/fault", _fault)
    openai_translate.add_routes(app, state)
    openai_cascade.add_routes(app, state)
    openai_transcription.add_routes(app, state)
    gemini_live.add_routes(app, state)
    return app


async def serve(app: web.Application, host: str, port: int, tls_port: int, cert_dir: Path) -> None:
    runner = web.AppRunner(app, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    if tls_port:
        cert, key = tls.self_signed(cert_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        await web.TCPSite(runner, host, tls_port, ssl_context=context).start()
    note = f" and https://{host}:{tls_port}" if tls_port else ""
    print(f"FAKE providers on http://{host}:{port}{note} (not a translator)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FAKE provider APIs for protocol tests/bench.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9900)
    parser.add_argument("--tls-port", type=int, default=0, help="also serve over TLS (0: no)")
    parser.add_argument("--cert-dir", type=Path, default=Path("fake-provider-tls"))
    parser.add_argument("--key", default="sk-fake", help="the API key the fake accepts")
    parser.add_argument("--gemini-key", default="gm-fake")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = build_app(args.key, args.gemini_key)
    try:
        asyncio.run(serve(app, args.host, args.port, args.tls_port, args.cert_dir))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
