"""An agent's loopback RTP/RTCP socket pair, bound while it waits for a call.

Janus sends RTCP to the RTP port + 1 and closes its own RTCP socket if nothing listens
there, so the agent binds an even port and the odd one above it.
"""

from __future__ import annotations

import random
import socket

from dragoman.config import parse_range

ATTEMPTS = 64


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
