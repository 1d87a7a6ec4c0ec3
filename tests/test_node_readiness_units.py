"""A node whose media gateway is down refuses calls and reports NOT_READY
(``worker/pool.py``, ``worker/service.py``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dragoman.config import Settings
from dragoman.worker.control import ControlHub


# --- a node whose media gateway is down takes no call ----------------------------------------
class _DownGateway:
    up = False


async def test_a_node_without_its_media_gateway_refuses_calls_and_reports_not_ready() -> None:
    from dragoman.contract.calls import CallRequest
    from dragoman.contract.errors import NoAgentAvailable
    from dragoman.fleet.memory_registry import MemoryRegistry
    from dragoman.fleet.node_state import NodeState
    from dragoman.worker.pool import AgentPool
    from dragoman.worker.service import WorkerService

    settings = Settings()
    gateway: Any = _DownGateway()
    pool = AgentPool(settings, "/nonexistent", gateway, ControlHub())
    with pytest.raises(NoAgentAvailable) as e:
        offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        await pool.calls.start_call(CallRequest(call_id="c", sdp=offer, source="ja", target="en"))
    assert "media gateway" in str(e.value)

    node: Any = SimpleNamespace(gateway=gateway, pool=pool, inference=None)  # no inference
    service = WorkerService(settings, MemoryRegistry(node_ttl_s=3), node)
    assert service.report().state == NodeState.NOT_READY
