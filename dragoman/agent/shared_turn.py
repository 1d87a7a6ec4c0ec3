"""Smart Turn's model, loaded once in the forkserver (preloaded there when consecutive
interpretation can use it, see ``worker.agents.forkserver.forkserver_preload``) instead of once per
agent: every agent forked afterwards shares its weights copy-on-write, and a run costs a call
~3.5 MB of its own memory (``pipeline.smart_turn.SmartTurnModel``)."""

from __future__ import annotations

from dragoman.pipeline.smart_turn import SmartTurnModel

MODEL = SmartTurnModel()
