"""Prometheus metrics of the control plane."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("dragoman_api_calls_total", "Call requests, by outcome", ["outcome"])
# Every outcome api.calls counts, made at 0 so each series exists before its first call
# (a series that appears already at 1 shows no increase to rate()).
CALL_OUTCOMES = (
    "answered",
    "direct",
    "direct_overflow",
    "rejected",
    "agent_failed",
    "registry_unavailable",
    "no_agent",
    "no_local_capacity",
)
for _outcome in CALL_OUTCOMES:
    CALLS.labels(_outcome)
ANSWER_SECONDS = Histogram(
    "dragoman_api_answer_seconds",
    "POST /v1/calls received → answer returned",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
RESERVATION_CONFLICTS = Counter(
    "dragoman_api_reservation_conflicts_total",
    "Reservations that could not take the node the snapshot ranked first",
)
FLEET_FREE_SLOTS = Gauge("dragoman_fleet_free_slots", "Free call slots on READY, live nodes")
FLEET_FREE_LOCAL_SLOTS = Gauge(
    "dragoman_fleet_free_local_slots",
    "Local-pipeline calls READY, live nodes can take now (free inference and call slots)",
)
FLEET_NODES = Gauge("dragoman_fleet_nodes", "Known nodes, by state", ["state"])
DESIRED_NODES = Gauge("dragoman_autoscale_desired_nodes", "Autoscale policy output")
REGISTRY_UP = Gauge(
    "dragoman_api_registry_up",
    "1 if this api's last fleet read from the registry (scrape, probe, autoscale) worked",
)
