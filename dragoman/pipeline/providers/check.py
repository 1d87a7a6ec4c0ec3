"""``dragoman providers check``: one short session per configured speech-to-speech provider.

What an operator runs after setting keys: for each provider it opens a session through the
same SDK code a call uses, streams a second or two of generated English speech (Piper, the
bundled voice; a synthetic vowel when Piper cannot load) followed by silence at the real-time
pace, and reports whether the session opened, how long that took, how long after the speech
began the first translated audio came back, and any error (the provider's own words: this
is the operator's terminal, not a caller's page). Not part of CI: it needs real keys; without
a key it says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from dragoman.config import Settings
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.base import ProviderError
from dragoman.pipeline.providers.catalog import CHECKED, PROVIDERS, unavailable_reason

log = logging.getLogger(__name__)

SPEECH_RATE = 24000
SENTENCE = "Hello, can you hear me? This is a short test."
MAX_SPEECH_S = 2.0
PAIR = LanguagePair("en", "es")


@dataclass
class CheckResult:
    provider: str
    configured: bool
    connected: bool = False
    connect_ms: float | None = None
    first_audio_ms: float | None = None  # after the speech began
    audio_s: float = 0.0  # translated audio received
    texts: list[str] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        if not self.configured:
            return f"{self.provider}: not checked: {self.error}"
        if not self.connected:
            return f"{self.provider}: did NOT connect: {self.error}"
        parts = [f"{self.provider}: connected in {self.connect_ms:.0f} ms"]
        if self.first_audio_ms is not None:
            parts.append(
                f"first translated audio {self.first_audio_ms:.0f} ms after the speech began "
                f"({self.audio_s:.1f} s received)"
            )
        else:
            parts.append("no translated audio came back")
        if self.texts:
            heard = " ".join("".join(self.texts).split())
            parts.append(f"transcripts: {heard[:80]!r}")
        if self.error:
            parts.append(f"error: {self.error}")
        return "; ".join(parts)

    @property
    def ok(self) -> bool:
        return self.connected and self.error is None


def generated_speech(settings: Settings) -> np.ndarray:
    """About a second and a half of English speech at 24 kHz (PCM16)."""
    try:
        from dragoman.inference.engines import PiperEngine
        from dragoman.inference.models import resolve_piper

        engine = PiperEngine(resolve_piper(settings.piper_voice_path), SPEECH_RATE)
        pcm = b"".join(engine.synthesize(SENTENCE))
        speech = np.frombuffer(pcm, dtype=np.int16)
    except Exception as e:  # no voice installed or it failed to load: a vowel instead
        log.warning("Piper is not available (%s); a synthetic vowel stands in for speech", e)
        t = np.arange(int(SPEECH_RATE * 1.2)) / SPEECH_RATE
        voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20))
        speech = (voiced / np.max(np.abs(voiced)) * 8000 * np.sin(np.pi * t / t[-1])).astype(
            np.int16
        )
    return speech[: int(SPEECH_RATE * MAX_SPEECH_S)]


async def check_one(
    name: str, settings: Settings, speech: np.ndarray, listen_s: float = 6.0
) -> CheckResult:
    reason = unavailable_reason(PROVIDERS[name], settings)
    if reason:
        return CheckResult(name, configured=False, error=reason)
    import soxr

    result = CheckResult(name, configured=True)
    provider = PROVIDERS[name].speech_provider(settings)
    rate = provider.input_rate
    pcm = speech if rate == SPEECH_RATE else soxr.resample(speech, SPEECH_RATE, rate)
    audio = np.concatenate([np.asarray(pcm, np.int16), np.zeros(int(rate * listen_s), np.int16)])
    chunk = rate * settings.provider_chunk_ms // 1000
    timeout = settings.provider_connect_timeout_s
    t0 = time.monotonic()
    try:
        async with provider.connect(PAIR, timeout) as session:
            deadline = t0 + timeout
            while not result.connected:
                events = await asyncio.wait_for(session.receive(), deadline - time.monotonic())
                for ev in events:
                    if ev.kind == "ready":
                        result.connected = True
                    elif ev.kind == "error" and ev.fatal:
                        raise ProviderError(ev.code, ev.text)
            result.connect_ms = (time.monotonic() - t0) * 1000
            started = time.monotonic()

            async def send() -> None:
                for i in range(0, len(audio), chunk):
                    await session.send_audio(audio[i : i + chunk].tobytes())
                    due = started + (i + chunk) / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))

            sender = asyncio.create_task(send())
            try:
                end = started + len(audio) / rate
                while time.monotonic() < end:
                    try:
                        events = await asyncio.wait_for(session.receive(), end - time.monotonic())
                    except TimeoutError:
                        break
                    for ev in events:
                        if ev.kind == "audio":
                            if result.first_audio_ms is None:
                                result.first_audio_ms = (time.monotonic() - started) * 1000
                            result.audio_s += len(ev.audio) / 2 / ev.rate
                        elif ev.kind in ("source_text", "translation_text"):
                            result.texts.append(ev.text)
                        elif ev.kind == "error":
                            result.error = f"{ev.code}: {ev.text}"
                    if any(ev.kind == "closed" for ev in events):
                        break
            finally:
                sender.cancel()
            await asyncio.wait_for(session.close(), 2.0)
    except ProviderError as e:
        result.error = f"{e.code}: {e.detail}"
    except Exception as e:  # the operator wants to see what broke, whatever it is
        result.error = f"{type(e).__name__}: {e}"
    return result


async def check_all(
    settings: Settings, names: list[str] | None = None, listen_s: float = 6.0
) -> list[CheckResult]:
    names = names or list(CHECKED)
    configured = [n for n in names if unavailable_reason(PROVIDERS[n], settings) is None]
    speech = generated_speech(settings) if configured else np.zeros(0, np.int16)
    return [await check_one(n, settings, speech, listen_s) for n in names]
