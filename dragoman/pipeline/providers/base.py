"""What a provider builds for one call, and what it is given to build it.

The call session owns the transport, the VAD, the page's messages and the control channel; a
provider supplies the processors between them:

    transport.input() → MicGate → VADProcessor → EchoGate → UtteranceCutter
        → [provider processors] → PageMessages → RoomRouter → transport.output()

Its processors receive ``InputAudioRawFrame`` (mono PCM16 at the spec's ``input_rate``) and
the VAD's ``VADUserStarted/StoppedSpeakingFrame`` — also sent early by push-to-talk's release
or "interpret now" (``pipeline.talk``), so a provider that ends utterances on them honours
both. They push speech as Pipecat's TTS frames
(``TTSStartedFrame``, ``TTSAudioRawFrame`` at any rate — the transport resamples —,
``TTSStoppedFrame``) and everything the page should know as the frames of
``pipeline.frames`` (transcriptions with an utterance id, ``TranslationFrame``,
``CallErrorFrame``, ...): ``pipeline.page_messages.PageMessages`` turns those into the
page's messages. A provider never writes to the page itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pipecat.processors.frame_processor import FrameProcessor

from dragoman.config import Settings
from dragoman.contract import page
from dragoman.inference.client import InferenceClient
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.catalog import ProviderSpec


@dataclass
class CallContext:
    pair: LanguagePair
    settings: Settings
    client: InferenceClient | None = None  # the node's inference service (local provider)
    glossary: str | None = None  # glossary text chosen by the call, read on the server
    # "simultaneous" (while the person talks) or "consecutive" (after each sentence): the
    # call's, validated against the provider and the call mode (catalog policy).
    interpretation: str = "simultaneous"


class Interpretation(Protocol):
    """One call's provider stage. (Named ``stages``, not ``processors``: Pipecat reads a
    ``processors`` attribute on a FrameProcessor as its children.)"""

    @property
    def stages(self) -> Sequence[FrameProcessor]: ...

    async def set_pair(self, pair: LanguagePair) -> None:
        """Switch languages mid-call (from the next sentence on, or as soon as the
        provider allows); raise ProviderError when the provider refuses."""
        ...

    async def set_interpretation(self, mode: str) -> None:
        """Switch between "simultaneous" and "consecutive" mid-call (from the next words
        on); raise ProviderError("unsupported_interpretation") when the provider cannot."""
        ...


class ProviderError(RuntimeError):
    """A provider refused or failed. ``code`` and ``message`` (our sentence for the code, from
    ``page.ERRORS``) may go to the page; ``detail``, what went wrong in the provider's or
    the library's words, is for the server log only."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.message = page.ERRORS.get(code, page.ERRORS["provider_error"])
        self.detail = detail


def build_interpretation(spec: ProviderSpec, ctx: CallContext) -> Interpretation:
    """Import the provider's module (only the one a call uses) and build its stage."""
    return spec.builder()(ctx)
