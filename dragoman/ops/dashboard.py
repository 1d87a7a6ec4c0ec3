"""The Grafana dashboard for a dragoman fleet, built with grafana-foundation-sdk.

The committed ``deploy/grafana/dragoman.json`` is this module's output
(``dragoman ops dashboard > deploy/grafana/dragoman.json``); a test keeps the two equal and
checks that every query names only metrics the code exports. The panels are plain data
(``ROWS``) so tests and tools can read the queries without Grafana.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# PromQL range of rate()/increase(): Grafana fills it in from the scrape interval.
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def _quantiles(metric: str, what: str, where: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)):
    """p50/p95/p99 of a histogram over all instances."""
    sel = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({sel}[{RATE}])))",
            f"{what} p{round(q * 100)}",
        )
        for q in qs
    )


ROWS: tuple[tuple[str, tuple[Chart, ...]], ...] = (
    (
        "Calls",
        (
            Chart(
                "Calls running, by provider",
                "Calls on agents now (workers), by provider; direct-mode sessions run between "
                "the page and the provider and are not here.",
                "short",
                (
                    Query(
                        "sum by (provider) (dragoman_worker_provider_calls_active)", "{{provider}}"
                    ),
                    Query("sum(dragoman_worker_calls_active)", "all"),
                ),
            ),
            Chart(
                "Call requests, by outcome",
                "POST /v1/calls and /v1/calls/direct per second, by what the api answered.",
                "reqps",
                (
                    Query(
                        f"sum by (outcome) (rate(dragoman_api_calls_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                ),
            ),
            Chart(
                "Refusals, by reason",
                "Call requests the fleet could not serve (no_agent, no_local_capacity, "
                "agent_failed, rejected, registry_unavailable) per second.",
                "reqps",
                (
                    Query(
                        "sum by (outcome) (rate(dragoman_api_calls_total"
                        f'{{outcome!~"answered|direct|direct_overflow"}}[{RATE}]))',
                        "{{outcome}}",
                    ),
                ),
            ),
            Chart(
                "Calls ended, by reason",
                "Calls ended on the workers per second, by reason (remote_hangup, "
                "agent_unresponsive, media_lost, max_duration, …).",
                "short",
                (
                    Query(
                        f"sum by (reason) (rate(dragoman_worker_calls_ended_total[{RATE}]))",
                        "{{reason}}",
                    ),
                ),
            ),
            Chart(
                "Direct-overflow share",
                "Of the calls the fleet answered or sent to a provider because it was full, "
                "the share that overflowed to direct mode.",
                "percentunit",
                (
                    Query(
                        "(sum(rate(dragoman_api_calls_total"
                        f'{{outcome="direct_overflow"}}[{RATE}])) or vector(0))'
                        " / sum(rate(dragoman_api_calls_total"
                        f'{{outcome=~"answered|direct_overflow"}}[{RATE}]))',
                        "direct overflow",
                    ),
                ),
            ),
        ),
    ),
    (
        "Latency",
        (
            Chart(
                "Connect time",
                "POST /v1/calls → SDP answer (api), and answer → the caller's WebRTC media up "
                "(worker: ICE + DTLS, the caller's network included).",
                "s",
                _quantiles("dragoman_api_answer_seconds", "answer")
                + _quantiles("dragoman_worker_media_connect_seconds", "media up", qs=(0.5, 0.95)),
            ),
            Chart(
                "First translated audio after the speaker stops",
                "End of the source speech → the first audio of its translation leaves the "
                "agent (local pipeline; simultaneous: the end of the words a piece covers, 0 "
                "when it was already speaking).",
                "s",
                _quantiles(
                    "dragoman_worker_speech_end_seconds", "first audio", 'step="first_audio_out"'
                ),
            ),
            Chart(
                "End-of-speech latency, by step (p50)",
                "End of the source speech → each step the agent marks: finalise (STT done), "
                "translated, tts_start, tts_first_chunk, first_audio_out.",
                "s",
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le, step) "
                        f"(rate(dragoman_worker_speech_end_seconds_bucket[{RATE}])))",
                        "{{step}}",
                    ),
                ),
            ),
            Chart(
                "Inference queue wait (p95)",
                "Queued → started wait of Whisper jobs in the nodes' inference services, by "
                "priority (finals go first).",
                "s",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (le, priority) "
                        f"(rate(dragoman_inference_queue_wait_seconds_bucket[{RATE}])))",
                        "{{priority}}",
                    ),
                ),
            ),
            Chart(
                "Late audio frames",
                "Share of the 20 ms frames agents sent callers more than 20 ms after their slot.",
                "percentunit",
                (
                    Query(
                        "sum(rate(dragoman_worker_audio_frames_total"
                        f'{{outcome="late"}}[{RATE}])) / sum(rate('
                        f"dragoman_worker_audio_frames_total[{RATE}]))",
                        "late",
                    ),
                ),
            ),
        ),
    ),
    (
        "Supervision",
        (
            Chart(
                "Restarts and kills",
                "Agents the workers killed (by reason), and restarts of the inference "
                "service, Janus and the agents' forkserver, per interval.",
                "short",
                (
                    Query(
                        f"sum by (reason) (increase(dragoman_worker_agents_killed_total[{RATE}]))",
                        "agent killed: {{reason}}",
                    ),
                    Query(
                        f"sum(increase(dragoman_worker_inference_restarts_total[{RATE}]))",
                        "inference restarts",
                    ),
                    Query(
                        f"sum(increase(dragoman_worker_media_restarts_total[{RATE}]))",
                        "Janus restarts",
                    ),
                    Query(
                        f"sum(increase(dragoman_worker_forkserver_restarts_total[{RATE}]))",
                        "forkserver restarts",
                    ),
                ),
            ),
            Chart(
                "Up",
                "1 while up: each node's Janus and inference service, and each api's view "
                "of the registry (Redis).",
                "short",
                (
                    Query("dragoman_worker_media_up", "Janus {{instance}}"),
                    Query("dragoman_worker_inference_up", "inference {{instance}}"),
                    Query("dragoman_api_registry_up", "registry from {{instance}}"),
                ),
            ),
        ),
    ),
    (
        "Capacity",
        (
            Chart(
                "Node CPU busy",
                "Busy share of each node's cores (agents, Janus, inference, worker).",
                "percentunit",
                (
                    Query(
                        f"rate(dragoman_worker_node_cpu_seconds_total[{RATE}])"
                        " / dragoman_worker_node_cpus",
                        "{{instance}}",
                    ),
                ),
            ),
            Chart(
                "Idle agents (pre-forked pool)",
                "Agent processes waiting for a call on each node.",
                "short",
                (Query("dragoman_worker_idle_agents", "{{instance}}"),),
            ),
            Chart(
                "Desired vs actual nodes",
                "The autoscale policy's node count against the nodes in the registry, by "
                "state (every api reports the same fleet: the max is shown).",
                "short",
                (
                    Query("max(dragoman_autoscale_desired_nodes)", "desired"),
                    Query("max by (state) (dragoman_fleet_nodes)", "{{state}}"),
                ),
            ),
            Chart(
                "Free slots",
                "Calls READY nodes can take now; local: calls their inference can also take.",
                "short",
                (
                    Query("max(dragoman_fleet_free_slots)", "call slots"),
                    Query("max(dragoman_fleet_free_local_slots)", "local slots"),
                ),
            ),
            Chart(
                "Capacity in use",
                "Calls over call slots, and local-pipeline calls over local slots (what the "
                "nodes' inference services can serve), over all nodes.",
                "percentunit",
                (
                    Query(
                        "sum(dragoman_worker_calls_active) / sum(dragoman_worker_capacity)",
                        "call slots",
                    ),
                    Query(
                        "sum(dragoman_worker_local_calls_active)"
                        " / sum(dragoman_worker_local_capacity)",
                        "local slots",
                    ),
                ),
            ),
            Chart(
                "Inference queue",
                "Whisper jobs waiting (by priority) and running, over all nodes.",
                "short",
                (
                    Query("sum by (priority) (dragoman_inference_queue_depth)", "{{priority}}"),
                    Query("sum(dragoman_inference_running)", "running"),
                ),
            ),
        ),
    ),
)


def queries() -> list[tuple[str, Query]]:
    """Every (panel title, query) of the dashboard."""
    return [(c.title, q) for _, charts in ROWS for c in charts for q in c.queries]


def build() -> object:
    """The dashboard as the SDK's model (JSON through its encoder)."""
    from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
    from grafana_foundation_sdk.models import common as c_model
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    legend = (
        common.VizLegendOptions()
        .display_mode(c_model.LegendDisplayMode.LIST)
        .placement(c_model.LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    tooltip = (
        common.VizTooltipOptions()
        .mode(c_model.TooltipDisplayMode.MULTI)
        .sort(c_model.SortOrder.NONE)
    )
    board = (
        dashboard.Dashboard("dragoman")
        .uid("dragoman")
        .description("Calls, latency, supervision and capacity of a dragoman fleet")
        .tags(["dragoman"])
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )
    for row, charts in ROWS:
        board = board.with_row(dashboard.Row(row))
        for c in charts:
            panel = (
                timeseries.Panel()
                .title(c.title)
                .description(c.description)
                .unit(c.unit)
                .min(0)
                .height(8)
                .span(8)
                .datasource(ds)
                .legend(legend)
                .tooltip(tooltip)
            )
            for i, q in enumerate(c.queries):
                panel = panel.with_target(
                    prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(65 + i))
                )
            board = board.with_panel(panel)
    return board.build()


def render() -> str:
    """The dashboard's JSON, as committed in deploy/grafana/dragoman.json."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
