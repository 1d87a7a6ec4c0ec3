"""The inference service's HTTP API, as agents and the service both need to know it.

Plain HTTP/1.1 over the node's Unix socket; audio travels as raw bodies, never encoded:

``POST /stt?language=ja&task=transcribe``  body PCM16 mono 16 kHz (no ``language``: detect)
    → ``{"text", "language", "duration_s", "compute_ms"}``
``POST /identify?candidates=ja&candidates=en``  body PCM16 mono 16 kHz
    → ``{"language", "probs"}``
``POST /tts``  body the sentence (UTF-8 text)
    → PCM16 mono streamed as it is synthesised; its rate in the ``X-Sample-Rate`` header
``GET /ping`` → ``{"ok": true, "pid", "load_ms"}`` (the worker's health probe)

A failed request answers 4xx/5xx with ``{"error": "..."}``; a synthesis that fails after its
first audio ends the stream early (the client sees an incomplete body).
"""

from __future__ import annotations

STT = "/stt"
IDENTIFY = "/identify"
TTS = "/tts"
PING = "/ping"
SAMPLE_RATE_HEADER = "x-sample-rate"
AUDIO = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
MAX_BODY = 64 << 20  # 64 MB: far above any utterance (30 s of 16 kHz PCM16 is ~1 MB)
