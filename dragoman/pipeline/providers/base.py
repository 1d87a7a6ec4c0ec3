"""What a provider builds for one call, and what it is given to build it.

The call session owns the transport, the VAD and the control channel; a provider supplies the
processors between the VAD and ``transport.output()``:

    transport.input() → VADProcessor → [provider processors] → transport.output()

Its processors receive ``InputAudioRawFrame`` (mono PCM16 at the spec's ``input_rate``) and
the VAD's ``VADUserStarted/StoppedSpeakingFrame``; they push ``OutputAudioRawFrame`` (any
rate, the transport resamples) and talk to the page through ``CallContext.notify`` with the
builders in ``dragoman.agent.messages`` (captions, state, errors).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipecat.processors.frame_processor import FrameProcessor

from dragoman.agent import messages
from dragoman.config import Settings
from dragoman.inference.client import InferenceClient
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.catalog import ProviderSpec


@dataclass
class CallContext:
    pair: LanguagePair
    settings: Settings
    notify: Callable[[dict[str, Any]], None]
    # Ends the call with a reason from messages.END_REASONS (e.g. "provider_lost").
    end_call: Callable[[str], Awaitable[None]]
    client: InferenceClient | None = None  # the node's inference service (local provider)
    glossary: str | None = None  # glossary text chosen by the call, read on the server


class Interpretation(Protocol):
    """One call's provider stage. (Named ``stages``, not ``processors``: Pipecat reads a
    ``processors`` attribute on a FrameProcessor as its children.)"""

    @property
    def stages(self) -> Sequence[FrameProcessor]: ...

    async def set_pair(self, pair: LanguagePair) -> None:
        """Switch languages mid-call (from the next sentence on, or as soon as the
        provider allows); raise ProviderError when the provider refuses."""
        ...


class ProviderError(RuntimeError):
    """A provider refused or failed. ``code`` and ``message`` (our sentence for the code, from
    ``messages.ERRORS``) may go to the page; ``detail``, what went wrong in the provider's or
    the library's words, is for the server log only."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.message = messages.ERRORS.get(code, messages.ERRORS["provider_error"])
        self.detail = detail


def build_interpretation(spec: ProviderSpec, ctx: CallContext) -> Interpretation:
    """Import the provider's module (only the one a call uses) and build its stage."""
    module_name, func = spec.builder.split(":")
    build = getattr(importlib.import_module(module_name), func)
    return build(ctx)
