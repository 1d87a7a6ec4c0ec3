"""The node's media gateway: a supervised Janus that terminates each caller's WebRTC and
bridges it to plain RTP on loopback, to that call's agent process (NoSIP plugin).

The worker starts Janus with a generated configuration, keeps one control connection to it
(WebSocket on a Unix socket) and probes it every ``janus_probe_interval_s``. If Janus exits
or stops answering, the gateway reports it down at once (the worker marks the node not
ready and ends its calls with ``media_lost``), kills what is left of it, starts a new one
and reports it up again. Handles from before a restart are void (``generation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

from dragoman.config import Settings
from dragoman.media.plain_sdp import PlainOffer, PlainSdpError, parse_plain_offer
from dragoman.worker.media.janus_client import (
    JanusClient,
    JanusClosed,
    JanusError,
    JanusSession,
    plugin_result,
)
from dragoman.worker.media.janus_config import janus_files
from dragoman.worker.media.log_repeats import RepeatLimiter
from dragoman.worker.restarting_child import Backoff, RestartingChild

log = logging.getLogger("dragoman.gateway")

PLUGIN = "janus.plugin.nosip"
REQUEST_TIMEOUT_S = 5.0
ADMIN_TIMEOUT_S = 1.0  # a health check must answer promptly even when Janus does not
START_TIMEOUT_S = 15.0
RESTART_BACKOFF = Backoff(base_s=0.25, cap_s=10.0)
LOG_TAIL = 60
PR_SET_PDEATHSIG = 1

EventCallback = Callable[[str, dict[str, Any]], None]


class MediaUnavailable(RuntimeError):
    """The node's media gateway is down (restarting) or did not answer."""


class OfferRejected(ValueError):
    """The caller's offer cannot be bridged (malformed SDP, no Opus audio)."""


@dataclass(frozen=True)
class Handle:
    """A NoSIP handle in one incarnation of Janus."""

    generation: int
    id: int


