"""Entry point of an agent process: one process, one call, then exit.

The worker forks these ahead of demand from a forkserver that has already imported this
module, the providers this node can run and, where one uses it, the VAD (see
``worker.agents.forkserver.forkserver_preload``). While idle, the process binds its loopback
RTP/RTCP port pair, loads libopus and readies the VAD where its default provider uses it, then
reports its port. Janus terminates the caller's WebRTC; the agent only ever sees plain RTP
from Janus, so taking a call is a pipe message: nothing slow sits between the POST and its
answer.

The pipe's messages are typed (``contract.pipe``). The agent sends ``ping`` every
``agent_heartbeat_s`` from its event loop, idle or in a call: an agent whose loop is stuck
(or that is stopped) falls silent and the worker kills it (``worker.agents.vitals``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from multiprocessing.connection import Connection

from loguru import logger as loguru_logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams

from dragoman import logs, tracing
from dragoman.agent.call_trace import CallTrace
from dragoman.agent.inline_executor import InlineExecutor
from dragoman.agent.session import CallSession
from dragoman.config import Settings
from dragoman.contract import page
from dragoman.contract.channel import ChannelClosed, PipeChannel
from dragoman.contract.errors import CallRejected
from dragoman.contract.pipe import (
    PING,
    TO_AGENT,
    Accepted,
    End,
    Ended,
    FromPage,
    MediaDown,
    MediaUp,
    Offer,
    Pacing,
    Ready,
    Refused,
    RoomAudio,
    RoomJoined,
    RoomLeft,
    ToAgent,
    ToPage,
)
from dragoman.inference.client import InferenceClient
from dragoman.media import opus
from dragoman.media.ports import bind_rtp_pair
from dragoman.pipeline.glossary import read_glossary
from dragoman.pipeline.providers.catalog import PROVIDERS, resolve_interpretation, validate_call
from dragoman.pipeline.smart_turn import SmartTurnModel, TurnModel
from dragoman.pipeline.transports.rtp_media import RtpMedia

log = logging.getLogger("dragoman.agent")
EXIT_FLUSH_S = 2.0  # well within the worker's EXIT_GRACE_S


def quiet_pipecat(level: str, log_format: str = "text") -> None:
    """Pipecat logs through loguru at DEBUG; keep per-call processes to warnings and up, in
    the process's format, with the call's id (``bind_call``)."""
    loguru_logger.remove()
    loguru_logger.configure(extra={"call_id": None})
    loguru_logger.add(
        sys.stderr,
        level="DEBUG" if level.upper() == "DEBUG" else "WARNING",
        format=LOGURU_FORMAT,
        serialize=log_format == "json",
        # An audio-only call has no video transceivers; Pipecat warns about it every call.
        filter=_worth_logging,
    )


LOGURU_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss,SSS} {level} agent[{process}] {name} [call {extra[call_id]}] "
    "{message}"
)


def bind_call(call_id: str) -> None:
    """Every later log line of this process, ours and Pipecat's, names its one call."""
    logs.bind_process_call(call_id)
    loguru_logger.configure(extra={"call_id": call_id})


_NOISE = ("No audio frame received",)  # a muted mic; our no-media limit acts on it


def _worth_logging(record: dict) -> bool:
    return not any(n in record["message"] for n in _NOISE)


async def _heartbeat(chan: PipeChannel[ToAgent], period_s: float) -> None:
    # Sent from the event loop itself, so it proves the loop runs, not merely the process.
    while chan.send(PING):
        await asyncio.sleep(period_s)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _load_vad(settings: Settings, executor: InlineExecutor) -> SileroVADAnalyzer:
    """The forkserver's preloaded VAD when there is one (shared pages), else a new one."""
    shared = sys.modules.get("dragoman.agent.shared_vad")
    if shared is not None:
        vad = shared.ANALYZER
        vad._params = VADParams(stop_secs=settings.vad_stop_s)  # applied at set_sample_rate
    else:
        vad = SileroVADAnalyzer(params=VADParams(stop_secs=settings.vad_stop_s))
    vad._executor = executor  # per-chunk VAD; Pipecat gives it a one-thread pool of its own
    return vad


def _load_turn_model(settings: Settings) -> TurnModel | None:
    """Smart Turn's model (consecutive interpretation, beside the VAD): the forkserver's
    preloaded one when there is one (shared pages), else a new one; None when disabled."""
    if not settings.smart_turn:
        return None
    shared = sys.modules.get("dragoman.agent.shared_turn")
    return shared.MODEL if shared is not None else SmartTurnModel()


