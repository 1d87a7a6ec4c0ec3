"""The inference service's HTTP API, as agents and the service both need to know it.

Plain HTTP/1.1 over the node's Unix socket; audio travels as raw bodies, never encoded:

``POST /stt?language=ja&task=transcribe``  body PCM16 mono 16 kHz (no ``language``: detect)
    → ``{"text", "language", "duration_s", "compute_ms", "queue_ms", "window_s"}``
    Optional query parameters:
    ``prompt=…``  the text said before this audio (Whisper's previous-text context; the
        service keeps its last ``PROMPT_CHARS`` characters)
    ``words=1``  also ``"words": [{"start", "end", "text", "probability"}]`` (seconds from
        the start of the audio sent; a word's text keeps its leading space, so the words
        joined are the text; for ``task=translate`` the English words, aligned to the
        source speech) and ``"segments": [{"start", "end", "text"}]`` (its sentences)
    ``priority=final|partial`` (default ``final``)  the service runs queued ``final``
        requests before queued ``partial`` ones, whatever their arrival
    ``stream=<id>``  a queued ``partial`` of a stream is dropped when a newer request of
        the same stream (a ``partial``, or a ``final``) is queued: it answers **409**
        with the error code ``superseded``. A ``final`` is never dropped.
    ``queue_ms`` is how long the request waited for a Whisper worker; ``window_s`` the
    encoder window its decode used. A transcribe and a translate of the same audio share
    one encoder pass.
``POST /identify?candidates=ja&candidates=en``  body PCM16 mono 16 kHz
    → ``{"language", "probs", "queue_ms"}`` (runs at ``final`` priority)
``POST /tts?speed=1.25``  body the sentence (UTF-8 text)
    → PCM16 mono streamed as it is synthesised; its rate in the ``X-Sample-Rate`` header.
    ``speed`` (default 1) within ``TTS_SPEED_MIN``–``TTS_SPEED_MAX``, else 400.
``GET /ping`` → ``{"ok": true, "pid", "load_ms", "stt": {…}}`` (the worker's health probe;
    ``stt``: the Whisper lane's workers and threads, its queue by priority, requests done,
    superseded and retried, and queue-wait totals and histogram, for metrics)

A failed request answers 4xx/5xx with ``{"error": {"code", "message"}}``, the body every
dragoman error has (``contract.errors.error_body``): 400 ``bad_request`` (a bad parameter),
413 ``body_too_large``, 409 ``superseded``, 500 ``inference_failed``; a
synthesis that fails after its first audio ends the stream early (the client sees an
incomplete body).
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
PRIORITIES = ("final", "partial")
SUPERSEDED = "superseded"  # the 409's error code
PROMPT_CHARS = 200  # of an stt prompt, kept from its end
TTS_SPEED_MIN = 0.5
TTS_SPEED_MAX = 2.0
