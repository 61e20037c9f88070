"""``WS /v1/realtime``: the OpenAI Realtime API as one more transport of the voice engine.

The conversation is the same ``GemmaVoiceAgent`` in the same ``AgentSession`` as on ``/v1/conversation/ws``
and in a LiveKit room (``app.agents.voice_agent``): this module only translates. Client events become
microphone audio (``SocketMicrophone``), chat-context items and ``generate_reply`` calls; the session's reply
comes back through a ``ListenerPlayout`` (the client's playback clock) and the framework's
``TranscriptSynchronizer`` (words as they are heard), and its events become Realtime server events.

Protocol version: the GA Realtime API as the ``openai`` Python SDK 3.x speaks it (``client.realtime.connect``):
``session.type: "realtime"``, nested ``audio.input`` / ``audio.output`` settings, ``response.output_audio.delta``
and friends. Beta clients (header ``OpenAI-Beta: realtime=v1``) get the beta event names
(``response.audio.delta``, ...) and session shape; both session shapes are accepted from anyone.

How the API's ideas map onto the engine:

- ``server_vad`` on: appended audio is the session's microphone. The engine's VAD, Whisper and turn
  taking make the turns (``threshold``, ``silence_duration_ms`` and ``prefix_padding_ms`` tune this session's
  own silero VAD). Talking over a reply pauses it; words stop it, a noise lets it go on.
- ``turn_detection: null``: audio collects in a buffer; ``input_audio_buffer.commit`` transcribes it into a user
  item and ``response.create`` answers.
- Items live in the agent's chat context (what the model reads), so ``conversation.item.create`` / ``delete`` /
  ``truncate`` change what the next reply is written from. ``truncate`` keeps the words that were heard by
  ``audio_end_ms``, on the timeline of when each word was spoken.
- ``response.done`` comes once the reply has played on the client's clock: the transcript deltas follow the
  audio as it plays (the same words the history keeps after a barge-in).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from livekit import rtc
from livekit.agents import NOT_GIVEN, AgentSession, llm
from livekit.agents.metrics import LLMMetrics
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    SpeechCreatedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.transcription import TranscriptSynchronizer
from starlette.websockets import WebSocket

from app.agents.playout import ListenerPlayout, PlayedSegment
from app.agents.plugins import GemmaLLM
from app.agents.voice_agent import CUT_TRANSCRIPT_TIMEOUT_S, GemmaVoiceAgent, create_agent_session
from app.audio import g711
from app.audio.codec import Resampler
from app.audio.vad import tunable_vad
from app.services.container import Services
from app.voice.socket_io import (INTERRUPT_WAIT_S, FrameError, SocketMicrophone, SocketOutbox, SocketTranscript,
                                 client_frames, require_unicode, session_stt, session_tts)

log = logging.getLogger("app.voice.realtime")

PCM_RATE = 24000
# Realtime audio formats: name -> (G.711 law or None for PCM, sample rate).
FORMATS = {"audio/pcm": (None, PCM_RATE), "audio/pcmu": ("ulaw", g711.RATE), "audio/pcma": ("alaw", g711.RATE)}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
# What beta clients call the GA events.
BETA_EVENTS = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
BETA_CONTENT = {"output_audio": "audio", "output_text": "text"}
MIN_COMMIT_MS = 100  # the API's smallest committable buffer
FRAME_MS = 20  # appended audio goes to the session in frames of this length
MAX_ITEM_ID = 64


class RealtimeError(Exception):
    """A client event the server refuses: an ``error`` event, and the session goes on."""

    def __init__(self, code: str, message: str, *, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.param, self.kind = code, param, kind


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


# --- session configuration ----------------------------------------------------------------------------


@dataclass
class SessionConfig:
    model: str
    instructions: str
    voice: str
    output_modalities: tuple[str, ...] = ("audio",)
    input_format: str = "audio/pcm"
    output_format: str = "audio/pcm"
    vad: bool = True
    vad_type: str = "server_vad"
    threshold: float = 0.5
    silence_ms: int = 250
    padding_ms: int = 300
    transcription: dict | None = None  # {"model", "language", "prompt"}; None: no transcription events
    temperature: float = 0.3
    max_output_tokens: int | str = "inf"

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    def turn_detection(self) -> dict | None:
        if not self.vad:
            return None
        # create_response / interrupt_response are what the engine always does; idle_timeout_ms is not served.
        return {"type": self.vad_type, "threshold": self.threshold, "prefix_padding_ms": self.padding_ms,
                "silence_duration_ms": self.silence_ms, "create_response": True, "interrupt_response": True,
                "idle_timeout_ms": None}

    def ga(self, session_id: str, max_tokens: int) -> dict:
        return {
            "type": "realtime", "object": "realtime.session", "id": session_id, "model": self.model,
            "output_modalities": list(self.output_modalities), "instructions": self.instructions,
            "tools": [], "tool_choice": "auto", "max_output_tokens": max_tokens, "tracing": None,
            "truncation": "auto", "prompt": None, "include": None, "expires_at": 0,
            "audio": {
                "input": {"format": format_object(self.input_format), "transcription": self.transcription,
                          "noise_reduction": None, "turn_detection": self.turn_detection()},
                "output": {"format": format_object(self.output_format), "voice": self.voice, "speed": 1.0},
            },
        }

    def beta(self, session_id: str, max_tokens: int) -> dict:
        beta_name = {v: k for k, v in BETA_FORMATS.items()}
        return {
            "id": session_id, "object": "realtime.session", "model": self.model,
            "modalities": ["text", "audio"] if self.audio_out else ["text"], "instructions": self.instructions,
            "voice": self.voice, "input_audio_format": beta_name[self.input_format],
            "output_audio_format": beta_name[self.output_format], "input_audio_transcription": self.transcription,
            "turn_detection": self.turn_detection(), "input_audio_noise_reduction": None, "tools": [],
            "tool_choice": "auto", "temperature": self.temperature, "max_response_output_tokens": max_tokens,
            "speed": 1.0, "tracing": None,
        }


def format_object(name: str) -> dict:
    return {"type": name, "rate": PCM_RATE} if name == "audio/pcm" else {"type": name}


def parse_format(value: Any, param: str) -> str:
    if isinstance(value, str) and value in BETA_FORMATS:
        return BETA_FORMATS[value]
    if isinstance(value, dict) and value.get("type") in FORMATS:
        if value["type"] == "audio/pcm" and value.get("rate", PCM_RATE) != PCM_RATE:
            raise RealtimeError("invalid_value", "audio/pcm is served at 24000 Hz only", param=f"{param}.rate")
        return value["type"]
    raise RealtimeError("invalid_value", "the audio format must be {\"type\": \"audio/pcm\", \"rate\": 24000}, "
                        "audio/pcmu or audio/pcma (beta: pcm16, g711_ulaw, g711_alaw)", param=param)


def parse_modalities(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(m in ("text", "audio") for m in value):
        raise RealtimeError("invalid_value", "output modalities are [\"audio\"] or [\"text\"]", param=param)
    return ("audio",) if "audio" in value else ("text",)


def parse_max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise RealtimeError("invalid_value", "max output tokens are an integer from 1 to 4096, or \"inf\"",
                            param=param)
    return value


def parse_temperature(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 2.0:
        raise RealtimeError("invalid_value", "temperature is a number from 0 to 2", param=param)
    return float(value)


def _number(td: dict, key: str, low: float, high: float, param: str, *, integer: bool = False) -> Any:
    value = td[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or (integer and int(value) != value):
        raise RealtimeError("invalid_value", f"{key} must be a number from {low:g} to {high:g}",
                            param=f"{param}.{key}")
    return int(value) if integer else float(value)


def parse_turn_detection(value: Any, param: str) -> dict:
    if value is None:
        return {"vad": False}
    if not isinstance(value, dict) or value.get("type") not in ("server_vad", "semantic_vad"):
        raise RealtimeError("invalid_value", "turn_detection is null, or {\"type\": \"server_vad\", ...}",
                            param=param)
    changes: dict[str, Any] = {"vad": True, "vad_type": "server_vad"}  # semantic_vad: the engine's VAD turns
    if value.get("threshold") is not None:
        changes["threshold"] = _number(value, "threshold", 0.0, 1.0, param)
    if value.get("silence_duration_ms") is not None:
        changes["silence_ms"] = _number(value, "silence_duration_ms", 0, 10000, param, integer=True)
    if value.get("prefix_padding_ms") is not None:
        changes["padding_ms"] = _number(value, "prefix_padding_ms", 0, 5000, param, integer=True)
    for flag in ("create_response", "interrupt_response"):
        if value.get(flag) is not None and not isinstance(value[flag], bool):
            raise RealtimeError("invalid_value", f"{flag} must be true or false", param=f"{param}.{flag}")
    return changes


def parse_transcription(value: Any, param: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RealtimeError("invalid_value", "transcription is null or an object", param=param)
    for key in ("model", "language", "prompt"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise RealtimeError("invalid_value", f"{key} must be text", param=f"{param}.{key}")
    return {"model": value.get("model") or "whisper-1", "language": value.get("language") or None,
            "prompt": value.get("prompt") or None}


def parse_voice(value: Any, param: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        value = value["id"]
    if not isinstance(value, str) or not value or len(value) > 200:
        raise RealtimeError("invalid_value", "voice must be a voice name", param=param)
    return value


# --- the reply, as the client gets it -------------------------------------------------------------------


class AudioEncoder:
    """A response's audio in the client's format: PCM 24 kHz, or G.711 at 8 kHz."""

    def __init__(self, fmt: str) -> None:
        self.law, self.rate = FORMATS[fmt]
        self._resampler: Resampler | None = None

    def encode(self, frame: rtc.AudioFrame) -> bytes:
        pcm = bytes(frame.data)
        if frame.sample_rate != self.rate:  # the format changed while this reply was being spoken
            if self._resampler is None or self._resampler.src_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, self.rate)
            pcm = self._resampler.push(pcm)
        return g711.encode(pcm, self.law) if self.law else pcm


@dataclass
class Response:
    """One reply of the agent, as a Realtime response with one assistant message item."""

    id: str
    item_id: str
    modalities: tuple[str, ...]
    output_format: str
    voice: str
    max_output_tokens: int | str
    requested: bool  # by response.create (announced at once); else the engine's own turn (announced on output)
    metadata: dict | None = None
    handle: SpeechHandle | None = None
    announced: bool = False
    item_started: bool = False
    done: bool = False
    cancel_reason: str | None = None  # client_cancelled / turn_detected
    error: dict | None = None
    transcript: str = ""
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds heard, transcript length)
    segments: list[PlayedSegment] = field(default_factory=list)
    audio_seconds: float = 0.0  # sent
    truncate_ms: int | None = None
    usage: dict = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0})
    restore: list[Callable[[], Any]] = field(default_factory=list)
    encoder: AudioEncoder | None = None

    @property
    def audio_out(self) -> bool:
        return "audio" in self.modalities

    @property
    def cancelling(self) -> bool:
        return self.done or self.cancel_reason is not None


@dataclass
class Item:
    """A conversation item as the client knows it, and the chat-context message it is (``chat_id``)."""

    id: str
    role: str
    content: list[dict]
    chat_id: str | None = None
    status: str = "completed"
    response: Response | None = None

    def as_event(self, beta: bool) -> dict:
        content = [dict(part, type=BETA_CONTENT.get(part["type"], part["type"])) if beta else dict(part)
                   for part in self.content]
        return {"id": self.id, "object": "realtime.item", "type": "message", "role": self.role,
                "status": self.status, "content": content}


class RealtimeSpeaker(ListenerPlayout):
    """Reply audio to the client, which plays it in real time: the session hears the reply as playing until
    the client has played it. Its rate follows the session's output format (the framework resamples to it)."""

    def __init__(self, conversation: RealtimeConversation) -> None:
        self.rate = PCM_RATE
        super().__init__(label="realtime-speaker", sample_rate=PCM_RATE)
        self._conversation = conversation

    @property
    def sample_rate(self) -> int:
        return self.rate

    async def _deliver(self, frame: rtc.AudioFrame) -> None:
        self._conversation.reply_audio(frame, self.segments[-1])

    def heard(self, segment: PlayedSegment) -> float:
        return segment.played if segment.played is not None else self._heard(segment)


