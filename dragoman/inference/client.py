"""Client of the node-local inference service, used inside agent processes.

HTTP over the node's Unix socket (the API is in ``wire``), with one small connection pool
per client, so an agent's utterances reuse a connection instead of opening one each.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from dragoman.inference import wire

# httpx picks its network backend at the first request and imports it then; import it now,
# so that agents forked from the preloading forkserver share it instead of each paying it.
try:
    import anyio._backends._asyncio  # noqa: F401
    import httpcore._backends.anyio  # noqa: F401
except ImportError:  # a layout change in those libraries costs only the import per agent
    pass


class InferenceError(RuntimeError):
    """The service is down, unreachable, or failed the request."""


class Superseded(Exception):
    """A queued ``partial`` request dropped because a newer request of the same ``stream``
    came (HTTP 409): nothing is wrong, the newer request's answer is the one to use.
    Deliberately not an ``InferenceError``, which callers take as the service being down."""


Priority = Literal["final", "partial"]


@dataclass(frozen=True)
class Word:
    """A word with its time in the audio sent, seconds from its start. Its text is as
    Whisper spells it, leading space included: ``"".join(w.text for w in words)`` is the
    text. For ``translate``, the English words, aligned to the source speech."""

    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """A sentence of the text (it ends after . ? ! or 。), with its words' times."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SttResult:
    text: str
    language: str
    duration_s: float
    compute_ms: float
    words: tuple[Word, ...] = ()  # asked for with ``words=True``
    queue_ms: float = 0.0  # how long the request waited for a Whisper worker
    # The text's sentences with their times (``words=True``): where the audio may be cut.
    segments: tuple[Segment, ...] = ()


# Plain HTTP on a local socket never uses TLS, but httpx makes an SSL context per transport
# unless given one: this one is made once, in the forkserver, and shared by every agent.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_NO_TLS.check_hostname = False
_NO_TLS.verify_mode = ssl.CERT_NONE

# A client never keeps an idle connection as long as the service does (see its
# timeout_keep_alive), so it never reuses one the service is closing.
_LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=2, keepalive_expiry=30.0)


