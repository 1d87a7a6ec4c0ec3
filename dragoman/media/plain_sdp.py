"""The barebone SDP on the loopback side of a call (Janus NoSIP ↔ the call's agent).

NoSIP turns the caller's WebRTC offer into a plain RTP/AVP offer that still lists every
codec the browser offered; the agent answers Opus only, on the payload type the browser
chose for it, at the agent's own port. Pure functions over text.
"""

from __future__ import annotations

from dataclasses import dataclass


class PlainSdpError(ValueError):
    pass


@dataclass(frozen=True)
class PlainOffer:
    address: str  # where Janus receives this call's plain RTP
    port: int
    opus_pt: int


def parse_plain_offer(sdp: str) -> PlainOffer:
    session_addr: str | None = None
    media_addr: str | None = None
    port: int | None = None
    opus_pt: int | None = None
    in_audio = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            in_audio = line.startswith("m=audio ")
            if in_audio and port is None:
                fields = line.split()
                if len(fields) < 4 or not fields[1].isdigit():
                    raise PlainSdpError(f"bad media line {line!r}")
                port = int(fields[1])
        elif line.startswith("c=IN IP4 "):
            addr = line.split()[2]
            if in_audio:
                media_addr = addr
            elif port is None:
                session_addr = addr
        elif in_audio and line.lower().startswith("a=rtpmap:") and "opus/48000" in line.lower():
            pt = line.split(":", 1)[1].split()[0]
            if pt.isdigit() and opus_pt is None:
                opus_pt = int(pt)
    if port is None or port == 0:
        raise PlainSdpError("the gateway's offer has no audio")
    if opus_pt is None:
        raise PlainSdpError("the caller offered no Opus audio")
    address = media_addr or session_addr
    if address is None:
        raise PlainSdpError("the gateway's offer has no connection address")
    return PlainOffer(address, port, opus_pt)


def opus_payload_type(offer_sdp: str) -> int | None:
    """The payload type the caller's (WebRTC) offer gives Opus in its first audio section;
    NoSIP's plain offer keeps it, so the agent's answer can be written before Janus has
    finished turning the offer around."""
    in_audio = False
    for raw in offer_sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if in_audio:
                return None
            in_audio = line.startswith("m=audio ")
        elif in_audio and line.lower().startswith("a=rtpmap:") and "opus/48000" in line.lower():
            pt = line.split(":", 1)[1].split()[0]
            return int(pt) if pt.isdigit() else None
    return None


def plain_answer(pt: int, address: str, port: int) -> str:
    """The agent's answer: Opus only (on payload type ``pt``), in-band FEC asked of the
    caller, 20 ms packets."""
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {address}\r\n"
        "s=dragoman agent\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt}\r\n"
        f"a=rtpmap:{pt} opus/48000/2\r\n"
        f"a=fmtp:{pt} minptime=10;useinbandfec=1\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
