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
``VOICE_MAX_TURN_SECONDS`` (``TurnLengthLimit``). The same holds from the first word of a session: in its first
seconds (``VOICE_AEC_WARMUP_S``), while the listener's echo canceller still learns the agent's voice, a voice
over the reply that stops when the reply pauses, or whose words are the reply's own, is its echo, not the user
(``EchoCheck``): it neither stops the reply nor makes a turn.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, APIError, ModelSettings, llm, stt, tts
from livekit.agents.inference import TurnDetector
from livekit.agents.types import USERDATA_TTS_STARTED_TIME
from livekit.agents.voice.events import AgentStateChangedEvent, UserInputTranscribedEvent, UserStateChangedEvent

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
# EchoCheck: an utterance that starts this long after the agent's voice stopped (a pause, the reply's end) may
# still be its echo (the echo's delay, and the VAD's start-of-speech lag).
ECHO_TAIL_S = 0.5
# EchoCheck: words heard are the echo when at least this share of them are words of what the agent said.
ECHO_MATCH = 0.6
# EchoCheck: the first words of an utterance, heard while it goes on, are the user's only once this many of them
# are not the agent's (Whisper mishears the start of a piece of echo: "Once upon a time" came out as "So upon").
ECHO_USER_WORDS = 3
# EchoCheck: how alike (difflib's ratio) a word heard must be to one the agent said to count as its ("lane" and
# "land": 0.75; not "spider" and "spied": 0.73, nor "pun" and "upon": 0.57).
ECHO_WORD_LIKE = 0.75


class GemmaVoiceAgent(Agent):
    def __init__(self, *, instructions: str | None = None, settings: Settings | None = None,
                 **agent_options: Any) -> None:
        """``instructions``: default ``VOICE_INSTRUCTIONS``. Other keywords go to ``Agent``."""
        self.settings = settings or get_settings()
        super().__init__(instructions=instructions or self.settings.voice_instructions, **agent_options)
        self._window: ContextWindow | None = None
        self._turn_limit: TurnLengthLimit | None = None
        self._barge_in: BargeIn | None = None
        self._echo: EchoCheck | None = None
        # Called with the limit (seconds) when a turn that would not end was cut (transports tell the user).
        self.turn_cut_handlers: list[Callable[[float], None]] = []
        # Told the moments of a reply with their perf_counter() time: a benchmark's trace (``TurnTrace``).
        self.on_moment: Callable[[str, float], None] | None = None

    async def on_enter(self) -> None:
        self._turn_limit = TurnLengthLimit(self.session, self.settings.voice_max_turn_seconds,
                                           on_cut=self._turn_cut)
        if self.settings.voice_aec_warmup_s > 0:
            self._echo = EchoCheck(self.session, self.settings.voice_aec_warmup_s)
        self._barge_in = BargeIn(self.session)

    async def on_exit(self) -> None:
        if self._turn_limit is not None:
            self._turn_limit.close()
        if self._barge_in is not None:
            self._barge_in.close()
        if self._echo is not None:
            self._echo.close()

    async def stt_node(self, audio: AsyncIterable[rtc.AudioFrame],
                       model_settings: ModelSettings) -> AsyncIterable[stt.SpeechEvent | str]:
        # The echo's words (EchoCheck) are dropped here, before the session sees them: any final transcript stops a
        # paused reply at once (AgentActivity.on_final_transcript -> _cancel_speech_pause), and a turn's reply
        # interrupts it before on_user_turn_completed runs. Dropped, they are like a cough's none: the reply
        # resumes after voice_false_interruption_s and no turn is made.
        async for event in Agent.default.stt_node(self, audio, model_settings):
            echo = self._echo
            if echo is not None and isinstance(event, stt.SpeechEvent):
                if event.type == stt.SpeechEventType.START_OF_SPEECH:
                    echo.utterance_started()
                elif event.type == stt.SpeechEventType.END_OF_SPEECH:
                    echo.utterance_ended(event.speech_end_time)
                elif event.alternatives and echo.is_echo(
                        event.alternatives[0].text, final=event.type == stt.SpeechEventType.FINAL_TRANSCRIPT):
                    log.debug("the agent's echo (%r): not the user", event.alternatives[0].text[:40])
                    continue
            yield event

    async def tts_node(self, text: AsyncIterable[str],
                       model_settings: ModelSettings) -> AsyncIterable[rtc.AudioFrame]:
        if self._echo is not None:
            text = self._echo.follow(text)
        first = True
        async for frame in Agent.default.tts_node(self, text, model_settings):
            if first and self.on_moment is not None:
                self.on_moment("tts_first_audio", time.perf_counter())
                # The framework's stamp: when the reply's first piece of text (a clause) reached the TTS.
                if (started := frame.userdata.get(USERDATA_TTS_STARTED_TIME)) is not None:
                    self.on_moment("llm_first_piece", started)
            first = False
            yield frame

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
                if not replied and self.on_moment is not None:
                    self.on_moment("llm_first_token", time.perf_counter())
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


