"""The voice engine's one door: what a socket transport (``app.voice``) may do with a conversation.

Behind it, ``GemmaVoiceAgent`` in an ``AgentSession`` with the project's plugins (``app.agents``) makes the
turns, exactly as in a LiveKit room. A transport builds a ``VoiceEngine`` with its own speaker (where the
reply's audio goes) and text sink (where the reply's words go, in step with that audio), pushes the
client's audio in, listens to the session's events, and changes the conversation only through the
methods below: ``configure`` for the options that stand, ``override`` for one response's options (undone
by the returned ``Override``), ``generate_reply`` / ``interrupt`` / the user-turn calls for turns, and the
chat-context methods for what the model reads. The import-linter contracts in ``backend/pyproject.toml``
keeps ``app.voice`` from importing anything else of the engine.

The session's event and item types a transport reads are re-exported here under the names LiveKit Agents
gives them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import NOT_GIVEN, AgentSession
from livekit.agents.llm import ChatContext, ChatMessage
from livekit.agents.metrics import LLMMetrics
from livekit.agents.voice import SpeechHandle, io
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    MetricsCollectedEvent,
    SpeechCreatedEvent,
    UserInputTranscribedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.transcription import TranscriptSynchronizer

from app.agents.playout import ListenerPlayout, PlayedSegment
from app.agents.plugins import GemmaLLM, OpenAudioTTS, SpeculativeSTT, WhisperSTT
from app.agents.voice_agent import CUT_TRANSCRIPT_TIMEOUT_S, GemmaVoiceAgent, PieceByPieceTTS, create_agent_session
from app.audio.vad import tunable_vad
from app.services.container import Services

AudioFrame = rtc.AudioFrame

__all__ = [
    "AudioFrame", "ChatContext", "ChatMessage", "CloseEvent", "ConversationItemAddedEvent", "ErrorEvent", "LLMMetrics",
    "ListenerPlayout", "MetricsCollectedEvent", "Override", "PlayedSegment", "SpeechCreatedEvent", "SpeechHandle",
    "UserInputTranscribedEvent", "UserStateChangedEvent", "VoiceEngine", "INTERRUPT_WAIT_S",
]

log = logging.getLogger("app.voice")

# Microphone audio the session has not read yet, in frames; past it (a client sending far faster than
# real time) frames are dropped rather than held without bound.
MAX_QUEUED_FRAMES = 3000
# How long a new turn waits for the reply it cuts off to be filed in the history.
INTERRUPT_WAIT_S = 5.0


class _Microphone(io.AudioInput):
    """Audio from the client, as audio frames for the session."""

    def __init__(self, label: str) -> None:
        super().__init__(label=label)
        self._frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._dropping = False

    def push(self, pcm: bytes, sample_rate: int) -> None:
        frame = rtc.AudioFrame(pcm, sample_rate, 1, len(pcm) // 2)
        try:
            self._frames.put_nowait(frame)
            self._dropping = False
        except asyncio.QueueFull:
            if not self._dropping:
                log.warning("%s: the client sends audio faster than the session hears it; dropping frames",
                            self.label)
            self._dropping = True

    def close(self) -> None:
        while True:
            try:
                self._frames.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._frames.get_nowait()

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._frames.get()
        if frame is None:
            self._frames.put_nowait(None)  # stays ended for whoever reads next
            raise StopAsyncIteration
        return frame


class _TextSink(io.TextOutput):
    """The reply's words, as the client hears them (behind the framework's ``TranscriptSynchronizer``)."""

    def __init__(self, on_text: Callable[[str], None], label: str) -> None:
        super().__init__(label=label, next_in_chain=None)
        self._on_text = on_text

    async def capture_text(self, text: str) -> None:
        self._on_text(text)

    def flush(self) -> None:
        pass


@dataclass
class _Options:
    """The options a conversation has set, which every override returns to."""

    instructions: str
    temperature: float | None = None
    max_tokens: int | None = None
    voice: str | None = None


@dataclass
class Override:
    """One response's options; ``undo()`` puts back the options that stand (as they are by then)."""

    _undo: list[Callable[[], None]] = field(default_factory=list)

    def undo(self) -> None:
        undo, self._undo = self._undo, []
        for step in undo:
            step()


