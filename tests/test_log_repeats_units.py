"""worker.media.log_repeats: Janus' per-packet error lines are relayed a few times, then
summarised."""

from __future__ import annotations

from dragoman.worker.media.log_repeats import RepeatLimiter, kind_of

FLOOD = "[ERR] [ice.c:janus_ice_send_thread:4601] [{}] ... only sent -1 bytes? (was {})"


def test_numbers_do_not_make_a_line_new() -> None:
    assert kind_of(FLOOD.format(123, 33)) == kind_of(FLOOD.format(98765, 41))
    assert kind_of("[ERR] DTLS alert") != kind_of(FLOOD.format(1, 2))


def test_a_flood_is_relayed_first_then_summarised_once_per_interval() -> None:
    lim = RepeatLimiter(first=3, every_s=60)
    out = [lim.admit(FLOOD.format(h, 33), now=i * 0.02) for i, h in enumerate(range(1000))]
    relayed = [x for x in out if x is not None]
    assert relayed == [FLOOD.format(h, 33) for h in range(3)]  # 20 s of packets: 3 lines
    summary = lim.admit(FLOOD.format(7, 33), now=61.0)
    assert summary is not None and "997 more like it" in summary  # held back before it
    assert lim.admit(FLOOD.format(8, 33), now=62.0) is None


def test_another_kind_of_line_is_still_relayed_during_a_flood() -> None:
    lim = RepeatLimiter(first=1, every_s=60)
    assert lim.admit(FLOOD.format(1, 33), 0.0) is not None
    assert lim.admit(FLOOD.format(2, 33), 0.1) is None
    assert lim.admit("[ERR] [dtls.c] handshake failed", 0.2) == "[ERR] [dtls.c] handshake failed"


def test_the_kinds_remembered_are_bounded() -> None:
    lim = RepeatLimiter(first=1, every_s=60, max_kinds=4)
    for i in range(10):
        lim.admit(f"[ERR] kind {'x' * i}", 0.0)
    assert len(lim._seen) == 4
