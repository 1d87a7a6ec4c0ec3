"""``openai-cascade``: OpenAI transcription → LLM translation → OpenAI TTS.

For pairs or voices the translation model does not cover: any target, a voice of your
choice, a server-side system prompt and an optional per-call glossary.

    [VAD] → [LanguageIdentifier] → ProviderErrors → AudioTap → OpenAISTTService
          → TextTranslator → Simultaneous → OpenAITTSService

Consecutive (per utterance) is described below; simultaneous (while the person talks, over
a streamed transcription) lives in ``cascade_simultaneous``: ``AudioTap`` sends the caller's
audio there instead of to the STT while the call is simultaneous, and ``set_interpretation``
switches mid-call. (``LanguageIdentifier``: conversation mode only, which is consecutive;
see ``pipeline.language_id``.)

Pipecat's services do the transcription (segmented by our Silero VAD; ``/audio/
transcriptions``) and the speech (``/audio/speech``, streamed PCM). The translation step is
ours: Pipecat's LLM service is built around a growing conversation context and its
aggregators, while an interpreter needs one stateless request per utterance (system prompt +
glossary + the sentence), so ``TextTranslator`` calls the chat completions API directly with
the same ``openai`` client library.

Like every provider it reports in frames (``pipeline.frames``), which ``PageMessages`` turns
into the page's messages; the TTS service's own started/audio/stopped frames give the state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from openai import APIError, AsyncOpenAI, AuthenticationError, PermissionDeniedError
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterimTranscriptionFrame,
    STTUpdateSettingsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transcriptions.language import Language

from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import (
    CallErrorFrame,
    NothingToSpeakFrame,
    SourceTranscriptionFrame,
    TranslatingFrame,
    TranslationFrame,
)
from dragoman.pipeline.language_id import LanguageIdentifier
from dragoman.pipeline.providers.base import CallContext, ProviderError
from dragoman.pipeline.providers.cascade_simultaneous import AudioTap, Simultaneous
from dragoman.pipeline.providers.cascade_stream import TranscriptionStream
from dragoman.pipeline.providers.cascade_text import NAME, REFUSED, refused, system_prompt
from dragoman.pipeline.tts_page_frames import PassesPageFrames

RATE_OUT = 24000  # OpenAI's pcm speech format


class ProviderErrors(FrameProcessor):
    """Catches the services' ErrorFrames (they travel upstream) before Pipecat's worker
    does: the page is told in our words (the frame's text, the provider's, is logged), a
    refused key ends the call, anything else lets the call go on with the next sentence."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame) and direction == FrameDirection.UPSTREAM:
            text = str(frame.error)
            if any(mark in text for mark in REFUSED):
                await self.push_frame(refused(text))
            else:
                await self.push_frame(
                    CallErrorFrame(code="provider_error", detail=text, origin=NAME)
                )
                await self.push_frame(NothingToSpeakFrame())
            return
        await self.push_frame(frame, direction)


