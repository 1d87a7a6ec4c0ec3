"""The short tone an agent plays the moment the media path is up.

It is the caller's proof that the interpreter is there (and what the press → first-audio
figure measures); it needs no model, so it is ready before any call arrives.
"""

from __future__ import annotations

import numpy as np


def chime(sample_rate: int, volume: float = 0.25) -> bytes:
    """Two soft rising notes, ~260 ms, PCM16 mono; length a multiple of 10 ms."""
    parts = []
    for freq, dur in ((660.0, 0.12), (880.0, 0.14)):
        n = int(sample_rate * dur)
        t = np.arange(n) / sample_rate
        env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.015)  # 15 ms fades, no clicks
        parts.append(np.sin(2 * np.pi * freq * t) * env)
    audio = np.concatenate(parts)
    ten_ms = sample_rate // 100
    audio = np.pad(audio, (0, (-len(audio)) % ten_ms))
    return (audio * volume * 32767).astype(np.int16).tobytes()
