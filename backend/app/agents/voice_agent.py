"""The one voice engine: ``GemmaVoiceAgent`` in an ``AgentSession``, whatever carries the audio.

A LiveKit room (``app.agents.worker``), the WebSocket (``app.voice.websocket``), the OpenAI Realtime API
(``app.voice.realtime``) and the offline test harness (``bench.offline_io``) only move audio and
events; the same agent and session make the turns: silero VAD -> Whisper -> the LLM -> TTS, one clause
at a time. Both work with no arguments (settings and the embedded models), so a session can be driven
without a LiveKit server.

Where a turn's time goes (``python -m bench.agent_latency``): the VAD notices the pause; Whisper
transcribes the utterance, starting at the first window the VAD scores as silence (``SpeculativeSTT``)
so that it overlaps the silence the VAD still waits for. A guess done before the silence is confirmed
is offered as a preflight transcript and the LLM starts on it (preemptive generation); the reply is
spoken only once the turn is confirmed, and a guess the user talks past is dropped with its reply. The
LLM writes a first clause and the TTS speaks it (``SpokenSentenceTokenizer``), with the model paused
until that clause's first audio (``llm_gate``). The model reads at most ``VOICE_CONTEXT_TOKENS`` of the
conversation (``ContextWindow``): a longer context slows every token.
The endpointing delay is shorter than the VAD's silence wait and so adds nothing. The local
end-of-turn model is optional (``turn_detector=True``): on clean synthetic speech it tends to wait
for its maximum delay, which is capped here.

Talking over a reply pauses it as soon as the VAD hears speech (``VOICE_MIN_INTERRUPTION_MS``); as soon as
the first words are heard (``BargeIn``: Whisper on the utterance so far, while the user still talks) the
reply stops and the history keeps what the listener heard. Speech with no words (a cough) lets the reply go
on. Every turn fits the model's context (``ContextWindow``); a turn that never ends is cut after
``VOICE_MAX_TURN_SECONDS`` (``TurnLengthLimit``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable
from typing import Any

from livekit.agents import Agent, AgentSession, APIError, ModelSettings, llm, tts
from livekit.agents.inference import TurnDetector
from livekit.agents.voice.events import UserInputTranscribedEvent, UserStateChangedEvent

from app.agents.context_window import ContextWindow
from app.agents.plugins import GemmaLLM, OpenAudioTTS, SpeculativeSTT, WhisperSTT
from app.agents.runtime import shared_services
from app.agents.sentences import SpokenSentenceTokenizer
from app.audio.vad import load_vad
from app.config.settings import Settings, get_settings
from app.services.container import Services
from app.services.llm import LLMGate

log = logging.getLogger("app.agents.voice")

# From the end of speech; the VAD's own silence wait (250 ms by default) already covers it.
MIN_ENDPOINTING_S = 0.2
# With the turn detector only: how long an "unlikely to be done" turn may wait.
MAX_ENDPOINTING_S = 1.5
# The early passes over a paused reply (BargeIn) need only the first words: a 3 s encoder window, not
# WHISPER_MIN_WINDOW_S, makes each ~77 ms instead of ~125 ms on 0.25-0.8 s of speech (Whisper base here).
EARLY_WORDS_WINDOW_S = 3.0
# How long a cut turn's transcription may take (Whisper on up to VOICE_MAX_TURN_SECONDS of audio).
CUT_TRANSCRIPT_TIMEOUT_S = 20.0


class GemmaVoiceAgent(Agent):
    def __init__(self, *, instructions: str | None = None, settings: Settings | None = None,
                 **agent_options: Any) -> None:
        """``instructions``: default ``VOICE_INSTRUCTIONS``. Other keywords go to ``Agent``."""
        self.settings = settings or get_settings()
        super().__init__(instructions=instructions or self.settings.voice_instructions, **agent_options)
        self._window: ContextWindow | None = None
        self._turn_limit: TurnLengthLimit | None = None
        self._barge_in: BargeIn | None = None
        # Called with the limit (seconds) when a turn that would not end was cut (transports tell the user).
        self.turn_cut_handlers: list[Callable[[float], None]] = []

    async def on_enter(self) -> None:
        self._turn_limit = TurnLengthLimit(self.session, self.settings.voice_max_turn_seconds,
                                           on_cut=self._turn_cut)
        self._barge_in = BargeIn(self.session)

    async def on_exit(self) -> None:
        if self._turn_limit is not None:
            self._turn_limit.close()
        if self._barge_in is not None:
            self._barge_in.close()

    def _turn_cut(self, seconds: float) -> None:
        for handler in self.turn_cut_handlers:
            handler(seconds)

    async def llm_node(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool],
                       model_settings: ModelSettings) -> AsyncIterable[llm.ChatChunk]:
        model = self.session.llm
        if isinstance(model, GemmaLLM):  # the model's own tokenizer says what fits
            try:
                # It may still be loading (a session that started with the worker): wait for it.
                await model.wait_loaded()
            except APIError:
                pass  # it did not load: the model's stream fails the turn at once, and the session says why
            else:
                if self._window is None:  # room for the longest reply (a transport may lower it for a while)
                    self._window = ContextWindow(model.service, reply_tokens=max(
                        model.max_tokens, self.settings.voice_max_reply_tokens),
                        max_tokens=self.settings.voice_context_tokens)
                chat_ctx = self._window.fit(chat_ctx)
        replied = False
        try:
            async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
                replied = True
                yield chunk
        except APIError as exc:
            if replied:
                raise  # the reply was cut short: what was said stands, the session reports the error
            # The session has reported the error to the client (its "error" event); the user hears why there is
            # no answer instead of silence, and the next turn tries again.
            log.warning("no reply this turn: %s", exc)
            yield apology_for(exc)


def apology_for(exc: APIError) -> str:
    """What the assistant says when the language model could not answer a turn (``exc``, or the error LiveKit's
    retries gave up on: its cause)."""
    body = getattr(exc, "body", None)
    if not isinstance(body, dict):
        body = getattr(exc.__cause__, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    if code in ("model_server_unavailable", "model_server_error"):
        return "Sorry, I can't reach my language model right now. Please try again in a moment."
    if code in ("model_server_busy", "overloaded"):
        return "Sorry, I'm too busy to answer right now. Please try again in a moment."
    return "Sorry, something went wrong while I was answering. Please try again."


class TurnLengthLimit:
    """Cuts a user turn that goes on past ``max_seconds`` (a noisy room, a TV): what was said so far is
    transcribed and answered, as if the user had paused."""

    def __init__(self, session: AgentSession, max_seconds: float, *,
                 on_cut: Callable[[float], None] | None = None) -> None:
        self._session = session
        self.max_seconds = max_seconds
        self._on_cut = on_cut
        self._timer: asyncio.TimerHandle | None = None
        session.on("user_state_changed", self._user_state_changed)

    def _user_state_changed(self, ev: UserStateChangedEvent) -> None:
        self._cancel()
        if ev.new_state == "speaking":
            self._timer = asyncio.get_running_loop().call_later(self.max_seconds, self._cut)

    def _cut(self) -> None:
        log.info("a user turn ran past %.0f s: it is cut and answered", self.max_seconds)
        self._session.commit_user_turn(transcript_timeout=CUT_TRANSCRIPT_TIMEOUT_S)
        if self._on_cut is not None:
            self._on_cut(self.max_seconds)
        self._timer = asyncio.get_running_loop().call_later(self.max_seconds, self._cut)  # still going

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel()
        self._session.off("user_state_changed", self._user_state_changed)


class BargeIn:
    """Ends a reply the user talks over as soon as their first words are heard.

    LiveKit Agents pauses the reply once the user has spoken ``min_duration`` over it, but stops it for good
    only at the utterance's final transcript: after the user has finished talking and the VAD has waited out
    the silence, 1.5-2 s into a question. While a reply is paused for the user's voice, the speculative STT
    transcribes the utterance so far, again and again as it grows (early words); the first interim
    transcript with words interrupts the reply. A cough or a door finds no words (the same filters as a
    final transcript), and the reply resumes as before."""

    def __init__(self, session: AgentSession) -> None:
        self._session = session
        self._stt = session.stt if isinstance(session.stt, SpeculativeSTT) else None
        if self._stt is not None:  # one per session (create_agent_session): it asks this session only
            self._stt.early_words_wanted = self.reply_paused
        session.on("user_input_transcribed", self._transcribed)

    def reply_paused(self) -> bool:
        """Whether a reply waits, paused, while the user speaks: the agent would be speaking otherwise."""
        speech = self._session.current_speech
        return (speech is not None and not speech.done() and not speech.interrupted
                and speech.allow_interruptions and self._session.user_state == "speaking"
                and self._session.agent_state != "speaking")

    def _transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if not ev.is_final and ev.transcript.strip() and self.reply_paused():
            log.debug("words over a paused reply (%r): it stops", ev.transcript[:40])
            self._session.interrupt()

    def close(self) -> None:
        if self._stt is not None and self._stt.early_words_wanted == self.reply_paused:
            self._stt.early_words_wanted = None
        self._session.off("user_input_transcribed", self._transcribed)


class PieceByPieceTTS(tts.StreamAdapter):
    """The session's TTS: a reply is spoken one piece at a time, the first piece maybe a clause."""

    def __init__(self, piece_tts: OpenAudioTTS) -> None:
        super().__init__(tts=piece_tts, sentence_tokenizer=SpokenSentenceTokenizer())
        self.piece_tts = piece_tts


