"""A fault for tests/test_supervision.py: an agent whose own maximum-duration limit does not
fire, so that the worker's cap (max_call_s + grace) is what ends its call.

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``: a server started with this
folder there loads it in every one of its processes (the forkserver preloads the agent's
modules after it, so they bind the function below). It acts only while the file named by
``AGENT_MAX_DURATION_OFF`` exists, so one server serves both the agent's limit and the
worker's cap."""

from __future__ import annotations

import dataclasses
import math
import os

FLAG = os.environ.get("AGENT_MAX_DURATION_OFF")

if FLAG:
    from dragoman.agent import limits

    _real = limits.limit_exceeded

    def _without_max_duration(
        call_limits: limits.CallLimits, vitals: limits.CallVitals
    ) -> str | None:
        if FLAG is not None and os.path.exists(FLAG):
            call_limits = dataclasses.replace(call_limits, max_call_s=math.inf)
        return _real(call_limits, vitals)

    limits.limit_exceeded = _without_max_duration
