"""A node whose media gateway is down refuses calls and reports NOT_READY
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
