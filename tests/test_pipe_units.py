"""The worker ↔ agent pipe: typed messages both ways, and a channel that never blocks its
event loop (a full pipe queues, a half-written frame waits)."""

from __future__ import annotations

import asyncio
import pickle
import socket
import time
from multiprocessing.connection import Connection

import pytest

from dragoman.contract.calls import CallRequest
from dragoman.contract.channel import HEADER, ChannelClosed, PipeChannel
from dragoman.contract.pipe import (
    PING,
    TO_AGENT,
    TO_WORKER,
    Accepted,
    End,
    Ended,
    FromPage,
    MediaDown,
    MediaUp,
    Offer,
    Pacing,
    Ready,
    Refused,
    RoomAudio,
    RoomJoined,
    RoomLeft,
    RtpPeer,
    Stop,
    ToPage,
)

CALL = CallRequest(call_id="c1", sdp="", source="ja", target="en", max_call_s=60.0)
PCM = b"\x01\x02" * 2400  # 200 ms at 24 kHz

TO_AGENT_MESSAGES = [
    Offer(call=CALL, peer=RtpPeer(address="127.0.0.1", port=4000, payload_type=111)),
    MediaUp(),
    MediaDown(reason="ice"),
    FromPage(msg={"v": 1, "type": "set_languages", "source": "ja", "target": "en"}),
    End(reason="remote_hangup"),
    Stop(),
    RoomJoined(language="de"),
    RoomAudio(pcm=PCM, rate=24000),
    RoomLeft(),
]
TO_WORKER_MESSAGES = [
    Ready(rtp_port=4000),
    Accepted(timings_ms={"agent_accept": 0.4}),
    Refused(code="unknown_language", message="Unknown source language 'xx'."),
    ToPage(msg={"v": 1, "type": "caption", "id": "u1", "text": "hi", "final": True}),
    Pacing(frames=250, late=2),
    Ended(reason="remote_hangup"),
    RoomAudio(pcm=PCM, rate=24000),
    PING,
]


@pytest.mark.parametrize(
    ("adapter", "msg"),
    [(TO_AGENT, m) for m in TO_AGENT_MESSAGES] + [(TO_WORKER, m) for m in TO_WORKER_MESSAGES],
    ids=lambda v: getattr(v, "kind", ""),
)
def test_every_message_survives_the_wire(adapter, msg) -> None:  # type: ignore[no-untyped-def]
    wire = pickle.loads(pickle.dumps(msg.model_dump(), pickle.HIGHEST_PROTOCOL))
    assert adapter.validate_python(wire) == msg


def test_a_direction_refuses_the_other_directions_messages() -> None:
    with pytest.raises(ValueError):
        TO_WORKER.validate_python(Stop().model_dump())
    with pytest.raises(ValueError):
        TO_AGENT.validate_python(PING.model_dump())


def _pair() -> tuple[Connection, Connection]:
    a, b = socket.socketpair()
    return Connection(a.detach()), Connection(b.detach())


async def test_a_full_pipe_queues_instead_of_blocking_and_drains_in_order() -> None:
    a, b = _pair()
    sender = PipeChannel(a, TO_WORKER)
    receiver = PipeChannel(b, TO_WORKER)
    n = 200  # ~2 MB: far more than the socket buffers hold
    t0 = time.perf_counter()
    for i in range(n):
        assert sender.send(RoomAudio(pcm=PCM, rate=i))
    assert time.perf_counter() - t0 < 1.0  # never waited for the reader
    assert sender.pending_bytes > 0
    got = [await asyncio.wait_for(receiver.recv(), 5) for _ in range(n)]
    assert [m.rate for m in got] == list(range(n)) and all(m.pcm == PCM for m in got)
    assert await sender.flush(1.0) and sender.pending_bytes == 0
    sender.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(receiver.recv(), 5)
    receiver.close()


async def test_a_peer_that_stops_reading_costs_a_bounded_queue() -> None:
    a, b = _pair()
    sender = PipeChannel(a, TO_WORKER, max_pending_bytes=100_000)
    for _ in range(100):
        assert sender.send(RoomAudio(pcm=PCM, rate=24000))
    assert sender.dropped > 0 and sender.pending_bytes < 100_000 + 2 * len(PCM)
    sender.close()
    assert not sender.send(PING)  # closed: the peer is gone as far as we are concerned
    b.close()


async def test_a_half_written_frame_waits_without_blocking_the_reader() -> None:
    a, b = _pair()
    receiver = PipeChannel(b, TO_WORKER)
    payload = pickle.dumps(Ended(reason="x").model_dump())
    frame = HEADER.pack(len(payload)) + payload
    sock = socket.socket(fileno=a.fileno())  # write the frame in two halves, by hand
    sock.sendall(frame[:5])
    await asyncio.sleep(0.05)  # the reader's loop runs; nothing complete arrived
    assert receiver._queue.empty()
    sock.sendall(frame[5:])
    assert await asyncio.wait_for(receiver.recv(), 5) == Ended(reason="x")
    sock.detach()
    a.close()
    receiver.close()


async def test_a_dead_peer_reads_as_closed_and_sends_fail() -> None:
    a, b = _pair()
    chan = PipeChannel(a, TO_AGENT)
    b.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(chan.recv(), 5)
    assert not chan.send(End(reason="x"))  # the write fails at once: EPIPE
    chan.close()


async def test_a_peer_known_gone_ends_the_channel_without_an_eof() -> None:
    """A stray copy of the peer's end can withhold the EOF: once its process is known to
    have exited, what it sent is still read, then the channel ends."""
    a, b = _pair()
    chan = PipeChannel(a, TO_AGENT)
    payload = pickle.dumps(End(reason="last words").model_dump())
    sock = socket.socket(fileno=b.fileno())  # b stays open: no EOF will come
    sock.sendall(HEADER.pack(len(payload)) + payload)
    sock.detach()
    chan.peer_gone()  # before the loop has read the frame: it is read now
    assert await asyncio.wait_for(chan.recv(), 5) == End(reason="last words")
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(chan.recv(), 5)
    chan.close()
    b.close()
