"""Entry point of an agent process: one process, one call, then exit.

The worker forks these ahead of demand from a forkserver that has already imported this
module (and so Pipecat, aiortc, NumPy, ONNX Runtime). While idle, the process also loads the
VAD and builds its WebRTC peer (DTLS certificate included), so answering an offer is only
SDP work: nothing slow sits between the POST and its answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from loguru import logger as loguru_logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from dragoman.agent.inline_executor import InlineExecutor
from dragoman.agent.session import CallSession
from dragoman.config import Settings
from dragoman.inference.client import InferenceClient
from dragoman.languages import LanguageError
from dragoman.pipeline.glossary import read_glossary
from dragoman.pipeline.providers.catalog import PROVIDERS, validate_call
from dragoman.worker.channel import ChannelClosed, PipeChannel

log = logging.getLogger("dragoman.agent")


def quiet_pipecat(level: str) -> None:
    """Pipecat logs through loguru at DEBUG; keep per-call processes to warnings and up."""
    loguru_logger.remove()
    loguru_logger.add(
        sys.stderr,
        level="DEBUG" if level.upper() == "DEBUG" else "WARNING",
        # An audio-only call has no video transceivers; Pipecat warns about it every call.
        filter=_worth_logging,
    )


_NOISE = (
    "video transceiver is available",  # an audio-only call has none; warned every call
    "No audio frame received",  # a muted mic; our no-media limit acts on it
)


def _worth_logging(record: dict) -> bool:
    return not any(n in record["message"] for n in _NOISE)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _load_vad(settings: Settings, executor: InlineExecutor) -> SileroVADAnalyzer:
    vad = SileroVADAnalyzer(params=VADParams(stop_secs=settings.vad_stop_s))
    vad._executor = executor  # per-chunk VAD; Pipecat gives it a one-thread pool of its own
    return vad


async def _serve_one_call(chan: PipeChannel, settings: Settings, socket_path: str) -> None:
    t_prep = time.perf_counter()
    inline = InlineExecutor()
    asyncio.get_running_loop().set_default_executor(inline)  # aiortc's per-frame Opus encode
    # The VAD's ONNX session is ~20 MB of this process's own memory: load it while idle only
    # when the node's default provider uses it (speech-to-speech services do not).
    vad = _load_vad(settings, inline) if PROVIDERS[settings.provider].uses_vad else None
    connection = SmallWebRTCConnection(ice_servers=[])
    client = InferenceClient(socket_path)
    chan.send({"kind": "ready", "pid": os.getpid(), "prep_ms": _ms(t_prep)})

    msg = await chan.recv()
    if msg.get("kind") != "offer":
        return  # "stop": the worker is shrinking its idle pool or shutting down
    t0 = time.perf_counter()
    try:
        spec, pair = validate_call(msg.get("provider"), msg["source"], msg["target"], settings)
        glossary = read_glossary(settings.glossary_dir, msg.get("glossary"))
        if spec.uses_vad and vad is None:  # a call asked for a provider the node did not expect
            vad = _load_vad(settings, inline)
        await connection.initialize(sdp=msg["sdp"], type=msg["sdp_type"])
        answer = connection.get_answer()
    except LanguageError as e:
        chan.send({"kind": "error", "code": e.code, "message": e.message})
        return
    except Exception as e:  # aiortc rejects what the API's quick SDP check let through
        why = f"{type(e).__name__}: {e}"
        chan.send(
            {
                "kind": "error",
                "code": "bad_sdp",
                "message": f"Malformed SDP offer: the WebRTC stack rejected it ({why})",
            }
        )
        return
    session = CallSession(
        connection=connection,
        vad=vad,
        pair=pair,
        settings=settings,
        client=client,
        provider=spec,
        glossary=glossary,
        report_pacing=lambda frames, late: chan.send(
            {"kind": "pacing", "frames": frames, "late": late}
        ),
    )
    chan.send(
        {
            "kind": "answer",
            "sdp": answer["sdp"],
            "type": answer["type"],
            "timings_ms": {"agent_answer": _ms(t0)},
        }
    )

    async def follow_worker() -> None:
        # The worker asks us to end (DELETE, drain, memory) or vanishes (EOF): end the call.
        try:
            while True:
                m = await chan.recv()
                if m.get("kind") == "end":
                    await session.end(m.get("reason", "remote_hangup"))
                    return
        except ChannelClosed:
            await session.end("agent_lost")

    follower = asyncio.create_task(follow_worker())
    try:
        reason = await session.run()
    finally:
        follower.cancel()
    chan.send({"kind": "ended", "reason": reason})


def agent_main(conn: Connection, settings_json: str, socket_path: str) -> None:
    """Process target. Runs exactly one call (or none, if told to stop while idle)."""
    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s agent[%(process)d] %(message)s"
    )
    # Ctrl-C in a terminal reaches every process in the group; the worker drains calls
    # and decides when each agent ends, so agents ignore SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_pipecat(settings.log_level)
    # aioice narrates every candidate pair at INFO; only its problems are worth a line.
    logging.getLogger("aioice").setLevel(max(logging.WARNING, logging.root.level))

    async def main() -> None:
        chan = PipeChannel(conn)
        try:
            await _serve_one_call(chan, settings, socket_path)
        except ChannelClosed:
            pass
        finally:
            chan.close()

    asyncio.run(main())
