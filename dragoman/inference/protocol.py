"""Framing for the node-local inference socket.

A message is a JSON header plus an optional binary payload (PCM16 audio):
``u32 header_len | header JSON | u32 payload_len | payload``, lengths big-endian.
Small, dependency-free, and cheap on a Unix socket.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_LEN = struct.Struct(">I")
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 64 << 20  # 64 MB: far above any utterance (30 s of 16 kHz PCM16 is ~1 MB)


class ProtocolError(Exception):
    pass


async def read_message(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    (hlen,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if hlen > MAX_HEADER:
        raise ProtocolError(f"header too large: {hlen}")
    header = json.loads(await reader.readexactly(hlen))
    (plen,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if plen > MAX_PAYLOAD:
        raise ProtocolError(f"payload too large: {plen}")
    payload = await reader.readexactly(plen) if plen else b""
    return header, payload


def encode_message(header: dict[str, Any], payload: bytes = b"") -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(h)) + h + _LEN.pack(len(payload)) + payload


async def write_message(
    writer: asyncio.StreamWriter, header: dict[str, Any], payload: bytes = b""
) -> None:
    writer.write(encode_message(header, payload))
    await writer.drain()
