"""A page whose control channel dropped while its call ended still learns why when it
reconnects (found by `bench soak`: the registry forgot the call at its end, so the api
answered 4404 'no such call' though the node kept the channel to tell the page)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
from conftest import Server, wait_until

from dragoman.bench.caller import Caller, PrecodedTrack, precode


async def test_a_page_reconnecting_after_its_call_ended_gets_the_reason(server: Server) -> None:
    caller = Caller(
        server.url, source="ja", target="en", mic=PrecodedTrack(precode(np.zeros(48000)))
    )
    try:
        assert (await caller.call()).status == 201
        await caller.wait_for(lambda m: m.get("type") == "state", 30)
        assert caller._ws is not None
        caller._ws.transport.abort()  # the network drops it: no close frame
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.delete(f"{server.url}/v1/calls/{caller.result.call_id}")
        assert r.status_code == 204
        await asyncio.to_thread(
            wait_until, lambda: server.health()["active_calls"] == 0, 20, what="the call's end"
        )
        mark = caller.mark()
        await caller.open_control()
        ended = await caller.wait_for(
            lambda m: m.get("type") == "state" and m.get("state") == "ended", 10, since=mark
        )
        assert ended["reason"] == "remote_hangup" and ended["message"]
        ws = caller._ws
        assert ws is not None
        for _ in range(100):  # then the new connection closes as for an ended call
            if ws.close_code is not None:
                break
            await asyncio.sleep(0.1)
        assert ws.close_code == 1000
    finally:
        await caller.close()
