"""Admission by local-pipeline capacity against a real ``dragoman serve``: a node admits
local calls (its one Whisper + Piper service) only up to ``DRAGOMAN_LOCAL_CAPACITY``, while
cloud-provider calls still take its other call slots; the worker's metrics show both."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from conftest import Server, start_server, stop_server, wait_until
from fake_provider import KEY, Fake, start_fake, stop_fake

from dragoman.bench.caller import Caller


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    f = start_fake(tmp_path_factory.mktemp("fake"))
    yield f
    stop_fake(f)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, fake: Fake) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("local-capacity"),
        DRAGOMAN_PROVIDER="local",
        DRAGOMAN_LOCAL_CAPACITY="1",
        DRAGOMAN_MAX_CALLS="3",
        # Refused, not answered in direct mode, so the 503 itself is seen.
        DRAGOMAN_DIRECT_OVERFLOW="false",
        DRAGOMAN_OPENAI_API_KEY=KEY,
        DRAGOMAN_OPENAI_BASE_URL=fake.openai_base,
        DRAGOMAN_NO_MEDIA_TIMEOUT_S="30",
        **fake.trusting_env(),
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


async def test_a_second_local_call_is_refused_while_a_cloud_call_is_admitted(node: Server) -> None:
    first = Caller(node.url, source="ja", target="en", provider="local", send_audio=False)
    extra = Caller("http://unused")
    cloud = Caller(node.url, source="ja", target="en", provider="openai-translate")
    again = Caller(node.url, source="ja", target="en", provider="local", send_audio=False)
    try:
        assert (await first.call()).status == 201
        h = node.health()
        assert h["local_capacity"] == 1 and h["free_local_slots"] == 0
        wait_until(lambda: node.health()["local_calls_active"] == 1, 10, what="local call")

        extra.pc.addTransceiver(extra.mic, direction="sendrecv")
        await extra.pc.setLocalDescription(await extra.pc.createOffer())
        body = {"sdp": extra.pc.localDescription.sdp, "type": "offer", "source": "ja"}
        body |= {"target": "en", "provider": "local"}
        async with httpx.AsyncClient(timeout=30) as client:
            refused = await client.post(f"{node.url}/v1/calls", json=body)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "no_local_capacity"
        assert "Local interpretation is at capacity" in error["message"]

        # The node's other call slots still take a cloud-provider call.
        assert (await cloud.call()).status == 201, cloud.result.error
        h = node.health()
        assert h["active_calls"] == 2 and h["local_calls_active"] == 1

        text = httpx.get(f"{node.internal_url}/metrics", timeout=5).text
        assert _metric(text, "dragoman_worker_local_capacity") == 1
        assert _metric(text, "dragoman_worker_local_calls_active") == 1
        assert _metric(text, "dragoman_fleet_free_local_slots") == 0
        # Every outcome's series exists from the start (at 0): this refusal counted.
        assert (_metric(text, 'dragoman_api_calls_total{outcome="no_local_capacity"}') or 0) >= 1
        # The inference service's queue, from the supervisor's pings (one a second).
        wait_until(
            lambda: (
                'dragoman_inference_queue_depth{priority="final"}'
                in httpx.get(f"{node.internal_url}/metrics", timeout=5).text
            ),
            10,
            what="inference queue gauges",
        )
        text = httpx.get(f"{node.internal_url}/metrics", timeout=5).text
        assert 'dragoman_inference_queue_wait_seconds_bucket{le="+Inf",priority="final"}' in text
        assert node.health()["inference"]["stt"]["queued"].keys() >= {"final", "partial"}

        # The local call ends: its local slot is free again.
        await first.close()
        wait_until(lambda: node.health()["free_local_slots"] == 1, 30, what="local slot back")
        assert (await again.call()).status == 201, again.result.error
    finally:
        for c in (first, extra, cloud, again):
            await c.close()
