"""deploy/grafana and deploy/prometheus: the dashboard is the generator's output and names
only exported metrics; the alert rules pass promtool's check and unit tests; and a real
Prometheus (Debian's) scraping a real ``serve`` during a call answers the dashboard's
queries with data."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import Server, final_caption, wait_until
from prometheus_client import REGISTRY

import dragoman.api.metrics
import dragoman.worker.metrics  # noqa: F401  (registers the worker's metrics)
from dragoman.bench.caller import Caller, load_wav_mono
from dragoman.bench.embedded import free_port
from dragoman.ops import dashboard

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dragoman.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yaml"
PROMETHEUS = "/usr/bin/prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: scripts/setup.sh --test installs it (prometheus)")
    return path


# --- the metrics the code exports, and the names a PromQL expression uses -----------------
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def exported_names() -> set[str]:
    """Every series name the api's and the worker's registries expose (labelled metrics
    with no child yet included: their family is collected all the same)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in matchers and by/on groupings), strings or ranges."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s):  # not inside 5m, 1e3
        if s[m.end() :].lstrip().startswith("(") or m.group() in _KEYWORDS:
            continue  # a function
        names.add(m.group())
    return names


def test_the_name_parser_finds_every_selected_metric() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, step) (rate(a_bucket{step="x"}[$__rate_interval])))'
        ' / on() (b or vector(0)) > bool c_total offset 5m and d{le="+Inf"}'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "d"}


def _dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def _alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_latency_marks_are_observed_from_the_end_of_speech() -> None:
    def seen(step: str) -> tuple[float, float]:
        labels = {"step": step}
        count = REGISTRY.get_sample_value("dragoman_worker_speech_end_seconds_count", labels)
        total = REGISTRY.get_sample_value("dragoman_worker_speech_end_seconds_sum", labels)
        return count or 0.0, total or 0.0

    steps = ("finalise", "translated", "first_audio_out")
    before = {s: seen(s) for s in steps}
    record = dragoman.worker.metrics.record_marks
    record({"vad_stop": 10.0, "finalise": 10.5, "first_audio_out": 11.25, "bogus": 99.0})
    record({"source_end": 20.0, "translated": 19.0})  # spoken before the speaker stopped: 0
    record({"translated": 5.0})  # no end of speech: nothing to measure from
    record(None)
    after = {s: seen(s) for s in steps}
    delta = {s: (after[s][0] - before[s][0], after[s][1] - before[s][1]) for s in steps}
    assert delta == {"finalise": (1, 0.5), "translated": (1, 0.0), "first_audio_out": (1, 1.25)}
    assert seen("bogus") == (0.0, 0.0)


# --- the dashboard ------------------------------------------------------------------------
def test_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD.read_text() == dashboard.render(), (
        "deploy/grafana/dragoman.json is stale: regenerate it with"
        " dragoman ops dashboard > deploy/grafana/dragoman.json"
    )
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "dragoman"
    titles = {p["title"] for p in board["panels"] if p["type"] == "timeseries"}
    assert titles == {c.title for _, charts in dashboard.ROWS for c in charts}
    # Every panel reads the Prometheus the operator picks.
    assert all(
        p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for p in board["panels"]
        if p["type"] == "timeseries"
    )


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    exported = exported_names()
    exprs = _dashboard_exprs() + [(r["alert"], r["expr"]) for r in _alert_rules()]
    assert len(exprs) > 20
    unknown = {(where, n) for where, e in exprs for n in metric_names(e) if n not in exported}
    assert not unknown, f"not exported by dragoman: {sorted(unknown)}"
    # The label values the queries pick are ones the code writes.
    steps = {s for _, e in exprs for s in re.findall(r'step="(\w+)"', e)}
    assert steps and steps <= set(dragoman.worker.metrics.SPEECH_STEPS)
    outcomes = {
        o for _, e in exprs for m in re.findall(r'outcome[!=]~?"([\w|]+)"', e) for o in m.split("|")
    }
    assert outcomes and outcomes <= set(dragoman.api.metrics.CALL_OUTCOMES) | {"late"}