# --- the conversation -----------------------------------------------------------------------------------


class RealtimeConversation:
    def __init__(self, ws: WebSocket, services: Services, *, model: str, beta: bool = False) -> None:
        self.ws = ws
        self.services = services
        self.settings = settings = services.settings
        self.id = new_id("sess")
        self.beta = beta
        self.conversation_id = new_id("conv")
        self._closed = False
        self._buffer = bytearray()  # turn_detection null: audio since the last commit / clear
        self._buffer_full = False
        self._uncommitted = False  # server VAD: audio since the last turn
        self._input_ms = 0.0  # all audio appended, on the input clock (speech_started / stopped)
        self._speaking = False
        self._speech_item: str | None = None
        self._speech_started_ms = 0.0
        self._stopped_item: tuple[str, float] | None = None  # (item id, seconds of speech)
        self._items: dict[str, Item] = {}
        self._order: list[str] = []  # item ids, oldest first
        self._responses: dict[str, Response] = {}  # by speech id
        self._active: Response | None = None
        self._requested: Response | None = None
        self._tasks: set[asyncio.Task] = set()

        self.vad_model = tunable_vad(settings)
        self.session: AgentSession = create_agent_session(services, vad=self.vad_model)
        self.agent = GemmaVoiceAgent(settings=settings)
        self.microphone = SocketMicrophone(label="realtime-microphone")
        self.speaker = RealtimeSpeaker(self)
        self._sync = TranscriptSynchronizer(next_in_chain_audio=self.speaker,
                                            next_in_chain_text=SocketTranscript(self, label="realtime-transcript"))
        self.session.input.audio = self.microphone
        self.session.output.audio = self._sync.audio_output
        self.session.output.transcription = self._sync.text_output
        voices = services.tts.voices()
        self.config = SessionConfig(
            model=model or "gemma", instructions=settings.voice_instructions,
            voice=settings.tts_default_voice or (voices[0] if voices else "default"),
            threshold=settings.vad_activation_threshold, silence_ms=settings.vad_min_silence_ms,
            temperature=settings.voice_temperature)
        for event, handler in (("user_state_changed", self._on_user_state), ("speech_created", self._on_speech_created),
                               ("conversation_item_added", self._on_item_added), ("error", self._on_error),
                               ("close", self._on_close)):
            self.session.on(event, handler)

    # --- the socket ---------------------------------------------------------------------------
    def send(self, event: dict) -> None:
        if self._closed:
            return
        if self.beta:
            event["type"] = BETA_EVENTS.get(event["type"], event["type"])
        event = {"event_id": new_id("event"), **event}
        # ASCII escapes: whatever a client sent that comes back (ids, names) is valid JSON text, lone surrogates too.
        self.outbox.put(json.dumps(event))

    def error(self, exc: RealtimeError, event_id: str | None = None) -> None:
        self.send({"type": "error", "error": {"type": exc.kind, "code": exc.code, "message": str(exc),
                                              "param": exc.param, "event_id": event_id}})

    async def run(self) -> None:
        self.outbox = SocketOutbox(self.ws, name=f"realtime-writer-{self.id}")
        try:
            await self.session.start(self.agent)
            # Token counts for response.done. Registered after the session's own handler, which tags the
            # metrics with the speech they belong to.
            self.session.llm.on("metrics_collected", self._on_llm_metrics)
            self.send({"type": "session.created", "session": self._session_object()})
            async for text, data in client_frames(self.ws, lambda: self._closed):
                if text is not None:
                    await self._on_text_frame(text)
                elif data is not None:
                    self.error(RealtimeError("invalid_event", "events are JSON text frames; audio goes in "
                                             "input_audio_buffer.append as base64"))
        finally:
            await self._close()

    async def _close(self) -> None:
        """Stop everything this conversation started: no generation or task outlives it."""
        self._closed = True
        self.microphone.close()
        if self.session.llm is not None:
            self.session.llm.off("metrics_collected", self._on_llm_metrics)
        await self.session.aclose()
        await self._sync.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.outbox.close()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- client events ------------------------------------------------------------------------
    async def _on_text_frame(self, raw: str) -> None:
        event_id = None
        try:
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, RecursionError):  # RecursionError: nested past what json parses
                raise RealtimeError("invalid_json", "events must be JSON objects with a \"type\"") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise RealtimeError("invalid_event", "events must be JSON objects with a \"type\"", param="type")
            if isinstance(event.get("event_id"), str):
                event_id = event["event_id"][:200]
            handler = self._handlers().get(event["type"])
            if handler is None:
                raise RealtimeError("invalid_event", f"unknown or unsupported event type {event['type']!r}"[:300],
                                    param="type")
            await handler(event)
        except RealtimeError as exc:
            self.error(exc, event_id)
        except FrameError as exc:
            self.error(RealtimeError(exc.code, str(exc)), event_id)
        except Exception as exc:  # noqa: BLE001 - a failed event must not end the session
            log.exception("realtime event failed")
            self.error(RealtimeError("server_error", f"the event failed: {exc}", kind="server_error"), event_id)

    def _handlers(self) -> dict[str, Callable[[dict], Any]]:
        return {"session.update": self._session_update,
                "input_audio_buffer.append": self._append, "input_audio_buffer.commit": self._commit,
                "input_audio_buffer.clear": self._clear,
                "conversation.item.create": self._item_create, "conversation.item.delete": self._item_delete,
                "conversation.item.truncate": self._item_truncate,
                "conversation.item.retrieve": self._item_retrieve,
                "response.create": self._response_create, "response.cancel": self._response_cancel}

    # --- session.update -------------------------------------------------------------------------
    async def _session_update(self, event: dict) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise RealtimeError("missing_required_parameter", "session.update needs a \"session\" object",
                                param="session")
        config = self._parse_session(session)  # all checked before anything changes
        await self._apply(config)
        self.send({"type": "session.updated", "session": self._session_object()})

    def _parse_session(self, s: dict) -> SessionConfig:
        config = replace(self.config)
        if s.get("type") not in (None, "realtime"):
            raise RealtimeError("invalid_value", "only \"realtime\" sessions are served here", param="session.type")
        if "instructions" in s:
            text = s["instructions"]
            if not isinstance(text, str) or len(text) > self.settings.max_text_chars:
                raise RealtimeError("invalid_value", f"instructions are text of at most "
                                    f"{self.settings.max_text_chars} characters", param="session.instructions")
            require_unicode(text, "instructions")
            config.instructions = text or self.settings.voice_instructions
        for key in ("output_modalities", "modalities"):
            if s.get(key) is not None:
                config.output_modalities = parse_modalities(s[key], f"session.{key}")
        for key in ("max_output_tokens", "max_response_output_tokens"):
            if s.get(key) is not None:
                config.max_output_tokens = parse_max_tokens(s[key], f"session.{key}")
        if s.get("temperature") is not None:
            config.temperature = parse_temperature(s["temperature"], "session.temperature")
        audio = s.get("audio")
        if audio is not None and not isinstance(audio, dict):
            raise RealtimeError("invalid_value", "audio must be an object", param="session.audio")
        audio_in = (audio or {}).get("input") or {}
        audio_out = (audio or {}).get("output") or {}
        if not isinstance(audio_in, dict) or not isinstance(audio_out, dict):
            raise RealtimeError("invalid_value", "audio.input and audio.output must be objects", param="session.audio")
        # GA nests the settings in audio.input / audio.output; beta had them at the top.
        for value, param in ((audio_in.get("format"), "session.audio.input.format"),
                             (s.get("input_audio_format"), "session.input_audio_format")):
            if value is not None:
                config.input_format = parse_format(value, param)
        for value, param in ((audio_out.get("format"), "session.audio.output.format"),
                             (s.get("output_audio_format"), "session.output_audio_format")):
            if value is not None:
                config.output_format = parse_format(value, param)
        for container, key, param in ((audio_in, "turn_detection", "session.audio.input.turn_detection"),
                                      (s, "turn_detection", "session.turn_detection")):
            if key in container:
                config = replace(config, **parse_turn_detection(container[key], param))
        for container, key, param in ((audio_in, "transcription", "session.audio.input.transcription"),
                                      (s, "input_audio_transcription", "session.input_audio_transcription")):
            if key in container:
                config.transcription = parse_transcription(container[key], param)
        for value, param in ((audio_out.get("voice"), "session.audio.output.voice"), (s.get("voice"), "session.voice")):
            if value is not None:
                config.voice = parse_voice(value, param)
        if s.get("tools") is not None and not isinstance(s["tools"], list):
            raise RealtimeError("invalid_value", "tools must be a list", param="session.tools")
        return config

    async def _apply(self, config: SessionConfig) -> None:
        old, self.config = self.config, config
        if config.instructions != old.instructions:
            await self.agent.update_instructions(config.instructions)
        model = self.session.llm
        if isinstance(model, GemmaLLM):
            model.update_options(temperature=config.temperature, max_tokens=self._max_tokens(config.max_output_tokens))
        session_tts(self.session).update_options(voice=self._engine_voice(config.voice))
        language = (config.transcription or {}).get("language") or ""
        session_stt(self.session).update_options(language=language,
                                                 prompt=(config.transcription or {}).get("prompt") or "")
        if (config.threshold, config.silence_ms, config.padding_ms) != (old.threshold, old.silence_ms, old.padding_ms):
            self.vad_model.update_options(activation_threshold=config.threshold,
                                          deactivation_threshold=max(config.threshold - 0.15, 0.01),
                                          min_silence_duration=config.silence_ms / 1000,
                                          prefix_padding_duration=config.padding_ms / 1000)
        if config.input_format != old.input_format:
            self._buffer.clear()
        if config.vad != old.vad:
            self._buffer.clear()
            self._uncommitted = False
            # turn_detection null: the session hears nothing until the client commits (see _commit).
            self.session.input.audio = self.microphone if config.vad else None
        self.speaker.rate = FORMATS[config.output_format][1]
        if self._active is None:
            self.session.output.set_audio_enabled(config.audio_out)

    def _max_tokens(self, requested: int | str) -> int:
        """The context window keeps room for VOICE_MAX_REPLY_TOKENS: a reply may be shorter, never longer."""
        cap = self.settings.voice_max_reply_tokens
        return cap if requested == "inf" else min(int(requested), cap)

    def _engine_voice(self, voice: str) -> str:
        """OpenAI voice names (alloy, marin, ...) mean nothing to our engines: only known voices pass through."""
        return voice if voice in self.services.tts.voices() else (self.settings.tts_default_voice or "")

    def _session_object(self) -> dict:
        max_tokens = self._max_tokens(self.config.max_output_tokens)
        if self.beta:
            return self.config.beta(self.id, max_tokens)
        return self.config.ga(self.id, max_tokens)

    # --- input audio ----------------------------------------------------------------------------
    def _decode_audio(self, data: Any, param: str) -> tuple[bytes, int]:
        if not isinstance(data, str):
            raise RealtimeError("invalid_value", "audio must be base64 text", param=param)
        if len(data) > self.settings.max_upload_bytes * 4 // 3 + 4:
            raise RealtimeError("invalid_value", "the audio is too large", param=param)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError("invalid_value", "audio is not valid base64", param=param) from None
        law, rate = FORMATS[self.config.input_format]
        pcm = g711.decode(raw, law) if law else raw[:len(raw) - len(raw) % 2]
        return pcm, rate

    async def _append(self, event: dict) -> None:
        pcm, rate = self._decode_audio(event.get("audio"), "audio")
        if not pcm:
            return
        self._input_ms += len(pcm) / 2 / rate * 1000
        if self.config.vad:
            self._uncommitted = True
            step = rate * FRAME_MS // 1000 * 2
            for start in range(0, len(pcm), step):
                self.microphone.push(pcm[start:start + step], rate)
            return
        if len(self._buffer) + len(pcm) > self.settings.max_audio_seconds * rate * 2:
            if not self._buffer_full:
                self._buffer_full = True
                raise RealtimeError("input_audio_buffer_full", f"the input audio buffer holds at most "
                                    f"{self.settings.max_audio_seconds:.0f} s: commit or clear it")
            return
        self._buffer += pcm

    async def _commit(self, event: dict) -> None:
        if self.config.vad:
            if not self._uncommitted:
                raise RealtimeError("input_audio_buffer_commit_empty", "no audio since the last turn to commit")
            self._uncommitted = False
            # The engine's own way to end a turn now: what was said is transcribed and answered, and the user
            # item arrives like any server-VAD turn (_on_item_added). The client stopped talking: the VAD hears
            # the silence after it, so the user counts as done and the reply may start.
            self.session.commit_user_turn(transcript_timeout=CUT_TRANSCRIPT_TIMEOUT_S)
            rate = FORMATS[self.config.input_format][1]
            silence = b"\0\0" * (rate * FRAME_MS // 1000)
            for _ in range((self.config.silence_ms + 100) // FRAME_MS + 1):
                self.microphone.push(silence, rate)
            return
        rate = FORMATS[self.config.input_format][1]
        pcm, self._buffer, self._buffer_full = bytes(self._buffer), bytearray(), False
        if len(pcm) / 2 / rate * 1000 < MIN_COMMIT_MS:
            raise RealtimeError("input_audio_buffer_commit_empty",
                                f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio")
        item_id, previous = new_id("item"), self._last_item()
        self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        await self._add_user_audio(item_id, previous, [(pcm, rate)], texts=[])

    async def _clear(self, event: dict) -> None:
        self._buffer, self._buffer_full, self._uncommitted = bytearray(), False, False
        if self.config.vad:
            self.session.clear_user_turn()
        self.send({"type": "input_audio_buffer.cleared"})

    async def _transcribe(self, pcm: bytes, rate: int) -> str:
        frame = rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)
        language = (self.config.transcription or {}).get("language")
        event = await self.session.stt.recognize(buffer=frame, language=language or NOT_GIVEN)
        return event.alternatives[0].text.strip() if event.alternatives else ""

    # --- items ------------------------------------------------------------------------------------
    def _last_item(self) -> str | None:
        return self._order[-1] if self._order else None

    def _add_item(self, item: Item, previous: str | None) -> None:
        position = len(self._order) if previous is None else \
            0 if previous == "root" else self._order.index(previous) + 1
        self._order.insert(position, item.id)
        self._items[item.id] = item
        self.send({"type": "conversation.item.created", "item": item.as_event(self.beta),
                   "previous_item_id": self._order[position - 1] if position else None})

    async def _add_user_audio(self, item_id: str, previous: str | None, audio: list[tuple[bytes, int]], *,
                              texts: list[str], role: str = "user") -> None:
        """A user item of recorded audio (a commit, or conversation.item.create): created, transcribed, then
        put in the chat context."""
        content = [{"type": "input_text", "text": t} for t in texts] + \
            [{"type": "input_audio", "transcript": None} for _ in audio]
        item = Item(id=item_id, role=role, content=content)
        self._add_item(item, previous)
        words = list(texts)
        for index, (pcm, rate) in enumerate(audio):
            content_index = len(texts) + index
            try:
                transcript = await self._transcribe(pcm, rate)
            except Exception as exc:  # noqa: BLE001 - a failed transcription must not end the session
                log.warning("transcription failed: %s", exc)
                self.send({"type": "conversation.item.input_audio_transcription.failed", "item_id": item_id,
                           "content_index": content_index,
                           "error": {"type": "transcription_error", "code": "stt_failed", "message": str(exc),
                                     "param": None}})
                continue
            words.append(transcript)
            if self.config.transcription is not None:
                item.content[content_index]["transcript"] = transcript
                self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                           "content_index": content_index, "transcript": transcript,
                           "usage": {"type": "duration", "seconds": round(len(pcm) / 2 / rate, 3)}})
        text = "\n".join(w for w in words if w)
        if text and item_id in self._items:  # (not deleted meanwhile)
            await self._insert_chat(item, llm.ChatMessage(id=item_id, role=role, content=[text]))

    async def _insert_chat(self, item: Item, message: llm.ChatMessage) -> None:
        """Into the agent's chat context, where the item stands in the conversation."""
        ctx = self.agent.chat_ctx.copy()
        position = self._order.index(item.id)
        anchor = next((self._items[i].chat_id for i in reversed(self._order[:position])
                       if self._items[i].chat_id and ctx.get_by_id(self._items[i].chat_id)), None)
        if anchor is None:
            index = next((i for i, it in enumerate(ctx.items)
                          if not (isinstance(it, llm.ChatMessage) and it.role in ("system", "developer"))),
                         len(ctx.items))
        else:
            index = ctx.index_by_id(anchor) + 1
        if index < len(ctx.items):  # in the middle: keep the context in time order
            before = ctx.items[index - 1].created_at if index else ctx.items[index].created_at - 1.0
            message.created_at = (before + ctx.items[index].created_at) / 2
        ctx.items.insert(index, message)
        await self.agent.update_chat_ctx(ctx)
        item.chat_id = message.id

    async def _item_create(self, event: dict) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise RealtimeError("missing_required_parameter", "conversation.item.create needs an \"item\"",
                                param="item")
        if raw.get("type", "message") != "message":
            raise RealtimeError("invalid_value", "only message items are served (no function calls: the local "
                                "models do not call tools)", param="item.type")
        role = raw.get("role")
        if role not in ("user", "assistant", "system"):
            raise RealtimeError("invalid_value", "role is user, assistant or system", param="item.role")
        item_id = raw.get("id") or new_id("item")
        if not isinstance(item_id, str) or len(item_id) > MAX_ITEM_ID or item_id in self._items or item_id == "root":
            raise RealtimeError("invalid_value", f"item ids are new text of at most {MAX_ITEM_ID} characters",
                                param="item.id")
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self._items:
            raise RealtimeError("item_not_found", f"no item {str(previous)[:80]!r} in the conversation",
                                param="previous_item_id")
        parts = raw.get("content")
        if not isinstance(parts, list) or not parts:
            raise RealtimeError("invalid_value", "an item needs a content list", param="item.content")
        texts: list[str] = []
        audio: list[tuple[bytes, int]] = []
        text_types = {"user": ("input_text",), "system": ("input_text",),
                      "assistant": ("output_text", "text", "output_audio", "audio")}[role]
        for index, part in enumerate(parts):
            param = f"item.content[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in text_types:
                text = part.get("text") if kind in ("input_text", "output_text", "text") else part.get("transcript")
                if not isinstance(text, str):
                    raise RealtimeError("invalid_value", "a text part needs \"text\" (an audio part of an assistant "
                                        "item, \"transcript\")", param=param)
                require_unicode(text, "text")
                texts.append(text)
            elif kind == "input_audio" and role == "user":
                audio.append(self._decode_audio(part.get("audio"), f"{param}.audio"))
            else:
                raise RealtimeError("invalid_value", f"content of type {str(kind)[:40]!r} is not served for "
                                    f"{role} items", param=f"{param}.type")
        if sum(len(t) for t in texts) > self.settings.max_text_chars:
            raise RealtimeError("invalid_value", f"an item's text may be at most {self.settings.max_text_chars} "
                                "characters", param="item.content")
        if audio:
            await self._add_user_audio(item_id, previous, audio, texts=texts)
            return
        content_type = {"user": "input_text", "system": "input_text", "assistant": "output_text"}[role]
        item = Item(id=item_id, role=role, content=[{"type": content_type, "text": t} for t in texts])
        self._add_item(item, previous)
        text = "\n".join(texts)
        if text.strip():
            await self._insert_chat(item, llm.ChatMessage(id=item_id, role=role, content=[text]))

    def _item(self, event: dict) -> Item:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or item_id not in self._items:
            raise RealtimeError("item_not_found", f"no item {str(item_id)[:80]!r} in the conversation",
                                param="item_id")
        return self._items[item_id]

    async def _item_delete(self, event: dict) -> None:
        item = self._item(event)
        if item.response is not None and not item.response.done:
            raise RealtimeError("invalid_value", "the item's response is still in progress: cancel it first",
                                param="item_id")
        await self._remove_chat(item.chat_id)
        self._order.remove(item.id)
        del self._items[item.id]
        self.send({"type": "conversation.item.deleted", "item_id": item.id})

    async def _remove_chat(self, chat_id: str | None) -> None:
        if chat_id is None:
            return
        ctx = self.agent.chat_ctx.copy()
        if ctx.get_by_id(chat_id) is not None:
            ctx.remove(chat_id)
            await self.agent.update_chat_ctx(ctx)

    async def _item_retrieve(self, event: dict) -> None:
        item = self._item(event)
        self.send({"type": "conversation.item.retrieved", "item": item.as_event(self.beta)})

    async def _item_truncate(self, event: dict) -> None:
        item = self._item(event)
        response = item.response
        if response is None or not response.audio_out:
            raise RealtimeError("invalid_value", "only an assistant item with audio can be truncated", param="item_id")
        if event.get("content_index", 0) != 0:
            raise RealtimeError("invalid_value", "the item has one content part (index 0)", param="content_index")
        end_ms = event.get("audio_end_ms")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            raise RealtimeError("invalid_value", "audio_end_ms is a whole number of milliseconds",
                                param="audio_end_ms")
        audio_ms = response.audio_seconds * 1000
        if end_ms > audio_ms + 1:
            raise RealtimeError("invalid_value", f"audio_end_ms ({end_ms}) is past the item's audio "
                                f"({audio_ms:.0f} ms)", param="audio_end_ms")
        response.truncate_ms = end_ms if response.truncate_ms is None else min(end_ms, response.truncate_ms)
        if not response.done:  # the client stopped playing it: no point going on
            response.cancel_reason = response.cancel_reason or "client_cancelled"
            await self._stop(response)
        if response.done:
            self._apply_truncation(response)
        self.send({"type": "conversation.item.truncated", "item_id": item.id, "content_index": 0,
                   "audio_end_ms": end_ms})

    def _apply_truncation(self, response: Response) -> None:
        """Keep, in the item and the chat context, only the words heard by ``audio_end_ms``."""
        heard = (response.truncate_ms or 0) / 1000
        kept_chars = max((length for at, length in response.timeline if at <= heard), default=0)
        kept = response.transcript[:kept_chars].strip()
        item = self._items.get(response.item_id)
        if item is None:
            return
        item.status = "incomplete"
        item.content[0]["transcript"] = kept
        message = self.agent.chat_ctx.get_by_id(item.chat_id) if item.chat_id else None
        if isinstance(message, llm.ChatMessage):
            if kept:
                # The same message object is in the agent's context and the session's history.
                message.content = [kept]
                message.interrupted = True
            else:
                self._spawn(self._remove_chat(item.chat_id))
                item.chat_id = None

    # --- responses --------------------------------------------------------------------------------
    async def _response_create(self, event: dict) -> None:
        if self._active is not None and not self._active.done:
            raise RealtimeError("conversation_already_has_active_response",
                                f"response {self._active.id} is still in progress: cancel it or wait for "
                                "response.done")
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise RealtimeError("invalid_value", "response must be an object", param="response")
        if params.get("conversation") not in (None, "auto"):
            raise RealtimeError("invalid_value", "responses outside the conversation are not served",
                                param="response.conversation")
        if params.get("input") is not None:
            raise RealtimeError("invalid_value", "custom response input is not served: the response reads the "
                                "conversation", param="response.input")
        config = self.config
        modalities = config.output_modalities
        for key in ("output_modalities", "modalities"):
            if params.get(key) is not None:
                modalities = parse_modalities(params[key], f"response.{key}")
        max_tokens = config.max_output_tokens
        for key in ("max_output_tokens", "max_response_output_tokens"):
            if params.get(key) is not None:
                max_tokens = parse_max_tokens(params[key], f"response.{key}")
        temperature = parse_temperature(params["temperature"], "response.temperature") \
            if params.get("temperature") is not None else None
        instructions = params.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str) or len(instructions) > self.settings.max_text_chars:
                raise RealtimeError("invalid_value", "instructions are text", param="response.instructions")
            require_unicode(instructions, "instructions")
        audio_out = ((params.get("audio") or {}).get("output") or {}) if isinstance(params.get("audio"), dict) else {}
        output_format = parse_format(audio_out["format"], "response.audio.output.format") \
            if audio_out.get("format") is not None else config.output_format
        voice = parse_voice(audio_out.get("voice") or params.get("voice") or config.voice, "response.voice")
        metadata = params.get("metadata") if isinstance(params.get("metadata"), dict) else None

        response = Response(id=new_id("resp"), item_id=new_id("item"), modalities=modalities,
                            output_format=output_format, voice=voice, max_output_tokens=max_tokens, requested=True,
                            metadata=metadata)
        await self._override(response, instructions=instructions, temperature=temperature)
        self._active = response
        self._announce(response)
        self._requested = response
        try:
            handle = self.session.generate_reply()
        except RuntimeError as exc:
            response.error = {"type": "server_error", "code": "response_failed", "message": str(exc)}
            self._finish(response)
            return
        finally:
            self._requested = None
        if response.handle is None:  # (the session announces every speech; in case it did not)
            self._track(handle, response)

    async def _override(self, response: Response, *, instructions: str | None, temperature: float | None) -> None:
        """What a response.create sets for this response only, undone when it is done."""
        config = self.config
        model = self.session.llm
        if isinstance(model, GemmaLLM):
            model.update_options(max_tokens=self._max_tokens(response.max_output_tokens),
                                 temperature=temperature if temperature is not None else config.temperature)
            response.restore.append(lambda: model.update_options(
                max_tokens=self._max_tokens(self.config.max_output_tokens), temperature=self.config.temperature))
        if instructions is not None:
            await self.agent.update_instructions(instructions or self.settings.voice_instructions)
            response.restore.append(lambda: self._spawn(self.agent.update_instructions(self.config.instructions)))
        if response.voice != config.voice:
            session_tts(self.session).update_options(voice=self._engine_voice(response.voice))
            response.restore.append(lambda: session_tts(self.session).update_options(
                voice=self._engine_voice(self.config.voice)))
        self.speaker.rate = FORMATS[response.output_format][1]
        response.restore.append(lambda: setattr(self.speaker, "rate", FORMATS[self.config.output_format][1]))
        self.session.output.set_audio_enabled(response.audio_out)
        response.restore.append(lambda: self.session.output.set_audio_enabled(self.config.audio_out))

    async def _response_cancel(self, event: dict) -> None:
        response = self._active
        if response is None or response.done:
            raise RealtimeError("response_cancel_not_active", "there is no response in progress to cancel")
        wanted = event.get("response_id")
        if wanted is not None and wanted != response.id:
            raise RealtimeError("invalid_value", f"response {str(wanted)[:80]!r} is not in progress",
                                param="response_id")
        response.cancel_reason = response.cancel_reason or "client_cancelled"
        await self._stop(response)

    async def _stop(self, response: Response) -> None:
        """Interrupt the response's speech and wait (a bounded while) until it is filed."""
        handle = response.handle
        if handle is None:
            self._finish(response)
            return
        if not handle.done():
            handle.interrupt(force=True)

            async def settled() -> None:
                await handle

            try:
                await asyncio.wait_for(settled(), INTERRUPT_WAIT_S)
            except asyncio.TimeoutError:
                pass
        self._finish(response)

    def _track(self, handle: SpeechHandle, response: Response) -> None:
        response.handle = handle
        self._responses[handle.id] = response
        handle.add_done_callback(lambda _handle: self._finish(response))

    def _announce(self, response: Response) -> None:
        response.announced = True
        if response.encoder is None:
            response.encoder = AudioEncoder(response.output_format)
        self.send({"type": "response.created", "response": self._response_object(response, "in_progress")})

    def _start_item(self, response: Response) -> None:
        """The response's assistant message: added to the output and the conversation, its one part opened."""
        response.item_started = True
        kind = "output_audio" if response.audio_out else "output_text"
        item = Item(id=response.item_id, role="assistant", status="in_progress", response=response,
                    content=[{"type": kind, "transcript": ""} if response.audio_out else {"type": kind, "text": ""}])
        self.send({"type": "response.output_item.added", "response_id": response.id, "output_index": 0,
                   "item": dict(item.as_event(self.beta), content=[])})
        self._add_item(item, self._last_item())
        part = {"type": "audio", "transcript": ""} if response.audio_out else {"type": "text", "text": ""}
        self.send({"type": "response.content_part.added", "response_id": response.id, "item_id": item.id,
                   "output_index": 0, "content_index": 0, "part": part})

    def _output_response(self) -> Response | None:
        """The response whose reply is playing now; announced to the client on its first output."""
        handle = self.session.current_speech
        response = self._responses.get(handle.id) if handle is not None else None
        if response is None or response.cancelling:
            return None
        if not response.announced:
            previous = self._active
            if previous is not None and not previous.done and previous.handle is not None and previous.handle.done():
                self._finish(previous)  # (its speech ended and its callback is still to come)
            self._active = response
            self._announce(response)
        if not response.item_started:
            self._start_item(response)
        return response

    def reply_audio(self, frame: rtc.AudioFrame, segment: PlayedSegment) -> None:
        response = self._output_response()
        if response is None or not response.audio_out or response.encoder is None:
            return
        if not response.segments or response.segments[-1] is not segment:
            response.segments.append(segment)
        response.audio_seconds += frame.duration
        data = response.encoder.encode(frame)
        if data:
            self.send({"type": "response.output_audio.delta", "response_id": response.id,
                       "item_id": response.item_id, "output_index": 0, "content_index": 0,
                       "delta": base64.b64encode(data).decode()})

    def reply_text(self, text: str) -> None:
        response = self._output_response()
        if response is not None and text:
            self._send_text(response, text)

    def _send_text(self, response: Response, text: str) -> None:
        response.transcript += text
        heard = sum(self.speaker.heard(segment) for segment in response.segments)
        response.timeline.append((heard, len(response.transcript)))
        kind = "response.output_audio_transcript.delta" if response.audio_out else "response.output_text.delta"
        self.send({"type": kind, "response_id": response.id, "item_id": response.item_id, "output_index": 0,
                   "content_index": 0, "delta": text})

    def _finish(self, response: Response) -> None:
        """The response's last events: its part, its item and ``response.done``."""
        if response.done:
            return
        handle = response.handle
        if handle is not None:
            self._responses.pop(handle.id, None)
        if not response.announced:
            return  # the engine prepared it and dropped it (or had nothing to say): the client never knew
        response.done = True
        if response.error is not None:
            status, details = "failed", {"type": "failed", "error": response.error}
        elif response.cancel_reason is not None or (handle is not None and handle.interrupted):
            reason = response.cancel_reason or "turn_detected"
            status, details = "cancelled", {"type": "cancelled", "reason": reason}
        else:
            status, details = "completed", None
        item = self._items.get(response.item_id)
        if response.item_started and item is not None:
            filed = ""
            for chat_item in (handle.chat_items if handle is not None else []):
                if isinstance(chat_item, llm.ChatMessage) and chat_item.role == "assistant":
                    item.chat_id, filed = chat_item.id, chat_item.text_content or ""
            if status == "completed" and filed.startswith(response.transcript) and filed != response.transcript:
                # The last words can reach the transcript output after the reply was filed: send them now.
                self._send_text(response, filed[len(response.transcript):])
            item.status = "completed" if status == "completed" else "incomplete"
            ids = {"response_id": response.id, "item_id": item.id, "output_index": 0, "content_index": 0}
            if response.audio_out:
                item.content[0]["transcript"] = response.transcript
                self.send({"type": "response.output_audio.done", **ids})
                self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": response.transcript})
                part = {"type": "audio", "transcript": response.transcript}
            else:
                item.content[0]["text"] = response.transcript
                self.send({"type": "response.output_text.done", **ids, "text": response.transcript})
                part = {"type": "text", "text": response.transcript}
            self.send({"type": "response.content_part.done", **ids, "part": part})
            if response.truncate_ms is not None:
                self._apply_truncation(response)
            self.send({"type": "response.output_item.done", "response_id": response.id, "output_index": 0,
                       "item": item.as_event(self.beta)})
        self.send({"type": "response.done",
                   "response": self._response_object(response, status, details=details, item=item)})
        for undo in response.restore:
            undo()
        if self._active is response:
            self._active = None
            self.session.output.set_audio_enabled(self.config.audio_out)
            self.speaker.rate = FORMATS[self.config.output_format][1]

    def _response_object(self, response: Response, status: str, *, details: dict | None = None,
                         item: Item | None = None) -> dict:
        usage = None
        if status != "in_progress":
            u = response.usage
            usage = {"total_tokens": u["input_tokens"] + u["output_tokens"], "input_tokens": u["input_tokens"],
                     "output_tokens": u["output_tokens"],
                     "input_token_details": {"text_tokens": u["input_tokens"], "audio_tokens": 0,
                                             "cached_tokens": u["cached_tokens"], "image_tokens": 0},
                     "output_token_details": {"text_tokens": u["output_tokens"], "audio_tokens": 0}}
        body: dict[str, Any] = {
            "id": response.id, "object": "realtime.response", "status": status, "status_details": details,
            "output": [item.as_event(self.beta)] if item is not None and response.item_started else [],
            "conversation_id": self.conversation_id, "usage": usage, "metadata": response.metadata,
            "max_output_tokens": self._max_tokens(response.max_output_tokens),
        }
        if self.beta:
            body["modalities"] = ["text", "audio"] if response.audio_out else ["text"]
            body["output_audio_format"] = {v: k for k, v in BETA_FORMATS.items()}[response.output_format]
            body["voice"] = response.voice
        else:
            body["output_modalities"] = list(response.modalities)
            body["audio"] = {"output": {"format": format_object(response.output_format), "voice": response.voice}}
        return body

    # --- what the session tells us --------------------------------------------------------------
    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking" and not self._speaking:
            self._speaking = True
            self._speech_item = new_id("item")
            self._speech_started_ms = self._input_ms
            self.send({"type": "input_audio_buffer.speech_started", "item_id": self._speech_item,
                       "audio_start_ms": int(self._input_ms)})
        elif ev.new_state != "speaking" and self._speaking:
            self._speaking = False
            item_id, self._speech_item = self._speech_item or new_id("item"), None
            self._stopped_item = (item_id, (self._input_ms - self._speech_started_ms) / 1000)
            self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item_id,
                       "audio_end_ms": int(self._input_ms)})

    def _on_speech_created(self, ev: SpeechCreatedEvent) -> None:
        requested = self._requested
        if requested is not None and requested.handle is None:
            self._track(ev.speech_handle, requested)
            return
        config = self.config
        self._track(ev.speech_handle, Response(
            id=new_id("resp"), item_id=new_id("item"), modalities=config.output_modalities,
            output_format=config.output_format, voice=config.voice, max_output_tokens=config.max_output_tokens,
            requested=False))

    def _on_item_added(self, ev: ConversationItemAddedEvent) -> None:
        """A user turn the engine heard (server VAD, or a commit with it on): the committed user item."""
        message = ev.item
        if not isinstance(message, llm.ChatMessage) or message.role != "user" or message.id in self._items:
            return
        if any(item.chat_id == message.id for item in self._items.values()):
            return
        if self._stopped_item is not None and not self._speaking:
            item_id, seconds = self._stopped_item
        else:  # a turn cut while the user still speaks
            item_id, seconds = new_id("item"), (self._input_ms - self._speech_started_ms) / 1000
        self._stopped_item = None
        self._uncommitted = False
        previous = self._last_item()
        self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        text = message.text_content or ""
        transcribed = self.config.transcription is not None
        item = Item(id=item_id, role="user", chat_id=message.id, content=[{"type": "input_audio", "transcript": None}])
        self._add_item(item, previous)
        item.content[0]["transcript"] = text if transcribed else None
        if transcribed:
            self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                       "content_index": 0, "transcript": text,
                       "usage": {"type": "duration", "seconds": round(max(seconds, 0.0), 3)}})
        # The engine files the user's words once their reply is scheduled: that reply is the response to them.
        answer = [r for r in self._responses.values() if not r.announced and not r.requested
                  and r.handle is not None and r.handle.scheduled and not r.handle.done()]
        if answer and (self._active is None or self._active.done):
            self._active = answer[-1]
            self._announce(answer[-1])

    def _on_llm_metrics(self, metrics: LLMMetrics) -> None:
        if not isinstance(metrics, LLMMetrics):
            return
        response = next((r for r in [*self._responses.values(), self._active]
                         if r is not None and r.handle is not None and r.handle.id == metrics.speech_id), None)
        if response is not None:
            response.usage["input_tokens"] += metrics.prompt_tokens
            response.usage["output_tokens"] += metrics.completion_tokens
            response.usage["cached_tokens"] += metrics.prompt_cached_tokens

    def _on_error(self, ev: ErrorEvent) -> None:
        if getattr(ev.error, "recoverable", True):
            return  # the framework retries it
        cause = getattr(ev.error, "error", ev.error)
        body = getattr(cause, "body", None)
        code = body.get("code", "turn_failed") if isinstance(body, dict) else "turn_failed"
        if self._active is not None and not self._active.done:
            self._active.error = {"type": "server_error", "code": code, "message": str(cause)}
        self.error(RealtimeError(code, f"the turn failed: {cause}", kind="server_error"))

    def _on_close(self, ev: CloseEvent) -> None:
        if not self._closed and ev.error is not None:
            self.error(RealtimeError("session_failed", f"the voice session failed: {ev.error}", kind="server_error"))
            asyncio.get_running_loop().create_task(self.ws.close(code=1011))


def wants_beta(ws: WebSocket) -> bool:
    """A beta client: ``OpenAI-Beta: realtime=v1`` (or the browser's ``openai-beta.realtime-v1`` subprotocol)."""
    header = ws.headers.get("openai-beta", "")
    offered = ws.scope.get("subprotocols") or ()
    return "realtime=v1" in header.replace(" ", "") or "openai-beta.realtime-v1" in offered


