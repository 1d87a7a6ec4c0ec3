"""RTP packets (RFC 3550): the fixed header, CSRCs, one header extension, padding.

Pure functions over bytes. Janus relays the caller's packets with its own SSRC and the
browser's header extensions (mid, audio level), which are skipped here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct("!BBHII")
VERSION = 2
OPUS_CLOCK = 48000  # Opus RTP timestamps always run at 48 kHz, whatever the decode rate


class RtpPacket(NamedTuple):  # a tuple: 50 of these a second per call, cheap to build
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The packet, or None when ``data`` is not a well-formed RTP v2 packet (RTCP included:
    its "payload types" 72–76 are the RTCP packet types 200–204)."""
    if len(data) < HEADER.size:
        return None
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != VERSION:
        return None
    pt = b1 & 0x7F
    if 72 <= pt <= 76:
        return None
    offset = HEADER.size + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # one header extension: 4-byte header, then `length` 32-bit words
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if offset > end:
        return None
    return RtpPacket(pt, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[offset:end]))


def rtp_header(payload_type: int, seq: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    return HEADER.pack(
        VERSION << 6,
        (0x80 if marker else 0) | payload_type,
        seq & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc,
    )