class CascadeTTSService(PassesPageFrames, OpenAITTSService):
    """OpenAI's TTS, letting the page's frames by unqueued (see ``tts_page_frames``), and
    telling the simultaneous stage how much speech it made and when a request is done (its
    pace depends on what is still to be heard)."""

    def __init__(self, simultaneous: Simultaneous, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._simultaneous = simultaneous

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        try:
            async for frame in super().run_tts(text, context_id):
                if isinstance(frame, TTSAudioRawFrame):
                    self._simultaneous.tts_audio(len(frame.audio) / 2 / frame.sample_rate)
                yield frame
        finally:
            self._simultaneous.tts_done()


class TextTranslator(FrameProcessor):
    """Final transcript → source caption → LLM translation (text into text) → caption +
    speech."""

    def __init__(self, ctx: CallContext, client: AsyncOpenAI, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ctx = ctx
        self._client = client
        self.pair = ctx.pair
        self._seq = 0
        # Conversation mode: the language of each utterance on its way through the STT,
        # oldest first (from the LanguageIdentifier, in utterance order).
        self.spoken: deque[str] = deque()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterimTranscriptionFrame):
            return
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._translate(frame.text.strip())
            return
        await self.push_frame(frame, direction)

    async def _translate(self, text: str) -> None:
        if not text:
            if self.spoken:
                self.spoken.popleft()  # its utterance came to nothing
            return
        self._seq += 1
        uid, pair = f"c{self._seq}", self.pair
        if pair.conversation:
            spoken = self.spoken.popleft() if self.spoken else pair.source
            pair = LanguagePair(spoken, pair.other(spoken))  # this utterance's direction
        await self.push_frame(
            SourceTranscriptionFrame(
                text=text,
                user_id="",
                timestamp="",
                language=pair.source,  # type: ignore[arg-type]  (our code, not Pipecat's enum)
                utterance_id=uid,
            )
        )
        await self.push_frame(TranslatingFrame(utterance_id=uid))
        s = self._ctx.settings
        try:
            reply = await self._client.chat.completions.create(
                model=s.openai_llm_model,
                messages=[
                    {
                        "role": "system",
                        "content": system_prompt(s.translation_prompt, pair, self._ctx.glossary),
                    },
                    {"role": "user", "content": text},
                ],
                temperature=0,
                timeout=s.provider_connect_timeout_s * 2,
            )
        except (AuthenticationError, PermissionDeniedError) as e:
            await self.push_frame(refused(e))
            return
        except APIError as e:  # timeouts and 5xx included: this sentence is lost, not the call
            detail = f"translation of {uid}: {type(e).__name__}: {e}"
            await self.push_frame(CallErrorFrame(code="provider_error", detail=detail, origin=NAME))
            await self.push_frame(NothingToSpeakFrame(utterance_id=uid))
            return
        translation = (reply.choices[0].message.content or "").strip()
        if not translation:
            await self.push_frame(NothingToSpeakFrame(utterance_id=uid))
            return
        await self.push_frame(
            TranslationFrame(text=translation, language=pair.target, utterance_id=uid)
        )
        await self.push_frame(TTSSpeakFrame(translation))


class CascadeInterpretation:
    def __init__(self, ctx: CallContext) -> None:
        s = ctx.settings
        if s.openai_api_key is None:
            raise ValueError("openai-cascade needs DRAGOMAN_OPENAI_API_KEY")
        key = s.openai_api_key.get_secret_value()
        self.interpretation = ctx.interpretation
        self._errors = ProviderErrors()
        # A conversation's turns are what its language identification works on: consecutive.
        simultaneous = ctx.interpretation == "simultaneous" and not ctx.pair.conversation
        self.stt = OpenAISTTService(
            api_key=key,
            base_url=s.openai_base_url,
            settings=OpenAISTTService.Settings(
                model=s.openai_stt_model, language=Language(ctx.pair.source)
            ),
        )
        client = AsyncOpenAI(api_key=key, base_url=s.openai_base_url, max_retries=1)
        self.translator = TextTranslator(ctx, client)
        self.simultaneous = Simultaneous(ctx, client, TranscriptionStream(s), simultaneous)
        self.tap = AudioTap(self.simultaneous)
        self.identifier: LanguageIdentifier | None = None
        if ctx.pair.conversation:
            if ctx.client is None:
                raise ValueError("conversation mode needs the node's inference service")
            self.identifier = LanguageIdentifier(ctx.client, ctx.pair, self._utterance_language)
        self.tts = CascadeTTSService(
            self.simultaneous,
            api_key=key,
            base_url=s.openai_base_url,
            sample_rate=RATE_OUT,
            settings=OpenAITTSService.Settings(model=s.openai_tts_model, voice=s.openai_tts_voice),
        )

    async def _utterance_language(self, lang: str) -> None:
        """Conversation mode: the utterance that just ended is in ``lang``. Set directly on
        the STT (see ``pipeline.language_id`` for why not a frame), before it transcribes."""
        await self.stt._update_settings(OpenAISTTService.Settings(language=Language(lang)))
        self.translator.spoken.append(lang)

    @property
    def stages(self) -> Sequence[FrameProcessor]:
        first = (self.identifier,) if self.identifier else ()
        return (
            *first,
            self._errors,
            self.tap,
            self.stt,
            self.translator,
            self.simultaneous,
            self.tts,
        )

    async def set_pair(self, pair: LanguagePair) -> None:
        # From the next sentence on: the transcription language and the prompt follow (in a
        # conversation, each utterance's language is identified within the new pair).
        if self.identifier is not None:
            self.identifier.pair = pair
        else:
            delta = OpenAISTTService.Settings(language=Language(pair.source))
            await self.stt.queue_frame(STTUpdateSettingsFrame(delta=delta))
        self.translator.pair = pair
        await self.simultaneous.set_pair(pair)

    async def set_interpretation(self, mode: str) -> None:
        """From the next words on: simultaneous opens a transcription stream on this call,
        consecutive closes it once its last words are transcribed."""
        if mode == "simultaneous" and self.identifier is not None:
            raise ProviderError("unsupported_interpretation", "a conversation is consecutive")
        self.interpretation = mode
        await self.tap.set_active(mode == "simultaneous")


def build(ctx: CallContext) -> CascadeInterpretation:
    return CascadeInterpretation(ctx)
