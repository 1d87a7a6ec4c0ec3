"""A node whose media gateway is down refuses calls and reports NOT_READY; its heartbeat
carries its calls and their concurrency holds
(``worker/calls/node_calls.py``, ``worker/service.py``)."""

from __future__ import annotations

import pytest

from dragoman.config import Settings


# --- a node whose media gateway is down takes no call ----------------------------------------
async def test_a_node_without_its_media_gateway_refuses_calls_and_reports_not_ready() -> None:
    from dragoman.contract.calls import CallRequest
    from dragoman.contract.errors import NoAgentAvailable
    from dragoman.fleet.memory_registry import MemoryRegistry
    from dragoman.fleet.node_state import NodeState
    from dragoman.worker.service import WorkerService

    # A node built but not started: its media gateway (and inference service) are not up.
    service = WorkerService(Settings(), MemoryRegistry(node_ttl_s=3))
    assert not service.gateway.up
    with pytest.raises(NoAgentAvailable) as e:
        offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        req = CallRequest(call_id="c", sdp=offer, source="ja", target="en")
        await service.calls.start_call(req)
    assert "media gateway" in str(e.value)
    assert service.report().state == NodeState.NOT_READY


# --- the heartbeat carries what a restarted registry needs back ------------------------------
def test_the_heartbeat_carries_each_calls_concurrency_holds() -> None:
    from types import SimpleNamespace

    from dragoman.contract.calls import CallRequest
    from dragoman.fleet.memory_registry import MemoryRegistry
    from dragoman.worker.service import WorkerService

    service = WorkerService(Settings(), MemoryRegistry(node_ttl_s=3))
    req = CallRequest(
        call_id="c1",
        sdp="v=0",
        source="ja",
        target="en",
        provider="openai-translate",
        holds=("calls:ip:203.0.113.7", "calls:sub:alice"),
        hold_max_age_s=660.0,
    )
    # A running call as the node holds it (its agent process stands in: only its request
    # is read for the report).
    service.calls._calls["c1"] = SimpleNamespace(request=req)  # type: ignore[assignment]
    beat = service.report()
    assert beat.calls == ("c1",)
    assert beat.holds == (
        ("c1", "calls:ip:203.0.113.7", 660.0),
        ("c1", "calls:sub:alice", 660.0),
    )