class InferenceClient:
    def __init__(self, socket_path: Path | str, timeout_s: float = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    @property
    def _http(self) -> httpx.AsyncClient:
        # Made at the first request: an idle agent, or one whose call needs no local model
        # (a cloud provider), pays none of its memory.
        if self._client is None:
            # No proxy settings from the environment (trust_env): this is a local socket.
            transport = httpx.AsyncHTTPTransport(
                uds=self.socket_path, verify=_NO_TLS, limits=_LIMITS, trust_env=False
            )
            self._client = httpx.AsyncClient(
                transport=transport,
                base_url="http://inference",
                timeout=self.timeout_s,
                trust_env=False,
            )
        return self._client

    async def _request(self, what: str, method: str, path: str, **kw: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kw)
        except httpx.ConnectError as e:
            raise InferenceError(f"inference service unreachable: {e}") from e
        except httpx.HTTPError as e:  # timeouts, a connection lost mid-request
            raise InferenceError(f"{what} failed: {_why(e)}") from e
        if response.status_code == 409:
            raise Superseded(_error(response, what))
        if response.status_code != 200:
            raise InferenceError(_error(response, what))
        try:
            return response.json()
        except ValueError as e:
            raise InferenceError(f"{what} failed: the service answered {e}") from e

    async def stt(
        self,
        pcm16_16k: bytes,
        language: str | None,
        task: str,
        *,
        prompt: str | None = None,
        words: bool = False,
        priority: Priority = "final",
        stream: str | None = None,
    ) -> SttResult:
        """Transcribe (``task="transcribe"``) or translate into English (``"translate"``).

        ``prompt``: the text said before this audio (its end is kept), which Whisper
        continues. ``words``: word timings too. ``priority``: ``final`` requests run before
        queued ``partial`` ones; a queued partial of a ``stream`` (any id, e.g. a call's)
        is dropped when a newer request of it comes, and raises ``Superseded``."""
        if priority not in wire.PRIORITIES:
            raise ValueError(f"priority must be one of {wire.PRIORITIES}, not {priority!r}")
        params: dict[str, str] = {"task": task}
        if language is not None:
            params["language"] = language
        if prompt and prompt.strip():
            params["prompt"] = prompt.strip()[-wire.PROMPT_CHARS :]
        if words:
            params["words"] = "1"
        if priority != "final":
            params["priority"] = priority
        if stream:
            params["stream"] = stream
        body = await self._request(
            "speech-to-text", "POST", wire.STT, params=params, **_audio(pcm16_16k)
        )
        return SttResult(
            body["text"],
            body["language"],
            body["duration_s"],
            body["compute_ms"],
            words=tuple(_word(w) for w in body.get("words") or ()),
            queue_ms=float(body.get("queue_ms", 0.0)),
            segments=tuple(
                Segment(float(s["start"]), float(s["end"]), str(s["text"]))
                for s in body.get("segments") or ()
            ),
        )

    async def identify(self, pcm16_16k: bytes, candidates: list[str]) -> str:
        """Which of ``candidates`` is spoken in this utterance."""
        body = await self._request(
            "language identification",
            "POST",
            wire.IDENTIFY,
            params={"candidates": candidates},
            **_audio(pcm16_16k),
        )
        return str(body["language"])

    async def tts(self, text: str, speed: float = 1.0) -> AsyncIterator[tuple[bytes, int]]:
        """Yield (PCM16 mono, sample_rate) chunks as the service synthesises them.

        ``speed`` > 1 speaks faster; it is kept within the service's range
        (``wire.TTS_SPEED_MIN``–``TTS_SPEED_MAX``). ValueError if it is not a positive number."""
        if not (isinstance(speed, int | float) and math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, not {speed!r}")
        speed = min(max(float(speed), wire.TTS_SPEED_MIN), wire.TTS_SPEED_MAX)
        request = self._http.build_request(
            "POST",
            wire.TTS,
            content=text.encode(),
            headers={"content-type": wire.TEXT},
            params={"speed": f"{speed:g}"} if speed != 1.0 else None,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.ConnectError as e:
            raise InferenceError(f"inference service unreachable: {e}") from e
        except httpx.HTTPError as e:
            raise InferenceError(f"text-to-speech failed: {_why(e)}") from e
        try:
            if response.status_code != 200:
                await response.aread()
                raise InferenceError(_error(response, "text-to-speech"))
            rate = int(response.headers[wire.SAMPLE_RATE_HEADER])
            odd = b""  # reads need not end on a sample: carry a split one to the next chunk
            try:
                async for data in response.aiter_raw():
                    data = odd + data
                    whole = len(data) & ~1
                    odd = data[whole:]
                    if whole:
                        yield data[:whole], rate
            except httpx.HTTPError as e:  # the service died or cut the stream short
                raise InferenceError(f"text-to-speech failed: {_why(e)}") from e
        finally:
            await response.aclose()

    async def ping(self) -> dict:
        """The service's health probe; InferenceError if it is down or does not answer."""
        try:
            response = await self._http.get(wire.PING)
        except httpx.HTTPError as e:
            raise InferenceError(f"ping failed: {e!r}") from e
        if response.status_code != 200:
            raise InferenceError(_error(response, "ping"))
        return response.json()

    async def aclose(self) -> None:
        """Close the pooled connections (an agent that exits need not)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _word(w: dict[str, Any]) -> Word:
    return Word(float(w["start"]), float(w["end"]), str(w["text"]), float(w.get("probability", 0)))


def _audio(pcm16: bytes) -> dict[str, Any]:
    return {"content": pcm16, "headers": {"content-type": wire.AUDIO}}


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__


def _error(response: httpx.Response, what: str) -> str:
    """The message of the service's error body (``contract.errors.error_body``)."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"{what} failed: HTTP {response.status_code}"
