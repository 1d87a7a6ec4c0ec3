"""A quick structural check of an SDP offer before it costs an agent process.

It catches what a client gets wrong (not SDP at all, no audio, no ICE credentials or DTLS
fingerprint); the agent's full parse still has the last word.
"""

from __future__ import annotations

MAX_SDP_CHARS = 32 * 1024


class SdpError(ValueError):
    pass


def check_offer(sdp: str) -> None:
    if len(sdp) > MAX_SDP_CHARS:
        raise SdpError(f"SDP is {len(sdp)} characters; at most {MAX_SDP_CHARS} are accepted")
    lines = [ln.strip() for ln in sdp.strip().splitlines() if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with 'v=0'")
    bad = [ln for ln in lines if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha()]
    if bad:
        raise SdpError(f"not an SDP line: {bad[0][:60]!r}")
    media = [ln for ln in lines if ln.startswith("m=")]
    if not any(m.startswith("m=audio ") for m in media):
        raise SdpError("the offer has no audio (m=audio) section")
    if not any(ln.startswith("a=ice-ufrag:") for ln in lines):
        raise SdpError("the offer has no ICE credentials (a=ice-ufrag)")
    if not any(ln.startswith("a=fingerprint:") for ln in lines):
        raise SdpError("the offer has no DTLS fingerprint (a=fingerprint)")
