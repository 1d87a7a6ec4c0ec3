"""Prometheus metrics of a worker (one node)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS_ACTIVE = Gauge("dragoman_worker_calls_active", "Calls running on this node")
IDLE_AGENTS = Gauge("dragoman_worker_idle_agents", "Pre-forked agent processes waiting")
CAPACITY = Gauge("dragoman_worker_capacity", "Call slots of this node")
DRAINING = Gauge("dragoman_worker_draining", "1 while the node drains, else 0")
CALLS_ENDED = Counter("dragoman_worker_calls_ended_total", "Calls ended, by reason", ["reason"])
ANSWER_SECONDS = Histogram(
    "dragoman_worker_answer_seconds",
    "Offer received → SDP answer ready on this node",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
AUDIO_FRAMES = Counter(
    "dragoman_worker_audio_frames_total",
    "20 ms audio frames agents sent to callers, by punctuality (late: > 20 ms after its slot)",
    ["outcome"],
)
MEDIA_UP = Gauge("dragoman_worker_media_up", "1 while the node's media gateway (Janus) is up")
MEDIA_RESTARTS = Counter(
    "dragoman_worker_media_restarts_total", "Times the media gateway was lost and restarted"
)
