"""A call in real Chromium survives a short network loss and a switch of network.

Two network namespaces on a private bridge: "node" runs ``dragoman serve`` (and the fake
cloud provider, so no model runs), "caller" runs headless Chromium (a wrapper executable
starts it under ``ip netns exec``) with a fake microphone playing an English sentence.
Mid-call the caller's network fails in two ways:

- every UDP packet in or out (or every packet) is dropped by nftables for a few seconds, then
  allowed again (a lift, a tunnel, a Wi-Fi hiccup): the same call goes on;
- the caller's address changes (``ip addr del`` / ``ip addr add``: walking out of Wi-Fi
  onto another network): the old ICE path is dead for good, and only an ICE restart —
  the page's new offer over the control channel, renegotiated on the call's own Janus
  handle — brings the audio back on the same call.

Each time, after the network is back, the page must show a new translation caption and
hear the translated audio again, and the server must still hold the same call.

Needs root (namespaces, nftables); CI runs as root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import CHROMIUM, wait_until
from fake_provider import KEY
from fleet_hosts import SUBNET, Host, HostNet, dragoman_exe, sh, stop_all, wait_http

from dragoman.bench.embedded import NO_ABUSE_LIMITS
from dragoman.contract import page as page_contract

FAKE_PORT = 9900
AUDIBLE = 0.05  # the page's analyser RMS of the fake's translated tone is ~0.13
# What is dropped, for how long: UDP for a few seconds (the old ICE path comes back by
# itself), UDP long enough for the page to restart ICE while the network is still down (the
# restart's offer and answer go over TCP; its checks succeed once UDP is back), and all
# traffic (the control socket's TCP too). All well under the agent's no-media timeout (20 s).
LOSSES = (("udp", 6.0), ("udp", 12.0), ("all", 10.0))
# What the caller's firewall drops: its UDP (media), or everything but loopback (the control
# channel's TCP too: no network at all).
DROP = {  # (the output chain's rule, the input chain's)
    "udp": ("meta l4proto udp drop", "meta l4proto udp drop"),
    "all": ('oifname != "lo" drop', 'iifname != "lo" drop'),
}


@dataclass
class LossyNet:
    net: HostNet
    node: Host
    caller: Host
    url: str
    logs: Path
    chromium: Path  # runs Chromium inside the caller's namespace

    def health(self) -> dict:
        return httpx.get(f"http://{self.node.ip}:9000/healthz", timeout=5).json()

    def ice_restarts(self, outcome: str) -> float:
        """The node's ``dragoman_worker_ice_restarts_total`` for ``outcome``."""
        text = httpx.get(f"http://{self.node.ip}:9000/metrics", timeout=5).text
        line = f'dragoman_worker_ice_restarts_total{{outcome="{outcome}"}} '
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        assert found, f"no {line.strip()} in the node's metrics"
        return float(found[0].split()[-1])

    def drop(self, what: str) -> None:
        out, into = DROP[what]
        rules = (
            "table inet dgmloss {\n"
            f"  chain out {{ type filter hook output priority 0; {out}; }}\n"
            f"  chain in {{ type filter hook input priority 0; {into}; }}\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.caller.ns, "nft", "-f", "-"],
            input=rules.encode(),
            check=True,
            capture_output=True,
        )

    def allow(self) -> None:
        sh("ip", "netns", "exec", self.caller.ns, "nft", "delete", "table", "inet", "dgmloss")

    def move_caller(self, host_byte: int) -> str:
        """The caller's interface gets a new address on the same bridge (its old one is
        gone, as on another network); returns the new address."""
        new = SUBNET.format(self.net.net, host_byte)
        # In this order: deleting a primary address deletes the secondaries of its subnet.
        sh("ip", "-n", self.caller.ns, "addr", "del", f"{self.caller.ip}/24", "dev", "eth0")
        sh("ip", "-n", self.caller.ns, "addr", "add", f"{new}/24", "dev", "eth0")
        self.caller.ip = new
        return new


