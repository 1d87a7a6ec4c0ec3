"""ICE restarts on a node: a caller whose network changed (Wi-Fi to mobile, a new address)
sends a new WebRTC offer over the call's control channel (``ice_restart``); the worker
renegotiates the call's own Janus NoSIP handle and sends the answer back (``ice_answer``).

Only the caller's side changes: Janus restarts ICE (the DTLS session goes on) and NoSIP keeps
the plain-RTP ports the agent talks to, so the agent never learns of it. A bad offer, one
too many, or a refusal from Janus is answered with an ``error``; the call goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dragoman import logs
from dragoman.contract import page
from dragoman.media.offer_sdp import SdpError, check_offer
from dragoman.media.plain_sdp import PlainOffer, opus_payload_type
from dragoman.rate import gcra
from dragoman.worker import metrics
from dragoman.worker.media.gateway import Handle, MediaGateway, MediaUnavailable, OfferRejected

log = logging.getLogger("dragoman.worker")

Publish = Callable[[str, dict[str, Any]], None]  # ControlHub.publish


@dataclass
class CallMedia:
    """What a call's renegotiation needs: its plain-RTP side as first set up."""

    plain: PlainOffer  # where Janus takes the agent's RTP (must not move)
    plain_answer: str  # the agent's answer, processed again as it was
    tat: float | None = None  # GCRA state of this call's ICE restarts
    busy: bool = False  # a renegotiation is under way (Janus takes one at a time)
    restarts: int = 0


def offer_problem(sdp: str, opus_pt: int) -> str | None:
    """Why a restart's offer cannot renegotiate this call (None: it can): it must be a
    WebRTC offer, and keep Opus on the payload type the agent was given."""
    try:
        check_offer(sdp)
    except SdpError as e:
        return f"ice_restart: {e}"
    offered = opus_payload_type(sdp)
    if offered != opus_pt:
        return f"ice_restart: the offer must keep Opus on payload type {opus_pt}"
    return None


class IceRestarts:
    def __init__(self, gateway: MediaGateway, publish: Publish, per_minute: int) -> None:
        self.gateway = gateway
        self.publish = publish
        self.per_minute = per_minute
        self._calls: dict[str, CallMedia] = {}

    def remember(self, call_id: str, plain: PlainOffer, plain_answer: str) -> None:
        self._calls[call_id] = CallMedia(plain, plain_answer)

    def forget(self, call_id: str | None) -> None:
        self._calls.pop(call_id or "", None)

    async def handle(self, call_id: str, handle: Handle | None, raw: Any) -> None:
        """The page's ``ice_restart`` for ``call_id``: answered on its control channel."""
        logs.CALL_ID.set(call_id)  # this task's log lines are about this call
        media = self._calls.get(call_id)
        if media is None or handle is None:
            return  # the call is over (or never started): nobody to answer
        try:
            msg = page.parse_ice_restart(raw)
        except page.BadMessage as e:
            self._refuse(call_id, "bad_message", str(e))
            return
        sdp = msg.sdp
        problem = offer_problem(sdp, media.plain.opus_pt)
        if problem is not None:
            self._refuse(call_id, "bad_message", problem)
            return
        if media.busy:
            why = "An ICE restart is already under way; wait for its answer."
            self._refuse(call_id, "rate_limited", why)
            return
        if self.per_minute > 0:
            wait, tat = gcra(media.tat, time.monotonic(), self.per_minute, 60.0)
            if wait > 0:
                why = f"Too many ICE restarts; try again in {math.ceil(wait)} s."
                self._refuse(call_id, "rate_limited", why)
                return
            media.tat = tat
        media.busy = True
        t0 = time.perf_counter()
        try:
            answer = await self.gateway.renegotiate(handle, sdp, media.plain_answer, media.plain)
        except (OfferRejected, MediaUnavailable) as e:
            metrics.ICE_RESTARTS.labels("failed").inc()
            self.publish(call_id, page.failure("ice_restart_failed", e, origin="ice restart"))
            return
        finally:
            media.busy = False
        media.restarts += 1
        metrics.ICE_RESTARTS.labels("answered").inc()
        log.info("ice restart %d renegotiated in %.0f ms", media.restarts, _ms(t0))
        self.publish(call_id, page.ice_answer(answer, msg.id))

    def _refuse(self, call_id: str, code: str, why: str) -> None:
        metrics.ICE_RESTARTS.labels("refused").inc()
        self.publish(call_id, page.error(code, why))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
