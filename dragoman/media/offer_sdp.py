"""A quick structural check of a caller's WebRTC SDP offer before it costs anything: a new
call's (the api, before an agent process is taken) and an ICE restart's (the worker, before
Janus renegotiates a live call).

It catches what a client gets wrong (not SDP at all, no audio, no ICE credentials or DTLS
fingerprint) and what only an attacker sends (many media sections, floods of candidates,
thousands of lines); Janus' full parse still has the last word.
"""

from __future__ import annotations

MAX_SDP_CHARS = 32 * 1024
MAX_LINES = 400  # Chrome's audio offer with a data channel is ~60 lines
MAX_LINE_CHARS = 1024
MAX_CANDIDATES = 64  # trickle-free offers carry every host/srflx/relay candidate
ALLOWED_MEDIA = {"audio": 1, "application": 1}  # at most one of each


class SdpError(ValueError):
    pass


def check_offer(sdp: str) -> None:
    if len(sdp) > MAX_SDP_CHARS:
        raise SdpError(f"SDP is {len(sdp)} characters; at most {MAX_SDP_CHARS} are accepted")
    lines = [ln.strip() for ln in sdp.strip().splitlines() if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with 'v=0'")
    if len(lines) > MAX_LINES:
        raise SdpError(f"the offer has {len(lines)} lines; at most {MAX_LINES} are accepted")
    bad = [ln for ln in lines if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha()]
    if bad:
        raise SdpError(f"not an SDP line: {bad[0][:60]!r}")
    long = [ln for ln in lines if len(ln) > MAX_LINE_CHARS]
    if long:
        raise SdpError(f"a line is over {MAX_LINE_CHARS} characters: {long[0][:60]!r}…")
    kinds = [ln[2:].split(" ", 1)[0] for ln in lines if ln.startswith("m=")]
    for kind in set(kinds):
        allowed = ALLOWED_MEDIA.get(kind, 0)
        if kinds.count(kind) > allowed:
            raise SdpError(
                f"{kinds.count(kind)} '{kind}' media sections; at most one audio and one "
                "application (data channel) section are accepted"
                if allowed
                else f"'{kind}' media is not accepted: only audio (and a data channel)"
            )
    if "audio" not in kinds:
        raise SdpError("the offer has no audio (m=audio) section")
    candidates = sum(1 for ln in lines if ln.startswith("a=candidate:"))
    if candidates > MAX_CANDIDATES:
        raise SdpError(f"{candidates} ICE candidates; at most {MAX_CANDIDATES} are accepted")
    if not any(ln.startswith("a=ice-ufrag:") for ln in lines):
        raise SdpError("the offer has no ICE credentials (a=ice-ufrag)")
    if not any(ln.startswith("a=fingerprint:") for ln in lines):
        raise SdpError("the offer has no DTLS fingerprint (a=fingerprint)")