class VoiceEngine:
    """One conversation of the engine. ``speaker``: the reply's audio; ``on_text``: its words, as heard.
    ``own_vad``: a VAD of this conversation's own, whose thresholds ``tune_vad`` may change."""

    def __init__(self, services: Services, *, name: str, speaker: ListenerPlayout, on_text: Callable[[str], None],
                 own_vad: bool = False) -> None:
        self.services = services
        settings = services.settings
        self._vad = tunable_vad(settings) if own_vad else None
        self._session: AgentSession = create_agent_session(services, **({"vad": self._vad} if self._vad else {}))
        self._agent = GemmaVoiceAgent(settings=settings)
        self._microphone = _Microphone(label=f"{name}-microphone")
        self._sync = TranscriptSynchronizer(next_in_chain_audio=speaker,
                                            next_in_chain_text=_TextSink(on_text, label=f"{name}-transcript"))
        self._session.input.audio = self._microphone
        self._session.output.audio = self._sync.audio_output
        self._session.output.transcription = self._sync.text_output
        model = self._session.llm
        self._options = _Options(instructions=self._agent.instructions, voice=self._tts().voice,
                                 temperature=model.temperature if isinstance(model, GemmaLLM) else None,
                                 max_tokens=model.max_tokens if isinstance(model, GemmaLLM) else None)
        self._tasks: set[asyncio.Task] = set()

    # --- life -----------------------------------------------------------------------------------
    def on(self, event: str, handler: Callable[[Any], None]) -> None:
        """The session's events by LiveKit Agents' names (``user_state_changed``, ``speech_created``, ...)."""
        self._session.on(event, handler)

    def on_turn_cut(self, handler: Callable[[float], None]) -> None:
        """Called with the limit (seconds) when a turn that would not end was cut."""
        self._agent.turn_cut_handlers.append(handler)

    async def start(self) -> None:
        await self._session.start(self._agent)

    async def aclose(self) -> None:
        """Stop everything the conversation started: no generation or task outlives it."""
        self._microphone.close()
        await self._session.aclose()
        await self._sync.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- audio in and out -----------------------------------------------------------------------
    def push_audio(self, pcm: bytes, sample_rate: int) -> None:
        self._microphone.push(pcm, sample_rate)

    def listen(self, on: bool) -> None:
        """Whether the session hears the microphone (off: push-to-talk, turns closed by the client)."""
        self._session.input.audio = self._microphone if on else None

    def set_audio_enabled(self, enabled: bool) -> None:
        self._session.output.set_audio_enabled(enabled)

    def tune_vad(self, *, threshold: float, silence_ms: int, padding_ms: int) -> None:
        if self._vad is None:
            raise RuntimeError("this engine shares the settings' VAD: build it with own_vad=True")
        self._vad.update_options(activation_threshold=threshold, deactivation_threshold=max(threshold - 0.15, 0.01),
                                 min_silence_duration=silence_ms / 1000, prefix_padding_duration=padding_ms / 1000)

    # --- options --------------------------------------------------------------------------------
    async def configure(self, *, instructions: str | None = None, temperature: float | None = None,
                        max_tokens: int | None = None, voice: str | None = None, language: str | None = None,
                        stt_prompt: str | None = None) -> None:
        """The conversation's standing options; ``None`` leaves one as it is, ``""`` (voice, language,
        prompt) returns it to the default."""
        options = self._options
        if instructions is not None and instructions != options.instructions:
            options.instructions = instructions
            await self._agent.update_instructions(instructions)
        if temperature is not None or max_tokens is not None:
            options.temperature = temperature if temperature is not None else options.temperature
            options.max_tokens = max_tokens if max_tokens is not None else options.max_tokens
            self._set_llm(temperature=temperature, max_tokens=max_tokens)
        if voice is not None:
            options.voice = voice
            self._tts().update_options(voice=voice)
        if language is not None or stt_prompt is not None:
            self._stt().update_options(language=language, prompt=stt_prompt)

    async def override(self, *, instructions: str | None = None, temperature: float | None = None,
                       max_tokens: int | None = None, voice: str | None = None) -> Override:
        """Options for the next response only: ``undo()`` the result once it is done."""
        options, override = self._options, Override()
        if temperature is not None or max_tokens is not None:
            self._set_llm(temperature=temperature, max_tokens=max_tokens)
            override._undo.append(lambda: self._set_llm(temperature=options.temperature, max_tokens=options.max_tokens))
        if instructions is not None:
            await self._agent.update_instructions(instructions)
            override._undo.append(lambda: self._spawn(self._agent.update_instructions(options.instructions)))
        if voice is not None:
            self._tts().update_options(voice=voice)
            override._undo.append(lambda: self._tts().update_options(voice=options.voice or ""))
        return override

    def _set_llm(self, *, temperature: float | None, max_tokens: int | None) -> None:
        model = self._session.llm
        if isinstance(model, GemmaLLM):  # (a remote model's options are its server's)
            model.update_options(temperature=temperature, max_tokens=max_tokens)

    def _stt(self) -> WhisperSTT:
        model = self._session.stt
        return model.wrapped_stt if isinstance(model, SpeculativeSTT) else model

    def _tts(self) -> OpenAudioTTS:
        model = self._session.tts
        return model.piece_tts if isinstance(model, PieceByPieceTTS) else model

    # --- turns ----------------------------------------------------------------------------------
    def generate_reply(self, user_input: str | None = None) -> SpeechHandle:
        return self._session.generate_reply(**({"user_input": user_input} if user_input is not None else {}))

    async def interrupt(self) -> None:
        """Stop the reply now and wait (a bounded while) until it is filed in the history."""
        try:
            await asyncio.wait_for(self._session.interrupt(force=True), INTERRUPT_WAIT_S)
        except (RuntimeError, asyncio.TimeoutError):  # closing, or slow to settle: the next turn goes on anyway
            pass

    def commit_user_turn(self) -> None:
        """End the user's turn now: what was said is transcribed and answered."""
        self._session.commit_user_turn(transcript_timeout=CUT_TRANSCRIPT_TIMEOUT_S)

    def clear_user_turn(self) -> None:
        self._session.clear_user_turn()

    @property
    def current_speech(self) -> SpeechHandle | None:
        return self._session.current_speech

    async def transcribe(self, pcm: bytes, rate: int, language: str | None) -> tuple[str, str | None]:
        """The session's own STT over one whole utterance: (text, language)."""
        frame = rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)
        event = await self._session.stt.recognize(buffer=frame, language=language or NOT_GIVEN)
        if not event.alternatives:
            return "", None
        return event.alternatives[0].text.strip(), event.alternatives[0].language

    # --- what the model reads -------------------------------------------------------------------
    @property
    def chat_ctx(self) -> ChatContext:
        """The agent's chat context (read-only: change it with ``update_chat_ctx`` on a copy)."""
        return self._agent.chat_ctx

    async def update_chat_ctx(self, ctx: ChatContext) -> None:
        await self._agent.update_chat_ctx(ctx)

    @property
    def history(self) -> ChatContext:
        """The session's history: every turn as the user heard it."""
        return self._session.history

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