def _die_with_parent() -> None:
    # Janus must not outlive a worker that is killed with SIGKILL.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class MediaGateway(RestartingChild):
    what = "media gateway (Janus)"
    backoff = RESTART_BACKOFF

    def __init__(
        self,
        settings: Settings,
        runtime_dir: Path,
        on_down: Callable[[str], None],
        on_up: Callable[[], None],
    ) -> None:
        super().__init__(on_down, on_up)
        self.settings = settings
        self.dir = runtime_dir
        self.socket_path = runtime_dir / "janus-ws.sock"
        self.admin_socket = runtime_dir / "janus-admin.sock"
        self._admin_secret = ""
        self.generation = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._client: JanusClient | None = None
        self._session: JanusSession | None = None
        self._subs: dict[int, EventCallback] = {}
        self._tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._repeats = RepeatLimiter()  # Janus can log an error once per packet

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start Janus and return once it answers (RuntimeError with its log otherwise)."""
        await self._start()
        self._mark_up()
        self._supervise()

    def stats(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "restarts": self.restarts,
            "pid": self._proc.pid if self._proc else None,
            "last_down_reason": self.last_down_reason,
        }

    async def count_sessions(self) -> int | None:
        """Sessions alive in Janus (its Admin API; the worker holds one), or None while it
        is down: a leak check for soaks."""
        if not self.up or self._session is None:
            return None
        return await self._admin_count({"janus": "list_sessions"}, "sessions")

    async def count_handles(self) -> int | None:
        """Handles alive in Janus' own session (its Admin API), or None while it is down.
        Each idle agent holds one; each call holds its agent's until the agent exits."""
        session = self._session
        if not self.up or session is None:
            return None
        return await self._admin_count(
            {"janus": "list_handles", "session_id": session.id}, "handles"
        )

    async def _admin_count(self, request: dict[str, Any], key: str) -> int | None:
        try:
            admin = await JanusClient.connect(
                str(self.admin_socket), lambda _m: None, ADMIN_TIMEOUT_S, admin=True
            )
        except (OSError, TimeoutError, websockets.WebSocketException):
            return None
        try:
            reply = await admin.request(
                {**request, "admin_secret": self._admin_secret}, ADMIN_TIMEOUT_S
            )
            return len(reply.get(key) or [])
        except (JanusError, JanusClosed, TimeoutError):
            return None
        finally:
            await admin.close()

    async def _start(self) -> None:
        self.generation += 1
        self._subs.clear()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._admin_secret = secrets.token_hex(16)
        files = janus_files(
            self.settings, self.dir, self.socket_path, self.admin_socket, self._admin_secret
        )
        for name, text in files.items():
            (self.dir / name).write_text(text)
        self.dir.joinpath("janus.jcfg").chmod(0o600)  # it holds the admin secret
        self.socket_path.unlink(missing_ok=True)
        self.admin_socket.unlink(missing_ok=True)
        self._tail.clear()
        t0 = time.monotonic()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.settings.janus_binary,
                "-C",
                str(self.dir / "janus.jcfg"),
                "-F",
                str(self.dir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C is the worker's to handle
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as e:
            raise RuntimeError(
                f"{self.settings.janus_binary!r} not found: install the Debian package 'janus' "
                "(scripts/setup.sh does) or set DRAGOMAN_JANUS_BINARY"
            ) from e
        proc = self._proc
        asyncio.create_task(self._pump_log(proc))
        deadline = t0 + START_TIMEOUT_S
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"janus exited with code {proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                why = f"janus did not start in {START_TIMEOUT_S} s"
                raise RuntimeError(f"{why}:\n{self.log_tail()}")
            if self.socket_path.exists():
                try:
                    self._client = await JanusClient.connect(
                        str(self.socket_path), self._on_event, REQUEST_TIMEOUT_S
                    )
                    break
                except (OSError, TimeoutError, websockets.WebSocketException):
                    pass
            await asyncio.sleep(0.02)
        self._session = await JanusSession.create(self._client, REQUEST_TIMEOUT_S)
        log.info("janus %s up in %.0f ms", proc.pid, (time.monotonic() - t0) * 1000)

    async def _pump_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            if "[ERR]" in line or "[FATAL]" in line:
                relayed = self._repeats.admit(line, time.monotonic())
                if relayed is not None:
                    log.warning("janus: %s", relayed)

    def log_tail(self) -> str:
        return "\n".join(self._tail)

    async def _watch(self) -> str:
        """Returns why Janus is gone: it exited, closed the connection or stopped answering."""
        proc, client, session = self._proc, self._client, self._session
        assert proc is not None and client is not None and session is not None
        exited = asyncio.create_task(proc.wait())
        closed = asyncio.create_task(client.closed.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {exited, closed}, timeout=self.settings.janus_probe_interval_s
                )
                if exited in done:
                    return f"janus exited with code {proc.returncode}"
                if closed in done:
                    return "the control connection to janus closed"
                try:
                    await session.keepalive(self.settings.janus_probe_timeout_s)
                except (TimeoutError, JanusClosed, JanusError) as e:
                    if proc.returncode is not None:
                        return f"janus exited with code {proc.returncode}"
                    return f"janus stopped answering ({type(e).__name__})"
        finally:
            exited.cancel()
            closed.cancel()

    async def _terminate(self) -> None:
        client, proc = self._client, self._proc
        self._client = self._session = None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)
        if proc is not None and proc.returncode is None:
            if self._stopping:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 3.0)
                    return
                except TimeoutError:
                    pass
            proc.kill()
            await proc.wait()

    # --- calls ---------------------------------------------------------------------------
    def _current(self) -> JanusSession:
        if not self.up or self._session is None:
            raise MediaUnavailable("the media gateway is restarting")
        return self._session

    async def attach(self) -> Handle:
        session = self._current()
        generation = self.generation
        try:
            return Handle(generation, await session.attach(PLUGIN))
        except (JanusClosed, TimeoutError) as e:
            raise MediaUnavailable(f"the media gateway did not answer: {e!r}") from e
        except JanusError as e:
            raise MediaUnavailable(f"the media gateway refused a handle: {e.reason}") from e

    def valid(self, handle: Handle | None) -> bool:
        return handle is not None and handle.generation == self.generation and self.up

    def subscribe(self, handle: Handle, callback: EventCallback) -> None:
        self._subs[handle.id] = callback

    def _on_event(self, msg: dict[str, Any]) -> None:
        sender = msg.get("sender")
        callback = self._subs.get(sender) if isinstance(sender, int) else None
        if callback is not None:
            callback(str(msg.get("janus")), msg)

    async def bridge(
        self, handle: Handle, offer_sdp: str, plain_answer: str
    ) -> tuple[PlainOffer, asyncio.Future[str]]:
        """Give Janus the caller's WebRTC offer (NoSIP ``generate``), then the agent's plain
        answer (``process``). Returns the plain-RTP side Janus set up as soon as ``generate``
        is done, and a future for the WebRTC answer to send the caller, so the agent can take
        the call while Janus finishes. (The two requests cannot be in flight together: Janus
        hands requests to a thread pool and a short ``process`` overtakes a ``generate``
        still parsing its offer.)"""
        session = self._current()
        plain = await self._generate(session, handle, offer_sdp)
        processed = await self._process(session, handle, plain_answer)
        return plain, asyncio.ensure_future(self._answer_of(processed))

    async def renegotiate(
        self, handle: Handle, offer_sdp: str, plain_answer: str, plain: PlainOffer
    ) -> str:
        """An ICE restart: the caller's new WebRTC offer on the call's own handle. Janus sees
        the changed ICE credentials and restarts ICE (the DTLS session goes on); NoSIP keeps
        the plain-RTP ports it has (an update), and the agent's unchanged plain answer is
        processed again. Returns the WebRTC answer for the caller. OfferRejected when Janus
        refuses the offer; MediaUnavailable when it did not answer or would move the
        call's plain RTP (the agent's side must not change)."""
        if not self.valid(handle):
            raise MediaUnavailable("the call's media gateway handle is gone")
        session = self._current()
        again = await self._generate(session, handle, offer_sdp, update=True)
        if (again.address, again.port) != (plain.address, plain.port):
            raise MediaUnavailable(f"the media gateway moved the call's plain RTP: {again}")
        return await self._answer_of(await self._process(session, handle, plain_answer))

    async def _generate(
        self, session: JanusSession, handle: Handle, offer_sdp: str, update: bool = False
    ) -> PlainOffer:
        """NoSIP ``generate``: the plain-RTP offer for the caller's WebRTC offer."""
        offer: dict[str, Any] = {"type": "offer", "sdp": offer_sdp}
        if update:
            offer["update"] = True  # NoSIP keeps its ports (Janus also sets it on renegotiation)
        try:
            generated = await session.send_message(handle.id, {"request": "generate"}, offer)
            data, _ = plugin_result(await asyncio.wait_for(generated, REQUEST_TIMEOUT_S))
        except JanusError as e:
            # Janus refuses what it cannot parse (JSEP/SDP errors are 46x codes).
            raise OfferRejected(e.reason) from e
        except (JanusClosed, TimeoutError) as e:
            raise MediaUnavailable(f"the media gateway did not answer: {e!r}") from e
        result = data.get("result") or {}
        if result.get("event") != "generated" or not isinstance(result.get("sdp"), str):
            raise MediaUnavailable(f"unexpected reply from the media gateway: {result}"[:200])
        try:
            return parse_plain_offer(result["sdp"])
        except PlainSdpError as e:
            raise OfferRejected(str(e)) from e

    async def _process(
        self, session: JanusSession, handle: Handle, plain_answer: str
    ) -> asyncio.Future[dict[str, Any]]:
        """Send NoSIP ``process`` of the agent's plain answer; its reply (``_answer_of``)
        carries Janus' WebRTC answer."""
        process = {"request": "process", "type": "answer", "sdp": plain_answer}
        try:
            return await session.send_message(handle.id, process)
        except JanusClosed as e:
            raise MediaUnavailable(f"the media gateway did not answer: {e!r}") from e

    async def _answer_of(self, processed: asyncio.Future[dict[str, Any]]) -> str:
        try:
            _, jsep = plugin_result(await asyncio.wait_for(processed, REQUEST_TIMEOUT_S))
        except JanusError as e:
            why = f"the media gateway refused the agent's answer: {e.reason}"
            raise MediaUnavailable(why) from e
        except (JanusClosed, TimeoutError) as e:
            raise MediaUnavailable(f"the media gateway did not answer: {e!r}") from e
        if not jsep or not isinstance(jsep.get("sdp"), str):
            raise MediaUnavailable("the media gateway sent no WebRTC answer")
        return jsep["sdp"]

    async def detach(self, handle: Handle | None) -> None:
        """Free a handle (and hang up its caller); quiet if Janus restarted meanwhile."""
        if handle is None:
            return
        self._subs.pop(handle.id, None)
        if not self.valid(handle) or self._session is None:
            return
        try:
            await self._session.detach(handle.id)
        except (JanusError, JanusClosed, TimeoutError) as e:
            log.debug("detach %s: %s", handle.id, e)