async def _serve_one_call(chan: PipeChannel[ToAgent], settings: Settings, socket_path: str) -> None:
    inline = InlineExecutor()  # for the VAD's per-chunk analysis
    rtp, rtcp = bind_rtp_pair("127.0.0.1", settings.agent_rtp_port_range)
    opus.lib()  # load libopus now, not while a caller waits
    # Where the node's default provider uses the VAD (speech-to-speech services do not), get
    # it ready while idle: the forkserver's shared copy, or this process's own.
    vad = _load_vad(settings, inline) if PROVIDERS[settings.provider].uses_vad else None
    turn_model = _load_turn_model(settings) if vad is not None else None
    client = InferenceClient(socket_path)
    port = rtp.getsockname()[1]
    chan.send(Ready(rtp_port=port))

    offer = await chan.recv()
    if not isinstance(offer, Offer):
        return  # "stop": the worker is shrinking its idle pool or shutting down
    t0 = time.perf_counter()
    t_offer = time.monotonic()
    call = offer.call
    bind_call(call.call_id)
    call_trace = CallTrace(call, tracing.tracer("agent"), t_offer)
    try:
        spec, pair = validate_call(call.provider, call.source, call.target, settings, call.mode)
        interpretation = resolve_interpretation(spec, pair.mode, call.interpretation)
        glossary = read_glossary(settings.glossary_dir, call.glossary)
        peer = offer.peer
        media = RtpMedia(
            rtp,
            rtcp,
            in_rate=spec.input_rate,
            out_rate=settings.audio_out_sample_rate,
            # A speech-to-speech provider takes audio in provider_chunk_ms pieces anyway;
            # the VAD wants short frames to find the end of speech promptly.
            in_frame_ms=40 if spec.uses_vad else settings.provider_chunk_ms,
            opus_complexity=settings.opus_complexity,
            ptime_ms=settings.agent_ptime_ms,
        )
    except CallRejected as e:  # languages, provider, interpretation, glossary
        chan.send(Refused(code=e.code, message=e.message))
        call_trace.end(e.code, None, None)
        return
    # The call is valid: say so now, so the answer goes out while the pipeline is built
    # (the caller's WebRTC takes tens of milliseconds to come up anyway).
    chan.send(Accepted(timings_ms={"agent_accept": _ms(t0)}))
    call_trace.step("agent.accept", t_offer, time.monotonic())

    def notify(msg: dict) -> None:
        call_trace.on_page_message(msg)  # an utterance's marks become its spans
        chan.send(ToPage(msg=msg))

    try:
        if spec.uses_vad and vad is None:  # a provider the node's default does not need
            vad = _load_vad(settings, inline)
            turn_model = _load_turn_model(settings)
        cap = call.max_call_s  # the caller's ticket may lower the node's cap
        if cap is not None and cap < settings.max_call_s:
            settings = settings.model_copy(update={"max_call_s": float(cap)})
        session = CallSession(
            media=media,
            peer=peer,
            notify=notify,
            vad=vad,
            turn_model=turn_model,
            pair=pair,
            settings=settings,
            client=client,
            provider=spec,
            glossary=glossary,
            interpretation=interpretation,
            report_pacing=lambda frames, late: chan.send(Pacing(frames=frames, late=late)),
            to_peer=lambda pcm, rate: chan.send(RoomAudio(pcm=pcm, rate=rate)),
        )
    except Exception:
        log.exception("could not build the call's pipeline")
        chan.send(ToPage(msg=page.state("ended", "error")))
        chan.send(Ended(reason="error"))
        call_trace.end("error", None, None)
        return

    async def follow_worker() -> None:
        # The worker relays the gateway's media events and the page's control messages,
        # asks us to end (DELETE, drain, media lost), or vanishes (EOF): end the call.
        try:
            while True:
                m = await chan.recv()
                if isinstance(m, MediaUp):
                    await session.media_up()
                elif isinstance(m, MediaDown):
                    await session.end("disconnected")
                elif isinstance(m, FromPage):
                    await session.on_control(m.msg)
                elif isinstance(m, End):
                    await session.end(m.reason)
                elif isinstance(m, RoomAudio):
                    await session.play_from_peer(m.pcm, m.rate)
                elif isinstance(m, RoomJoined):
                    await session.room_joined(m.language)
                elif isinstance(m, RoomLeft):
                    session.room_left()
        except ChannelClosed:
            await session.end("agent_lost")

    follower = asyncio.create_task(follow_worker())
    try:
        reason = await session.run()
    finally:
        follower.cancel()
    chan.send(Ended(reason=reason))
    call_trace.end(reason, session.connected_at, media.first_rx_at)


def agent_main(conn: Connection, settings_json: str, socket_path: str) -> None:
    """Process target. Runs exactly one call (or none, if told to stop while idle)."""
    settings = Settings.model_validate_json(settings_json)
    logs.setup(settings, "agent")
    tracing.setup("agent")  # while idle: nothing of it on the call's path
    # Ctrl-C in a terminal reaches every process in the group; the worker drains calls
    # and decides when each agent ends, so agents ignore SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_pipecat(settings.log_level, settings.log_format)

    async def main() -> None:
        chan = PipeChannel(conn, TO_AGENT)
        beat = asyncio.create_task(_heartbeat(chan, settings.agent_heartbeat_s))
        try:
            await _serve_one_call(chan, settings, socket_path)
        except ChannelClosed:
            pass
        finally:
            beat.cancel()
            # What is still queued for the worker ("ended", the last page messages) goes
            # out before the process exits (the pipe never blocks the loop, see channel).
            await chan.flush(EXIT_FLUSH_S)
            chan.close()

    asyncio.run(main())
    # A forked process skips atexit handlers: the call's spans go out now (bounded).
    tracing.shutdown()