def create_agent_session(services: Services | None = None, *, voice: str | None = None,
                         language: str | None = None, turn_detector: bool = False,
                         vad: Any = None, **overrides: Any) -> AgentSession:
    """An ``AgentSession`` over the project's services (default: the process-wide ones).

    ``voice``: TTS voice / reference id. ``language``: what the user speaks (ISO code); unset, Whisper
    detects it on every turn, which costs a second encoder pass. ``turn_detector``: use the local
    end-of-turn model (``turn-detector-v1-mini``) on top of the VAD. ``vad``: the session's VAD (and the
    speculative STT's), default the shared one of the settings (``app.audio.vad``). Other keywords override
    ``AgentSession`` arguments.
    """
    services = services or shared_services()
    settings = services.settings
    vad = vad if vad is not None else load_vad(settings)
    # Cleared while the TTS starts a piece: the model waits, so that the piece's first audio comes sooner.
    llm_gate = LLMGate()
    whisper = WhisperSTT(services=services, language=language)
    options: dict[str, Any] = {
        # Whisper starts on an utterance at the first pause, while the VAD still confirms the silence.
        "stt": SpeculativeSTT(stt=whisper, vad=vad, speculate_after_s=settings.voice_speculate_after_ms / 1000,
                              speech_threshold=settings.vad_activation_threshold,
                              early_stt=whisper.short_window(EARLY_WORDS_WINDOW_S)),
        "llm": GemmaLLM(services=services, llm_gate=llm_gate),
        "tts": PieceByPieceTTS(OpenAudioTTS(services=services, voice=voice, llm_gate=llm_gate)),
        "vad": vad,
        # The sentence tokenizer already makes each piece speakable (no markup, no emoji); LiveKit's markdown
        # filter would also hold every piece's closing punctuation back until the model's next token.
        "tts_text_transforms": None,
        "aec_warmup_duration": settings.voice_aec_warmup_s or None,
        "turn_handling": {
            "turn_detection": TurnDetector(version="v1-mini") if turn_detector else "vad",
            "endpointing": {"min_delay": MIN_ENDPOINTING_S, "max_delay": MAX_ENDPOINTING_S},
            # "vad": the adaptive interruption model is a LiveKit Cloud service. Speech pauses the reply;
            # words stop it, a noise with none lets it go on (outputs that can pause: rooms, ListenerPlayout).
            "interruption": {"enabled": True, "mode": "vad",
                             "min_duration": settings.voice_min_interruption_ms / 1000,
                             "resume_false_interruption": True,
                             "false_interruption_timeout": settings.voice_false_interruption_s},
            "preemptive_generation": {"enabled": True},
        },
    }
    options.update(overrides)
    model = options["llm"]
    if isinstance(model, GemmaLLM) and model.llm_gate is None:  # a caller's own GemmaLLM joins the pause too
        model.llm_gate = llm_gate
    return AgentSession(**options)
