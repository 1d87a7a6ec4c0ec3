"""An agent's loopback RTP/RTCP socket pair, bound while it waits for a call.

Janus sends RTCP to the RTP port + 1 and closes its own RTCP socket if nothing listens
there, so the agent binds an even port and the odd one above it.
"""

from __future__ import annotations

import random
import socket

ATTEMPTS = 64


def parse_range(spec: str) -> tuple[int, int]:
    """``"35000-39999"`` → (35000, 39999); ValueError with the reason otherwise."""
    try:
        low_s, high_s = spec.split("-", 1)
        low, high = int(low_s), int(high_s)
    except ValueError as e:
        raise ValueError(f"a port range looks like 35000-39999, not {spec!r}") from e
    if not (1024 <= low < high <= 65535):
        raise ValueError(f"port range {spec!r} must be within 1024-65535, low < high")
    return low, high


def bind_rtp_pair(host: str, port_range: str) -> tuple[socket.socket, socket.socket]:
    low, high = parse_range(port_range)
    first_even = low + (low % 2)
    evens = (high - 1 - first_even) // 2 + 1
    if evens <= 0:
        raise ValueError(f"port range {port_range!r} holds no even/odd pair")
    for _ in range(ATTEMPTS):
        port = first_even + 2 * random.randrange(evens)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, port))
            rtcp.bind((host, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp
    raise OSError(f"no free RTP port pair in {port_range} after {ATTEMPTS} tries")
