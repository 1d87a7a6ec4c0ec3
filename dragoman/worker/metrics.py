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
AGENTS_KILLED = Counter(
    "dragoman_worker_agents_killed_total",
    "Agent processes the worker killed, by reason (agent_unresponsive, start_timeout, …)",
    ["reason"],
)
FORKSERVER_RESTARTS = Counter(
    "dragoman_worker_forkserver_restarts_total",
    "Times the agents' forkserver was lost and replaced",
)
INFERENCE_UP = Gauge("dragoman_worker_inference_up", "1 while the node's inference service is up")
INFERENCE_RESTARTS = Counter(
    "dragoman_worker_inference_restarts_total",
    "Times the inference service was lost (exited or stopped answering) and restarted",
)
