"""Run inside a network namespace (``ip netns exec NS python netns_caller.py URL TURN WAIT``):
one call from this "host", as the page makes it, and a JSON line of what happened.

TURN = "turn": ICE servers from ``GET /v1/ice-servers``; "none": host candidates only.
WAIT: seconds to wait for the agent's first audio.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from dragoman.bench.caller import Caller, selected_candidate_type, server_ice_servers


async def main(url: str, turn: str, wait_s: float) -> dict:
    ice = await server_ice_servers(url) if turn == "turn" else []
    caller = Caller(url, source="ja", target="en", ice_servers=ice)
    try:
        result = await caller.call()
        out: dict = {"status": result.status, "ice_servers": len(ice)}
        if result.status != 201:
            return {**out, "error": result.error}
        deadline = time.monotonic() + wait_s
        while result.first_audio_ms is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {
            **out,
            "pc_state": caller.pc.connectionState,
            "candidate": selected_candidate_type(caller.pc),
            "first_audio_ms": result.first_audio_ms,
            "max_rms": max(result.audio_rms, default=0.0),
            "states": [m.get("state") for m in result.messages if m.get("type") == "state"],
        }
    finally:
        await caller.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))), flush=True)
