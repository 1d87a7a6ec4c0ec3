"""The Silero VAD, loaded once in the forkserver (preloaded there when a provider this node
can run uses it) instead of once per agent.

Every agent forked afterwards gets the loaded model as copy-on-write pages: measured, an
agent that loads its own VAD holds ~25 MB of unique memory for it, one that inherits this
one ~10 MB after running it. Each agent is its own process, so its copy of the analyzer's
state is its own; the session runs single-threaded (Pipecat's options), which survives
fork.
"""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer

ANALYZER = SileroVADAnalyzer()
