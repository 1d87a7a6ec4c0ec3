"""The plain-RTP pieces (``dragoman/media/``), pure or close to it: RTP headers, the reorder
buffer, libopus, NoSIP's barebone SDP, the agent's port pair."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dragoman.config import Settings, parse_range
from dragoman.media.opus import OpusDecoder, OpusEncoder
from dragoman.media.plain_sdp import (
    PlainSdpError,
    opus_payload_type,
    parse_plain_offer,
    plain_answer,
)
from dragoman.media.ports import bind_rtp_pair
from dragoman.media.reorder import ReorderBuffer
from dragoman.media.rtp import parse_rtp, rtp_header

# What Janus 1.1.2's NoSIP generated for an aiortc offer (recorded, then trimmed).
NOSIP_OFFER = (
    "v=0\r\no=- 4005157749 4005157749 IN IP4 1.1.1.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 31000 RTP/AVP 111 9 0 8\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=mid:0\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
)


# --- RTP -----------------------------------------------------------------------------------
def test_rtp_header_round_trip() -> None:
    data = rtp_header(111, 65535, 2**32 - 1, 0xDEADBEEF, marker=True) + b"opus"
    pkt = parse_rtp(data)
    assert pkt is not None
    assert (pkt.payload_type, pkt.seq, pkt.timestamp, pkt.ssrc, pkt.marker) == (
        111,
        65535,
        2**32 - 1,
        0xDEADBEEF,
        True,
    )
    assert pkt.payload == b"opus"


def test_rtp_skips_csrcs_extension_and_padding() -> None:
    # V=2, P=1, X=1, CC=2; one 2-word extension; 3 bytes of padding.
    b0 = 0x80 | 0x20 | 0x10 | 2
    head = struct.pack("!BBHII", b0, 96, 7, 960, 42) + struct.pack("!II", 1, 2)
    ext = struct.pack("!HH", 0xBEDE, 2) + b"\x10\x01\x00\x00" + b"\x22\x33\x00\x00"
    data = head + ext + b"payload" + b"\x00\x00\x03"
    pkt = parse_rtp(data)
    assert pkt is not None and pkt.payload == b"payload" and pkt.seq == 7


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x60\x00",  # shorter than a header
        b"\x40" + bytes(11),  # version 1
        b"\x80\xc8" + bytes(10),  # RTCP sender report (type 200)
        b"\x90\x60" + bytes(10) + b"\x00\x00\x00\x09",  # extension longer than the packet
        b"\xa0\x60" + bytes(10) + b"\x40",  # padding longer than the packet
    ],
)
def test_rtp_rejects_what_is_not_an_rtp_packet(data: bytes) -> None:
    assert parse_rtp(data) is None


# --- reorder -------------------------------------------------------------------------------
def _payloads(slots) -> list[bytes | None]:
    return [s.payload for s in slots]


def test_in_order_packets_pass_without_delay() -> None:
    rb = ReorderBuffer()
    for seq in (65534, 65535, 0, 1):  # across the 16-bit wrap
        assert _payloads(rb.push(seq, bytes([seq % 256]))) == [bytes([seq % 256])]
    assert rb.stats.lost == 0


def test_a_late_packet_within_the_window_is_put_back_in_order() -> None:
    rb = ReorderBuffer(max_hold=3)
    assert _payloads(rb.push(10, b"a")) == [b"a"]
    assert rb.push(12, b"c") == []  # 11 is missing: hold
    assert _payloads(rb.push(11, b"b")) == [b"b", b"c"]
    assert rb.stats.reordered == 1 and rb.stats.lost == 0


def test_a_lost_packet_is_concealed_with_the_next_packets_fec() -> None:
    rb = ReorderBuffer(max_hold=3)
    rb.push(1, b"a")
    assert rb.push(3, b"c") == [] and rb.push(4, b"d") == []
    slots = rb.push(5, b"e")  # three packets past the gap: 2 is lost
    assert [(s.payload, s.fec) for s in slots] == [
        (None, b"c"),
        (b"c", None),
        (b"d", None),
        (b"e", None),
    ]
    assert rb.stats.lost == 1
    assert rb.push(2, b"b") == [] and rb.stats.late == 1  # too late now


def test_a_long_gap_is_skipped_after_a_few_concealed_frames() -> None:
    rb = ReorderBuffer(max_hold=3, max_conceal=5)
    rb.push(100, b"a")
    out = rb.push(150, b"z") + rb.push(151, b"y") + rb.push(152, b"x")
    assert _payloads(out) == [None] * 5 + [b"z", b"y", b"x"]
    assert rb.stats.lost == 49


def test_a_sequence_jump_restarts_the_stream() -> None:
    rb = ReorderBuffer()
    rb.push(5, b"a")
    assert _payloads(rb.push(40000, b"b")) == [b"b"]
    assert _payloads(rb.push(40001, b"c")) == [b"c"]


def test_duplicates_are_dropped() -> None:
    rb = ReorderBuffer()
    rb.push(1, b"a")
    assert rb.push(1, b"a") == [] and rb.stats.late == 1


# --- Opus ----------------------------------------------------------------------------------
def _tone(rate: int, ms: int, freq: float = 500.0) -> bytes:
    # 500 Hz: whole cycles in 20 ms, so repeating the chunk keeps the tone continuous.
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16).tobytes()


def test_opus_round_trip_at_the_providers_rate() -> None:
    enc, dec = OpusEncoder(24000), OpusDecoder(16000)
    out = b"".join(dec.decode(enc.encode(_tone(24000, 20))) for _ in range(25))
    pcm = np.frombuffer(out, np.int16).astype(np.float64)
    assert len(pcm) == 25 * 320  # decoded straight at 16 kHz, no resampler
    spectrum = np.abs(np.fft.rfft(pcm[-3200:]))
    assert abs(np.argmax(spectrum) * 16000 / 3200 - 500) <= 5  # the tone survived
    assert len(dec.conceal(320)) == 640  # packet-loss concealment: one 20 ms frame


def test_agents_silence_packets_decode_to_silence_of_their_length() -> None:
    from dragoman.pipeline.transports.rtp_media import OPUS_SILENCE

    dec = OpusDecoder(24000)
    for ms, packet in OPUS_SILENCE.items():
        pcm = np.frombuffer(dec.decode(packet), np.int16)
        assert len(pcm) == 24 * ms and not pcm.any(), ms


def test_opus_rejects_a_rate_it_cannot_code() -> None:
    with pytest.raises(ValueError):
        OpusDecoder(22050)


# --- plain SDP -----------------------------------------------------------------------------
def test_plain_offer_and_answer() -> None:
    offer = parse_plain_offer(NOSIP_OFFER)
    assert (offer.address, offer.port, offer.opus_pt) == ("127.0.0.1", 31000, 111)
    answer = plain_answer(offer.opus_pt, "127.0.0.1", 35002)
    assert "m=audio 35002 RTP/AVP 111\r\n" in answer
    assert "a=rtpmap:111 opus/48000/2" in answer and "useinbandfec=1" in answer
    assert "PCMU" not in answer


def test_opus_payload_type_of_a_browser_offer() -> None:
    chrome = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\na=rtpmap:63 red/48000/2\r\n"
    assert opus_payload_type(chrome + "a=rtpmap:111 opus/48000/2\r\n") == 111
    assert opus_payload_type(chrome) is None
    video_first = "v=0\r\nm=video 9 RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\nm=audio 9 X 0\r\n"
    assert opus_payload_type(video_first) is None  # Opus outside the audio section


def test_plain_offer_without_opus_or_audio_is_refused() -> None:
    with pytest.raises(PlainSdpError, match="Opus"):
        parse_plain_offer(NOSIP_OFFER.replace("a=rtpmap:111 opus/48000/2\r\n", ""))
    with pytest.raises(PlainSdpError, match="no audio"):
        parse_plain_offer("v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 9 RTP/AVP 96\r\n")


# --- ports ---------------------------------------------------------------------------------
def test_agent_ports_are_an_even_odd_pair_in_range() -> None:
    rtp, rtcp = bind_rtp_pair("127.0.0.1", "35000-39999")
    try:
        port = rtp.getsockname()[1]
        assert port % 2 == 0 and rtcp.getsockname()[1] == port + 1
        assert 35000 <= port < 39999
    finally:
        rtp.close()
        rtcp.close()
    with pytest.raises(ValueError):
        parse_range("40000")
    with pytest.raises(ValueError):
        Settings(agent_rtp_port_range="5-3")
