"""The per-call control channel's mailbox on the node (``worker/calls/control.py`` ``ControlHub``):
buffering until a page attaches, replay, replacement, the end."""

from __future__ import annotations

import asyncio

import pytest

from dragoman.contract.page import CLOSE_ENDED, CLOSE_REPLACED
from dragoman.fleet.control_link import LinkClosed
from dragoman.worker.calls.control import ControlHub


# --- control channel mailbox ---------------------------------------------------------------
async def test_control_channel_buffers_until_a_page_attaches_and_replays_state() -> None:
    hub = ControlHub(linger_s=0.05)
    to_agent: list[dict] = []
    hub.open("c1", "tok", lambda m: to_agent.append(m) is None)
    langs = {"v": 1, "type": "languages", "source": "ja", "target": "en"}
    listening = {"v": 1, "type": "state", "state": "listening"}
    hub.publish("c1", langs)
    hub.publish("c1", listening)
    with pytest.raises(LinkClosed) as refused:
        hub.attach("c1", "wrong")
    assert refused.value.code == 4401
    with pytest.raises(LinkClosed) as unknown:
        hub.attach("nope", "tok")
    assert unknown.value.code == 4404

    first = hub.attach("c1", "tok")
    assert [await first.recv(), await first.recv()] == [langs, listening]
    await first.send({"v": 1, "type": "hangup"})
    assert to_agent == [{"v": 1, "type": "hangup"}]

    # A reconnecting page replaces the old connection and learns where the call stands.
    second = hub.attach("c1", "tok")
    with pytest.raises(LinkClosed) as replaced:
        await first.recv()
    assert replaced.value.code == CLOSE_REPLACED
    assert [await second.recv(), await second.recv()] == [langs, listening]

    ended = {"v": 1, "type": "state", "state": "ended", "reason": "hangup"}
    hub.publish("c1", ended)
    hub.ended("c1")
    assert await second.recv() == ended
    with pytest.raises(LinkClosed) as closed:
        await second.recv()
    assert closed.value.code == CLOSE_ENDED
    await asyncio.sleep(0.1)  # after the linger the call is forgotten
    with pytest.raises(LinkClosed):
        hub.attach("c1", "tok")