# --- the alert rules ----------------------------------------------------------------------
def test_alert_rules_pass_promtool_check() -> None:
    out = subprocess.run(
        [_tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in out.stdout


def test_alert_rules_unit_tests_pass_and_cover_every_alert() -> None:
    out = subprocess.run(
        [_tool("promtool"), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    # Each alert has a case where it fires and one where it stays silent.
    fires, silent = set(), set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    alerts = {r["alert"] for r in _alert_rules()}
    assert fires == alerts and silent == alerts, (alerts - fires, alerts - silent)


# --- compose: Prometheus and Grafana wired to the internal ports -------------------------
COMPOSE = ROOT / "deploy/compose"


def _mounts(service: dict) -> dict[str, Path]:
    """Container path → host path of a compose service's bind mounts."""
    out = {}
    for v in service["volumes"]:
        host, container = v.split(":")[:2]
        if host.startswith("."):
            out[container] = (COMPOSE / host).resolve()
    return out


def _in_container(mounts: dict[str, Path], path: str) -> Path:
    """The host file a container path is, through the service's bind mounts."""
    for container, host in mounts.items():
        if path == container or path.startswith(container + "/"):
            return host / path[len(container) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted")


def test_compose_prometheus_scrapes_the_internal_ports_with_the_rules() -> None:
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    by_role: dict[str, set[str]] = {"api": set(), "worker": set()}
    for s in services.values():
        cmd = s.get("command") or []
        role = cmd[1] if cmd[:1] == ["dragoman"] else None
        env = s.get("environment", {})
        if role == "api":
            by_role["api"].add(f"{env['DRAGOMAN_INTERNAL_HOST']}:{env['DRAGOMAN_INTERNAL_PORT']}")
        elif role == "worker":
            by_role["worker"].add(f"{env['DRAGOMAN_WORKER_HOST']}:{env['DRAGOMAN_WORKER_PORT']}")
    prom = services["prometheus"]
    mounts = _mounts(prom)
    flags = dict(a.split("=", 1) for a in prom["command"])
    config_path = _in_container(mounts, flags["--config.file"])
    assert config_path == COMPOSE / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    jobs = {
        j["job_name"]: {t for sc in j["static_configs"] for t in sc["targets"]}
        for j in config["scrape_configs"]
    }
    assert jobs == {"dragoman-api": by_role["api"], "dragoman-worker": by_role["worker"]}
    assert len(by_role["api"]) == len(by_role["worker"]) == 2
    # The rule file the config names (relative to it) is deploy/prometheus/alerts.yaml in the
    # container too, and promtool accepts the config with it.
    [rules] = config["rule_files"]
    container_dir = flags["--config.file"].rsplit("/", 1)[0]
    container_rules = str(Path(container_dir, rules).resolve())
    assert _in_container(mounts, container_rules) == ALERTS
    out = subprocess.run(
        [_tool("promtool"), "check", "config", str(config_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Grafana provisions the Prometheus above and the dashboard file of deploy/grafana.
    grafana = services["grafana"]
    g_mounts = _mounts(grafana)
    provider_dir = _in_container(g_mounts, "/etc/grafana/provisioning/dashboards")
    [provider] = yaml.safe_load((provider_dir / "dragoman.yaml").read_text())["providers"]
    assert _in_container(g_mounts, provider["options"]["path"]) == DASHBOARD.parent
    ds_dir = _in_container(g_mounts, "/etc/grafana/provisioning/datasources")
    [ds] = yaml.safe_load((ds_dir / "prometheus.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"].endswith(flags["--web.listen-address"])


# --- a real Prometheus scraping a real serve --------------------------------------------
# Queries that may rightly be empty after one healthy call: no agent was killed.
MAY_BE_EMPTY = {("Restarts and kills", "increase(dragoman_worker_agents_killed_total")}


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "dragoman", "static_configs": [{"targets": [target]}]}],
        }
        cfg = tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> dict:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def prometheus(server: Server, tmp_path: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path, server.internal_url.removeprefix("http://"))
    try:
        wait_until(prom.ready, 60, 0.2, "Prometheus to be ready")
        yield prom
    finally:
        prom.stop()


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until for the middle of a call: the caller's event loop keeps running."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


def _finite(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def _scrapes(prom: Prometheus) -> float:
    """How many samples of `up` Prometheus holds for the serve so far."""
    result = prom.query("count_over_time(up[10m])")
    return float(result[0]["value"][1]) if result else 0.0


async def test_prometheus_scrapes_serve_and_answers_the_dashboards_queries(
    server: Server, prometheus: Prometheus, ja_speech: Path
) -> None:
    prom = prometheus

    def value(expr: str) -> float:
        [sample] = prom.query(expr)
        return float(sample["value"][1])

    # The serve's internal port is a healthy target, and the rules are loaded.
    wait_until(
        lambda: [t["health"] for t in prom.get("/api/v1/targets")["activeTargets"]] == ["up"],
        30,
        what="the serve's /metrics to be scraped",
    )
    rules = prom.get("/api/v1/rules")["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} == {r["alert"] for r in _alert_rules()}

    def rules_evaluated() -> bool:
        health = [r["health"] for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        assert "err" not in health, prom.get("/api/v1/rules")
        return set(health) == {"ok"}

    wait_until(rules_evaluated, 30, what="the rules to be evaluated")
    wait_until(lambda: _scrapes(prom) >= 2, 30, what="two scrapes before the call")

    # A call with a sentence translated and spoken (latency marks, media up, answer time)…
    caller = Caller(server.url, source="ja", target="en")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        caller.mic.play(load_wav_mono(ja_speech))
        await caller.wait_for(final_caption("translation"), 60)
        marks = await caller.wait_for(lambda m: m.get("type") == "metrics", 60)
        assert "first_audio_out" in marks["marks"], marks
        running = 'sum(dragoman_worker_provider_calls_active{provider="local"})'
        await eventually(lambda: value(running) == 1, 15, "the call in Prometheus, by provider")
        # …and a refusal: an offer without Opus (bad_sdp, counted as rejected).
        no_opus = caller.pc.localDescription.sdp.replace("opus/48000/2", "speex/16000")
        r = httpx.post(
            f"{server.url}/v1/calls",
            json={"sdp": no_opus, "type": "offer", "source": "ja", "target": "en"},
            timeout=15,
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_sdp", r.text
        mark = caller.mark()
        caller.send({"v": 1, "type": "hangup"})
        await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=mark)
    finally:
        await caller.close()
    wait_until(lambda: server.health()["active_calls"] == 0, 15, what="the call to end")
    # Two more scrapes after it, so every counter's increase is inside Prometheus.
    after = _scrapes(prom)
    wait_until(lambda: _scrapes(prom) >= after + 2, 30, what="two scrapes after the call")

    # Each dashboard query, with Grafana's $__rate_interval as a window covering the test.
    empty = []
    for title, expr in _dashboard_exprs():
        result = prom.query(expr.replace(dashboard.RATE, "10m"))
        may_be_empty = any(t == title and part in expr for t, part in MAY_BE_EMPTY)
        if not _finite(result) and not may_be_empty:
            empty.append((title, expr, result))
    assert not empty, f"queries without data after a call: {empty}"

    # The numbers are this call's: answered and refused calls counted, its sentence's first
    # audio and its media connect observed, the node's CPU busy.
    assert value('sum(increase(dragoman_api_calls_total{outcome="answered"}[10m]))') > 0
    assert value('sum(increase(dragoman_api_calls_total{outcome="rejected"}[10m]))') > 0
    assert value("sum(increase(dragoman_worker_media_connect_seconds_count[10m]))") > 0
    first_audio = 'dragoman_worker_speech_end_seconds_count{step="first_audio_out"}'
    assert value(f"sum(increase({first_audio}[10m]))") > 0
    assert value("sum(rate(dragoman_worker_node_cpu_seconds_total[10m]))") > 0
    # The call ended: the next report of the node says so (the gauge is not stuck at 1).
    wait_until(
        lambda: value("sum(dragoman_worker_provider_calls_active)") == 0,
        15,
        what="no call running in Prometheus",
    )
    assert value("max(dragoman_autoscale_desired_nodes)") >= 1

    # The rules run on the real series: nothing fires on a healthy serve, and one refused
    # request of two makes the refusal alert pending (it fires only after 5 minutes).
    def alerts(state: str) -> set[str]:
        got = prom.get("/api/v1/alerts")["alerts"]
        return {a["labels"]["alertname"] for a in got if a["state"] == state}

    wait_until(lambda: "DragomanRefusalsRising" in alerts("pending"), 15, what="pending")
    assert alerts("firing") == set()