class EchoCheck:
    """Tells the agent's echo from the user during the agent's first ``window_s`` of speech in a session.

    Until the listener's echo canceller has learnt the agent's voice (a browser's takes a few seconds of it), the
    microphone may hear the agent too. LiveKit Agents' own answer (``aec_warmup_duration``) is to give the STT
    silence and let no sound interrupt the reply for that long: a user who talks over the greeting or the first
    reply is not heard at all. Here the reply pauses at any voice as always, and an utterance that starts while
    the agent is audible in the window is the echo if
    - its voice stopped when the agent's did: it ended within ``ECHO_TAIL_S`` of the reply pausing (Whisper finds
      no words in so short a piece of the echo, or wrong ones: a 0.2 s piece came out as "What's"), or
    - its words are mostly (``ECHO_MATCH``) words the agent has said; while it goes on, until ``ECHO_USER_WORDS``
      of them are not.
    ``GemmaVoiceAgent.stt_node`` drops the echo's transcripts: the reply resumes as after a cough, and no turn is
    made. The user's own voice goes on past the pause: their words stop the reply (``BargeIn``) once it has
    outlasted the echo's tail.

    A word heard is the agent's if it said it or one like it (``ECHO_WORD_LIKE``: Whisper hears "Once upon a
    time in the land" in its echo as "The pun at time in the lane").

    Once an echo has been heard, the voice alone no longer pauses the reply for the rest of the window (each
    pause would cut the echo short and resume into the next one; ``guarding``): the final transcript of what was
    said over it decides, and words that are not the reply's own stop it then. The window counts the agent's
    audible speech (a paused reply teaches the echo canceller nothing)."""

    def __init__(self, session: AgentSession, window_s: float) -> None:
        self._session = session
        self.window_s = window_s
        self._loop = asyncio.get_running_loop()
        self._spoken_s = 0.0  # the agent's speech so far, but for the stretch under way
        self._speaking_since: float | None = None  # loop time; None while it does not speak
        self._audible_until = 0.0  # loop time: when its voice last stopped, plus ECHO_TAIL_S
        self._stopped_at: float | None = None  # time.time() when its voice last stopped
        self._said: set[str] = set()  # the words it has said (while the window is open)
        # The current utterance: whether it started where an echo could, when, and whether it was the echo's tail.
        self._suspect = False
        self._started_at = 0.0
        self._tail_echo = False
        self.echo_heard = False
        self._min_duration: float | None = None  # the session's own, while the voice alone does not pause
        self._closing: asyncio.TimerHandle | None = None
        session.on("agent_state_changed", self._agent_state_changed)
        if session.agent_state == "speaking":
            self._started_speaking(self._loop.time())

    def spoken_s(self) -> float:
        """Seconds of speech the agent has made audible so far."""
        now = self._loop.time()
        return self._spoken_s + (now - self._speaking_since if self._speaking_since is not None else 0.0)

    def open(self) -> bool:
        return self.spoken_s() < self.window_s

    def guarding(self) -> bool:
        """Whether only the user's words, not their voice, stop the reply now (an echo was heard)."""
        return self._min_duration is not None

    def _agent_state_changed(self, ev: AgentStateChangedEvent) -> None:
        now = self._loop.time()
        if ev.new_state == "speaking" and self._speaking_since is None:
            self._started_speaking(now)
        elif ev.new_state != "speaking" and self._speaking_since is not None:
            self._spoken_s += now - self._speaking_since
            self._speaking_since = None
            self._audible_until = now + ECHO_TAIL_S
            self._stopped_at = time.time()
            if self._closing is not None:
                self._closing.cancel()
                self._closing = None

    def _started_speaking(self, now: float) -> None:
        self._speaking_since = now
        if self.open():
            self._closing = self._loop.call_later(self.window_s - self._spoken_s, self._close_window)
        else:
            self._close_window()

    def _close_window(self) -> None:
        self._closing = None
        if self._min_duration is not None:
            self._session.options.interruption["min_duration"] = self._min_duration
            self._min_duration = None
            log.debug("the echo window closed: the voice pauses a reply again")

    def _guard(self) -> None:
        self.echo_heard = True
        if self.open() and not self.guarding():
            interruption = self._session.options.interruption
            self._min_duration = interruption["min_duration"]
            interruption["min_duration"] = float("inf")
            log.debug("the agent's echo was heard: until the window closes, only words stop a reply")

    async def follow(self, text: AsyncIterable[str]) -> AsyncIterable[str]:
        """``text`` (what the agent is about to say), noting its words."""
        async for piece in text:
            if self.open():
                self._said.update(WORD.findall(piece.lower()))
            yield piece

    def utterance_started(self) -> None:
        audible = self._speaking_since is not None or self._loop.time() < self._audible_until
        self._suspect = audible and self.open()
        self._started_at, self._tail_echo = time.time(), False

    def _paused_by_it(self) -> bool:
        """Whether the agent's voice stopped during the current (suspect) utterance, and has not come back."""
        return (self._suspect and self._speaking_since is None and self._stopped_at is not None
                and self._stopped_at >= self._started_at - ECHO_TAIL_S)

    def utterance_ended(self, ended_at: float | None) -> None:
        """The VAD heard the current utterance end (``ended_at``: time.time() of its last voice)."""
        ended_at = ended_at or time.time()
        if self._paused_by_it() and ended_at <= self._stopped_at + ECHO_TAIL_S:
            self._tail_echo = True
            self._guard()

    def is_echo(self, transcript: str, *, final: bool) -> bool:
        """Whether ``transcript`` (of the current utterance, so far or, ``final``, whole) is the agent's own voice."""
        if not self._suspect:
            return False
        if self._tail_echo:
            return True
        if not final and self._paused_by_it() and time.time() <= self._stopped_at + ECHO_TAIL_S:
            return True  # too soon to say: the next pass over the utterance, if the voice goes on, will tell
        heard = WORD.findall(transcript.lower())
        unknown = sum(not self._said_like(word) for word in heard)
        if heard and (unknown <= (1 - ECHO_MATCH) * len(heard) or not final and unknown < ECHO_USER_WORDS):
            self._guard()
            return True
        return False

    def _said_like(self, word: str) -> bool:
        if word in self._said:
            return True
        return len(word) > 2 and bool(difflib.get_close_matches(word, self._said, n=1, cutoff=ECHO_WORD_LIKE))

    def close(self) -> None:
        self._close_window()
        self._session.off("agent_state_changed", self._agent_state_changed)


WORD = re.compile(r"[\w']+")


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
        # LiveKit's warm-up would ignore the user for VOICE_AEC_WARMUP_S; GemmaVoiceAgent tells the echo apart.
        "aec_warmup_duration": None,
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