@pytest.fixture(scope="module")
def lossy_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LossyNet]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, nftables); CI runs as root")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; run scripts/test.sh (it installs it)")
    logs = tmp_path_factory.mktemp("netchange")
    net = HostNet()
    procs: list[subprocess.Popen] = []
    try:
        net.up()
        node, caller = net.add_host("node"), net.add_host("caller")
        # Playwright starts "Chromium" with its own arguments and pipes: this wrapper runs
        # the real one inside the caller's namespace with the same arguments and descriptors.
        wrapper = logs / "chromium-in-caller"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {caller.ns} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        env = dict(os.environ)
        fake = [sys.executable, "-m", "dragoman.fakes.server", "--port", str(FAKE_PORT)]
        fake += ["--key", KEY, "--cert-dir", str(logs / "tls")]
        procs.append(node.popen(fake, env, logs / "fake.log"))
        env = {
            **os.environ,
            **NO_ABUSE_LIMITS,
            "DRAGOMAN_HOST": node.ip,
            "DRAGOMAN_PORT": "8000",
            "DRAGOMAN_MAX_CALLS": "2",
            "DRAGOMAN_LOG_LEVEL": "WARNING",
            "DRAGOMAN_PROVIDER": "openai-translate",
            "DRAGOMAN_OPENAI_API_KEY": KEY,
            "DRAGOMAN_OPENAI_BASE_URL": f"http://127.0.0.1:{FAKE_PORT}/v1",
        }
        procs.append(node.popen([dragoman_exe(), "serve"], env, logs / "serve.log"))
        wait_http(
            f"http://{node.ip}:9000/healthz",  # the internal port (port + 1000)
            240,
            ok=lambda r: r.status_code == 200 and r.json()["idle_agents"] == 2,
        )
        yield LossyNet(net, node, caller, f"http://{node.ip}:8000", logs, wrapper)
    finally:
        stop_all(procs)
        net.down()
        serve_log = logs / "serve.log"
        if serve_log.exists():
            text = serve_log.read_text(errors="replace")
            assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]


