"""A caller behind a firewall that drops all UDP still connects, through coturn over TCP.

Two network namespaces on a private bridge: "node" runs ``dragoman serve`` (Janus
announcing only the node's address) and coturn (REST-API secret shared with the server);
"caller" drops every UDP packet with nftables. The page's recipe — ICE servers from
``GET /v1/ice-servers`` — connects over a TCP TURN relay and hears the agent; without TURN
the same caller cannot connect at all (which shows the firewall is real).

Needs root (namespaces, nftables); CI runs as root.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_hosts import Host, HostNet, dragoman_exe, stop_all, wait_http

from dragoman.bench.caller import AUDIBLE_RMS

TURN_PORT = 3478


@pytest.fixture(scope="module")
def turn_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host, Path]]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, nftables); CI runs as root")
    logs = tmp_path_factory.mktemp("turn")
    net = HostNet()
    procs: list[subprocess.Popen] = []
    try:
        net.up()
        node, caller = net.add_host("node"), net.add_host("caller")
        # The caller's firewall: every UDP packet in or out is dropped.
        rules = (
            "table inet dgmfw {\n"
            "  chain out { type filter hook output priority 0; meta l4proto udp drop; }\n"
            "  chain in { type filter hook input priority 0; meta l4proto udp drop; }\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", caller.ns, "nft", "-f", "-"],
            input=rules.encode(),
            check=True,
            capture_output=True,
        )
        secret = secrets.token_hex(16)
        procs.append(
            node.popen(
                [
                    "turnserver",
                    "-n",
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--simple-log",
                    "--log-file=stdout",
                    f"--listening-ip={node.ip}",
                    f"--relay-ip={node.ip}",
                    f"--listening-port={TURN_PORT}",
                    "--min-port=49160",
                    "--max-port=49300",
                    "--use-auth-secret",
                    f"--static-auth-secret={secret}",
                    "--realm=dragoman",
                ],
                dict(os.environ),
                logs / "coturn.log",
            )
        )
        env = {
            **os.environ,
            "DRAGOMAN_HOST": node.ip,
            "DRAGOMAN_PORT": "8000",
            "DRAGOMAN_MAX_CALLS": "2",
            "DRAGOMAN_LOG_LEVEL": "WARNING",
            "DRAGOMAN_WHISPER_WORKERS": "1",
            "DRAGOMAN_TURN_URLS": f"turn:{node.ip}:{TURN_PORT}?transport=tcp",
            "DRAGOMAN_TURN_SECRET": secret,
        }
        procs.append(node.popen([dragoman_exe(), "serve"], env, logs / "serve.log"))
        wait_http(
            f"http://{node.ip}:9000/healthz",  # the internal port (port + 1000)
            240,
            ok=lambda r: r.status_code == 200 and r.json()["idle_agents"] == 2,
        )
        yield node, caller, logs
    finally:
        stop_all(procs)
        net.down()


def call_from(host: Host, url: str, turn: str, wait_s: float) -> dict:
    script = Path(__file__).with_name("netns_caller.py")
    run = subprocess.run(
        ["ip", "netns", "exec", host.ns, sys.executable, str(script), url, turn, str(wait_s)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_udp_blocked_caller_connects_through_turn_over_tcp(turn_net) -> None:
    node, caller, logs = turn_net
    url = f"http://{node.ip}:8000"
    t0 = time.monotonic()
    blocked = call_from(caller, url, "none", wait_s=5)
    assert blocked["status"] == 201  # signalling is HTTP (TCP): it works
    assert blocked["first_audio_ms"] is None and blocked["pc_state"] != "connected", blocked

    relayed = call_from(caller, url, "turn", wait_s=15)
    assert relayed["ice_servers"] == 1
    assert relayed["pc_state"] == "connected", (relayed, (logs / "coturn.log").read_text()[-2000:])
    assert relayed["candidate"] == "relay", relayed
    assert relayed["first_audio_ms"] is not None and relayed["max_rms"] > AUDIBLE_RMS, relayed
    assert "listening" in relayed["states"]
    print(
        f"TURN/TCP call: first audio {relayed['first_audio_ms']:.0f} ms "
        f"(both calls {time.monotonic() - t0:.1f} s)"
    )
