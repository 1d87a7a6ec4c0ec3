"""The generic cell rate algorithm, a pure function: the fleet's abuse limits
(``fleet.limits``, stored by the registry) and an agent's limit on page messages both
decide with it, so it sits below both."""

from __future__ import annotations

EPSILON_S = 1e-9


def gcra(tat: float | None, now: float, limit: int, window_s: float) -> tuple[float, float]:
    """Generic cell rate algorithm: one request against ``limit`` per ``window_s``.

    ``tat`` is the key's theoretical arrival time (None: never seen). Returns
    ``(retry_after_s, new_tat)``: ``retry_after_s`` is 0 when the request is allowed, else
    how long until one would be (and ``new_tat`` is ``tat`` unchanged). One number per key,
    exact at window edges, unlike a fixed window that lets twice the limit through.
    """
    interval = window_s / limit
    base = now if tat is None or tat < now else tat
    new_tat = base + interval
    allow_at = new_tat - window_s  # a burst of `limit` fits in one window
    # (A rounding error's worth late is on time: base + w/l - w can exceed base by 1e-13.)
    if allow_at - now > EPSILON_S:  # only when base is the stored tat: it stays as it was
        return allow_at - now, base
    return 0.0, new_tat