@pytest.fixture
def caller_page(lossy_net: LossyNet, en_speech: Path):
    from playwright import sync_api as playwright

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(lossy_net.chromium),
            args=[
                "--headless",
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={en_speech}",
                "--autoplay-policy=no-user-gesture-required",
                # The page is served over plain HTTP from the node's address: a microphone
                # needs a secure context, which this origin is declared to be.
                f"--unsafely-treat-insecure-origin-as-secure={lossy_net.url}",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            pg = browser.new_page()
            pg.on("console", lambda m: print(f"[page] {m.type}: {m.text}"))
            yield pg
        finally:
            browser.close()


def _start_call(page, net: LossyNet) -> str:
    page.goto(net.url)
    page.wait_for_function("document.querySelectorAll('#source option').length > 1")
    page.select_option("#source", "en")
    page.select_option("#target", "es")
    page.click("#call")
    page.wait_for_function("() => window.dragoman.callId", timeout=30_000)
    _wait_interpreted_after(page, 0.0, 30, net)
    return page.evaluate("window.dragoman.callId")


def _now(page) -> float:
    return page.evaluate("performance.now()")


def _wait_interpreted_after(page, t: float, timeout_s: float, net: LossyNet) -> None:
    """A translation caption updated after page time ``t``, and the translated audio heard
    after that caption: the interpretation works (again) after ``t``."""
    try:
        _wait_for_interpretation(page, t, timeout_s)
    except Exception:
        seen = page.evaluate(
            """() => ({state: window.dragoman.state, restarts: window.dragoman.iceRestarts,
                       connection: window.dragoman.connectionLog, notice: document
                       .querySelector('#notice')?.textContent})"""
        )
        serve = (net.logs / "serve.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"no interpretation after {t:.0f} ms: {seen}\n{serve}") from None


def _wait_for_interpretation(page, t: float, timeout_s: float) -> None:
    page.wait_for_function(
        """([t, loud]) => {
            const d = window.dragoman;
            const c = d.captions.filter(c => c.side === 'translation' && c.at > t
                                             && c.text.trim().length > 0);
            if (!c.length) return false;
            const first = Math.min(...c.map(c => c.at));
            return d.remoteLevels.some(([at, rms]) => at > first && rms > loud);
        }""",
        arg=[t, AUDIBLE],
        timeout=timeout_s * 1000,
        polling=100,
    )


def _assert_same_call(page, net: LossyNet, call_id: str) -> None:
    assert page.evaluate("window.dragoman.callId") == call_id
    states = [s for _, s in page.evaluate("window.dragoman.states")]
    assert "ended" not in states and "failed" not in states, states
    assert net.health()["active_calls"] == 1


def _hang_up(page, net: LossyNet) -> None:
    page.click("#hangup")
    page.wait_for_function("() => window.dragoman.state === 'ended'", timeout=10_000)
    wait_until(lambda: net.health()["active_calls"] == 0, 20, what="the call to end")


@pytest.mark.parametrize(("what", "drop_s"), LOSSES, ids=[f"{w}-{s:.0f}s" for w, s in LOSSES])
def test_a_call_survives_seconds_without_network(
    lossy_net: LossyNet, caller_page, what: str, drop_s: float
) -> None:
    page, net = caller_page, lossy_net
    call_id = _start_call(page, net)
    t_drop = _now(page)
    net.drop(what)
    try:
        time.sleep(drop_s)
    finally:
        net.allow()
    t_back = _now(page)
    _wait_interpreted_after(page, t_back, 30, net)
    recovered_ms = page.evaluate(
        """t => Math.min(...window.dragoman.captions
                .filter(c => c.side === 'translation' && c.at > t).map(c => c.at)) - t""",
        t_back,
    )
    _assert_same_call(page, net, call_id)
    log = page.evaluate("window.dragoman.connectionLog")
    restarts = page.evaluate("window.dragoman.iceRestarts")
    print(
        f"{drop_s:.0f} s without {what} traffic: translation captions again "
        f"{recovered_ms:.0f} ms after it was back ({restarts} ICE restarts); "
        f"connection states from the drop on: "
        f"{[(round(t - t_drop), s) for t, s in log if t >= t_drop]}"
    )
    _hang_up(page, net)


def test_a_call_survives_a_switch_of_network(lossy_net: LossyNet, caller_page) -> None:
    page, net = caller_page, lossy_net
    call_id = _start_call(page, net)
    old = net.caller.ip
    answered = net.ice_restarts("answered")
    t_switch = _now(page)
    new = net.move_caller(200 if old != SUBNET.format(net.net.net, 200) else 201)
    _wait_interpreted_after(page, t_switch, 45, net)
    recovered_ms = page.evaluate(
        """t => Math.min(...window.dragoman.captions
                .filter(c => c.side === 'translation' && c.at > t).map(c => c.at)) - t""",
        t_switch,
    )
    _assert_same_call(page, net, call_id)
    log = page.evaluate("window.dragoman.connectionLog")
    restarts = page.evaluate("window.dragoman.iceRestarts")
    print(
        f"caller moved {old} → {new}: translation captions again {recovered_ms:.0f} ms later "
        f"after {restarts} ICE restart(s); connection states: "
        f"{[(round(t - t_switch), s) for t, s in log if t >= t_switch]}"
    )
    assert restarts >= 1
    assert net.ice_restarts("answered") > answered  # the node renegotiated the call
    _hang_up(page, net)


def test_a_bad_ice_restart_is_refused_and_the_call_goes_on(
    lossy_net: LossyNet, caller_page
) -> None:
    """ICE restarts a page did not make (oversized, not an offer, another codec) get an
    error on the control channel; Janus never sees them and the call goes on."""
    page, net = caller_page, lossy_net
    to_server: list = []  # the latest control socket's server side
    from_server: list[dict] = []

    def route(ws) -> None:
        server = ws.connect_to_server()
        server.on_message(lambda m: (from_server.append(json.loads(m)), ws.send(m)))
        ws.on_message(lambda m: server.send(m))
        to_server[:] = [server]

    page.route_web_socket(re.compile(r"/control"), route)
    call_id = _start_call(page, net)
    refused = net.ice_restarts("refused")
    good = _offer_like_the_page(page)
    bad = {
        "oversized": "v=0\r\n" + "a=x:" + "y" * page_contract.MAX_ICE_SDP_CHARS,
        "not an offer": "v=0\r\nm=audio 9 RTP/AVP 0\r\n",
        "another codec": good.replace("opus/48000", "speex/48000"),
    }
    for what, sdp in bad.items():
        since = len(from_server)
        to_server[0].send(json.dumps({"v": 1, "type": "ice_restart", "sdp": sdp}))
        _pump_until(page, lambda n=since: any(m["type"] == "error" for m in from_server[n:]), 10)
        err = next(m for m in from_server[since:] if m["type"] == "error")
        assert err["code"] == "bad_message" and "ice_restart" in err["message"], (what, err)
    assert not any(m["type"] == "ice_answer" for m in from_server)
    assert net.ice_restarts("refused") == refused + len(bad)
    t = _now(page)
    _wait_interpreted_after(page, t, 30, net)
    _assert_same_call(page, net, call_id)
    _hang_up(page, net)


def _offer_like_the_page(page) -> str:
    """An audio offer from this browser, as the page makes one."""
    return page.evaluate(
        """async () => {
            const pc = new RTCPeerConnection();
            pc.addTransceiver('audio', {direction: 'sendrecv'});
            const offer = await pc.createOffer();
            pc.close();
            return offer.sdp;
        }"""
    )


def _pump_until(page, predicate, timeout_s: float) -> None:
    """Waits for what a route handler records: the sync API runs those handlers only inside
    its own calls, so this waits in short page-side steps (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived in {timeout_s} s")
        page.wait_for_timeout(20)
