"""The fakes' "speech": tones they send back, and the loudness test for what they receive."""

from __future__ import annotations

import numpy as np

SPEECH_RMS = 300.0


def tone(rate: int, seconds: float, hz: float = 330.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 6000).astype(np.int16).tobytes()


def is_speech(pcm16: bytes) -> bool:
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    return samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > SPEECH_RMS
