"""Prometheus metrics of a worker (one node)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CALLS_ACTIVE = Gauge("dragoman_worker_calls_active", "Calls running on this node")
IDLE_AGENTS = Gauge("dragoman_worker_idle_agents", "Pre-forked agent processes waiting")
CAPACITY = Gauge("dragoman_worker_capacity", "Call slots of this node")
LOCAL_CAPACITY = Gauge(
    "dragoman_worker_local_capacity", "Local-pipeline call slots of this node (its inference)"
)
LOCAL_CALLS_ACTIVE = Gauge(
    "dragoman_worker_local_calls_active", "Calls on this node using its inference service"
)
DRAINING = Gauge("dragoman_worker_draining", "1 while the node drains, else 0")
CALLS_ENDED = Counter("dragoman_worker_calls_ended_total", "Calls ended, by reason", ["reason"])
ANSWER_SECONDS = Histogram(
    "dragoman_worker_answer_seconds",
    "Offer received → SDP answer ready on this node",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
ICE_RESTARTS = Counter(
    "dragoman_worker_ice_restarts_total",
    "Callers' ICE restarts (a network switch): answered, refused (a bad offer, over the rate) "
    "or failed (the media gateway did not renegotiate)",
    ["outcome"],
)
for _outcome in ("answered", "refused", "failed"):
    ICE_RESTARTS.labels(_outcome)
AUDIO_FRAMES = Counter(
    "dragoman_worker_audio_frames_total",
    "20 ms audio frames agents sent to callers, by punctuality (late: > 20 ms after its slot)",
    ["outcome"],
)
for _punctuality in ("on_time", "late"):  # at 0 from the start, so rate() sees the first
    AUDIO_FRAMES.labels(_punctuality)
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

# From the inference service's /ping, which the worker's supervisor sends every second.
INFERENCE_QUEUE_DEPTH = Gauge(
    "dragoman_inference_queue_depth",
    "Whisper jobs waiting in the node's inference service, by priority (final | partial)",
    ["priority"],
)
INFERENCE_RUNNING = Gauge("dragoman_inference_running", "Whisper jobs running now")


class _QueueWaits(Collector):
    """``dragoman_inference_queue_wait_seconds``: the service's own cumulative wait buckets
    (``inference.lanes``), as a histogram by priority; counts restart with the service."""

    def __init__(self) -> None:
        self.wait_ms: dict[str, Any] = {}  # priority -> {"count", "sum_ms", "le_ms"}

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "dragoman_inference_queue_wait_seconds",
            "Queued → started wait of Whisper jobs in the node's inference service",
            labels=["priority"],
        )
        for priority, w in sorted(self.wait_ms.items()):
            buckets = [(str(int(ms) / 1000), n) for ms, n in w["le_ms"].items()]
            buckets.append(("+Inf", w["count"]))
            family.add_metric([priority], buckets, sum_value=w["sum_ms"] / 1000)
        yield family


INFERENCE_QUEUE_WAIT = _QueueWaits()
REGISTRY.register(INFERENCE_QUEUE_WAIT)


def record_stt(stt: dict[str, Any]) -> None:
    """Export the ``stt`` block of an inference ``/ping`` reply."""
    for priority, n in stt.get("queued", {}).items():
        INFERENCE_QUEUE_DEPTH.labels(priority).set(n)
    INFERENCE_RUNNING.set(stt.get("running", 0))
    INFERENCE_QUEUE_WAIT.wait_ms = dict(stt.get("wait_ms", {}))


# --- for the dashboard and alerts (deploy/grafana, deploy/prometheus) ---------------------
PROVIDER_CALLS_ACTIVE = Gauge(
    "dragoman_worker_provider_calls_active", "Calls running on this node, by provider", ["provider"]
)
MEDIA_CONNECT_SECONDS = Histogram(
    "dragoman_worker_media_connect_seconds",
    "SDP answer given → the caller's WebRTC media up (ICE + DTLS), once per call",
    buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
SPEECH_END_SECONDS = Histogram(
    "dragoman_worker_speech_end_seconds",
    "End of the source speech (VAD stop; simultaneous: the end of the words a piece covers)"
    " → each later step the agent marks, by step (first_audio_out: its translation heard)",
    ["step"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13),
)
# The steps an agent's ``metrics`` message may mark after the end of speech (README, control
# channel protocol); others are ignored so the label set stays bounded.
SPEECH_STEPS = (
    "finalise",
    "identified",
    "translated",
    "tts_start",
    "tts_first_chunk",
    "first_audio_out",
)

for _step in SPEECH_STEPS:  # at 0 from the start, so rate() sees the first utterance
    SPEECH_END_SECONDS.labels(_step)


def record_marks(marks: Any) -> None:
    """Observe an utterance's latency marks (agent clock) from its ``metrics`` page message.
    A step marked before the end of speech (simultaneous: speaking while the source still
    talks) counts as 0."""
    if not isinstance(marks, dict):
        return
    end = marks.get("vad_stop", marks.get("source_end"))
    if not isinstance(end, int | float):
        return
    for step in SPEECH_STEPS:
        t = marks.get(step)
        if isinstance(t, int | float):
            SPEECH_END_SECONDS.labels(step).observe(max(0.0, t - end))


class _NodeCpu(Collector):
    """The whole node's CPU (agents, Janus and inference are processes of their own), read
    at scrape time: ``rate(dragoman_worker_node_cpu_seconds_total[1m]) /
    dragoman_worker_node_cpus`` is its busy share."""

    def collect(self) -> Iterator[Metric]:
        t = psutil.cpu_times()
        # Busy as psutil's cpu_percent counts it: no idle, no iowait; guest time is already
        # inside user/nice on Linux.
        busy = sum(
            getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal")
        )
        yield CounterMetricFamily(
            "dragoman_worker_node_cpu_seconds",
            "CPU seconds this node's cores spent busy, all processes",
            value=busy,
        )
        yield GaugeMetricFamily(
            "dragoman_worker_node_cpus", "Logical CPUs of this node", value=psutil.cpu_count()
        )


REGISTRY.register(_NodeCpu())
