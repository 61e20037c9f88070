"""``WS /v1/conversation/ws``: the WebSocket as one more transport of the voice engine.

The conversation itself is the same ``GemmaVoiceAgent`` in the same ``AgentSession`` that answers
a LiveKit room, reached through the engine's door (``app.engine.VoiceEngine``). This module only moves
audio and events: microphone PCM from binary frames into the engine, reply audio out as binary frames on
the client's playback clock as the server estimates it (``SocketSpeaker``), the reply's words in step with
its audio, and the session's events as the protocol's JSON events (``app.voice.socket_protocol``; README,
"The voice WebSocket").

Turns the protocol has beyond an open microphone map onto the same session: a typed turn, a whole
recorded utterance (``audio``) and push-to-talk (``vad: false`` then ``end_turn``) are transcribed
with the session's own STT and answered with ``generate_reply``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from app.audio.codec import WHISPER_RATE, AudioError, decode_audio, float_to_pcm16
from app.metrics import VOICE_TO_VOICE
from app.engine import (
    AudioFrame,
    ConversationItemAddedEvent,
    ListenerPlayout,
    SpeechCreatedEvent,
    SpeechHandle,
    UserInputTranscribedEvent,
    UserStateChangedEvent,
)
from app.services.container import Services
from app.voice import socket_protocol as proto
from app.voice.socket_io import FrameError
from app.voice.socket_session import VoiceSocketSession

log = logging.getLogger("app.voice")


class SocketSpeaker(ListenerPlayout):
    """Reply audio to the client, which plays it in real time: the session hears it as still playing
    until the client has (so talking over a fully sent reply interrupts it)."""

    def __init__(self, conversation: SocketConversation, sample_rate: int) -> None:
        super().__init__(label="websocket-speaker", sample_rate=sample_rate)
        self._conversation = conversation

    async def _deliver(self, frame: AudioFrame) -> None:
        self._conversation.reply_audio(bytes(frame.data))

    def _cleared(self) -> None:
        self._conversation.reply_stopped()

    def _paused(self) -> None:
        self._conversation.send(proto.PlaybackEvent(state="paused"))

    def _resumed(self) -> None:
        self._conversation.send(proto.PlaybackEvent(state="resumed"))


@dataclass
class Reply:
    """One of the agent's replies, as far as the client saw it."""

    handle: SpeechHandle
    turn: int
    source: str
    created: float = field(default_factory=time.perf_counter)
    speech_end: float | None = None  # push-to-talk and recorded turns: when the user finished
    first_audio: float | None = None
    audio_bytes: int = 0
    text: str = ""
    interrupt_sent: bool = False
    assistant_metrics: dict[str, Any] = field(default_factory=dict)  # the framework's, once filed

    @property
    def started(self) -> bool:
        return self.first_audio is not None or bool(self.text)


class SocketConversation(VoiceSocketSession):
    kind = "websocket"

    def __init__(self, ws: WebSocket, services: Services):
        self.input_sample_rate = 16000
        self.vad = True
        self.language: str | None = None
        self._ptt = bytearray()
        self._turns = 0
        self._reply: Reply | None = None
        self._next_source = "voice"
        self._next_speech_end: float | None = None
        self._interrupt_reason = "barge_in"
        self._user_metrics: dict[str, Any] = {}
        super().__init__(ws, services, session_id=uuid.uuid4().hex[:12],
                         speaker=SocketSpeaker(self, services.tts.sample_rate))
        self.engine.on_turn_cut(self._turn_cut)

    def session_handlers(self) -> dict[str, Callable[[Any], None]]:
        return {"user_state_changed": self._on_user_state, "user_input_transcribed": self._on_transcribed,
                "speech_created": self._on_speech_created, "conversation_item_added": self._on_item}

    # --- the protocol -------------------------------------------------------------------------
    def send(self, event: proto.ServerEvent) -> None:
        """Every JSON event goes out through the protocol's models (``app.voice.socket_protocol``)."""
        self.send_json(proto.event_json(event))

    def refuse(self, exc: Exception, raw: str | None = None, *, server: bool = False) -> None:
        self.send(proto.ErrorEvent(code=getattr(exc, "code", "server_error"), message=str(exc)))

    async def started(self) -> None:
        self.send(proto.ReadyEvent(session_id=self.id, input_sample_rate=self.input_sample_rate,
                                   output_sample_rate=self.services.tts.sample_rate, vad=self.vad,
                                   models_ready=self.services.ready))

    def parse(self, raw: str) -> tuple[Any, Callable[[Any], Any]]:
        """The frame through the protocol's models, which refuse it (``FrameError``) with the code the client gets."""
        frame = proto.parse_client_message(raw, max_text_chars=self.settings.max_text_chars)
        return frame, {proto.ConfigMessage: self._on_config, proto.TextMessage: self._on_typed,
                       proto.EndTurnMessage: self._on_end_turn, proto.InterruptMessage: self._on_interrupt,
                       proto.AudioMessage: self._on_utterance}[type(frame)]

    async def _on_config(self, frame: proto.ConfigMessage) -> None:
        given = frame.model_fields_set
        rate = frame.input_sample_rate if "input_sample_rate" in given else self.input_sample_rate
        instructions = frame.instructions or self.settings.voice_instructions
        vad = frame.vad if "vad" in given else self.vad
        self.input_sample_rate = rate
        if vad != self.vad:
            self.vad = vad
            self._ptt.clear()
            # Push-to-talk: the session hears nothing until the user lets go (see _on_end_turn).
            self.engine.listen(vad)
        self.language = frame.language or None
        await self.engine.configure(instructions=instructions, language=self.language or "",
                                    voice=frame.voice or self.settings.tts_default_voice or "")
        self.send(proto.ConfigEvent(input_sample_rate=rate, vad=vad, output_sample_rate=self.services.tts.sample_rate))

    async def _on_typed(self, frame: proto.TextMessage) -> None:
        await self._answer(frame.text.strip(), source="text")

    async def _on_end_turn(self, _frame: proto.EndTurnMessage) -> None:
        audio, self._ptt = bytes(self._ptt), bytearray()
        if not audio:
            raise FrameError("no_audio", "end_turn with no audio since the last turn")
        await self._transcribe_and_answer(audio, self.input_sample_rate, source="push_to_talk")

    async def _on_interrupt(self, _frame: proto.InterruptMessage) -> None:
        await self._interrupt("client")

    async def _on_utterance(self, frame: proto.AudioMessage) -> None:
        encoded = self.decode_base64(frame.data)
        try:
            samples = await asyncio.to_thread(decode_audio, encoded, max_seconds=self.settings.max_audio_seconds)
        except AudioError as exc:
            raise FrameError(exc.code, str(exc)) from None
        await self._transcribe_and_answer(float_to_pcm16(samples), WHISPER_RATE, source="recorded")

    def on_binary(self, pcm: bytes) -> None:
        pcm = pcm[:len(pcm) - len(pcm) % 2]
        if not pcm:
            return
        if self.vad:
            self.engine.push_audio(pcm, self.input_sample_rate)
        elif len(self._ptt) + len(pcm) <= self.settings.max_audio_seconds * self.input_sample_rate * 2:
            self._ptt += pcm

    # --- turns the client closes itself ---------------------------------------------------------
    async def _transcribe_and_answer(self, pcm: bytes, rate: int, *, source: str) -> None:
        speech_end = time.perf_counter()
        await self._interrupt("new_turn")
        try:
            text, language = await self.transcribe(pcm, rate, self.language)
        except Exception as exc:  # noqa: BLE001 - a failed turn must not end the session
            log.warning("transcription failed: %s", exc)
            self.send(proto.ErrorEvent(code="stt_failed", message=f"the transcription failed: {exc}"))
            return
        self.send(proto.TranscriptEvent(text=text, final=True, language=language))
        if any(ch.isalnum() for ch in text):
            await self._answer(text, source=source, speech_end=speech_end)

    async def _answer(self, text: str, *, source: str, speech_end: float | None = None) -> None:
        await self._interrupt("new_turn")
        self._next_source, self._next_speech_end = source, speech_end
        self.engine.generate_reply(user_input=text)

    async def _interrupt(self, reason: str) -> None:
        reply = self._reply
        if reply is None or reply.handle.done():
            return
        self._interrupt_reason = reason
        if reply.started or reason == "client":
            self._send_interrupted(reply)
        await self.engine.interrupt()

    def _send_interrupted(self, reply: Reply) -> None:
        if not reply.interrupt_sent:
            reply.interrupt_sent = True
            self.send(proto.InterruptedEvent(reason=self._interrupt_reason))

    def _turn_cut(self, seconds: float) -> None:
        self.send(proto.TurnCutEvent(max_seconds=seconds,
                                     message=f"you spoke for over {seconds:.0f} s without a pause: answering what was said so far"))

    # --- what the session tells us --------------------------------------------------------------
    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking" and ev.old_state != "speaking":
            self.send(proto.VadEvent(state="speech_start"))
        elif ev.old_state == "speaking" and ev.new_state != "speaking":
            self.send(proto.VadEvent(state="speech_end"))

    def _on_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if ev.is_final and ev.transcript.strip():
            self.send(proto.TranscriptEvent(text=ev.transcript.strip(), final=True, language=ev.language))

    def _on_speech_created(self, ev: SpeechCreatedEvent) -> None:
        self._turns += 1
        self._interrupt_reason = "barge_in"
        reply = Reply(handle=ev.speech_handle, turn=self._turns,
                      source=self._next_source if ev.user_initiated else "voice",
                      speech_end=self._next_speech_end if ev.user_initiated else None)
        self._next_source, self._next_speech_end = "voice", None
        self._reply = reply
        ev.speech_handle.add_done_callback(lambda handle: self._reply_done(reply))

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if getattr(item, "role", None) == "user":
            self._user_metrics = dict(item.metrics or {})
        elif getattr(item, "role", None) == "assistant" and self._reply is not None:
            self._reply.assistant_metrics = dict(item.metrics or {})

    # --- the reply, as the client gets it -------------------------------------------------------
    def reply_audio(self, pcm: bytes) -> None:
        reply = self._reply
        if reply is not None:
            if reply.interrupt_sent:
                return  # the client was told to stop: nothing more of this reply
            if reply.first_audio is None:
                reply.first_audio = time.perf_counter()
            reply.audio_bytes += len(pcm)
        self.send_bytes(pcm)

    def reply_text(self, text: str) -> None:
        reply = self._reply
        if reply is not None:
            if reply.interrupt_sent:
                return
            reply.text += text
        self.send(proto.TextEvent(delta=text))

    def reply_stopped(self) -> None:
        """The session cut the reply while the client was playing it: the client stops at once."""
        if self._reply is not None:
            self._send_interrupted(self._reply)

    def _reply_done(self, reply: Reply) -> None:
        if self._reply is reply:
            self._reply = None
        if reply.handle.interrupted:
            if reply.started:
                self._send_interrupted(reply)
            return
        if not reply.started:
            return  # a reply prepared ahead and dropped, or one with nothing to say
        self.send(proto.ResponseEndEvent(text=reply.text.strip()))
        self.send(proto.MetricsEvent.model_validate(self._metrics(reply)))

    def _metrics(self, reply: Reply) -> dict[str, Any]:
        assistant = reply.assistant_metrics

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 1)

        metrics: dict[str, Any] = {"type": "metrics", "turn": reply.turn, "source": reply.source,
                                   "llm_first_token_ms": ms(assistant.get("llm_node_ttft")),
                                   "first_sentence_ms": ms(assistant.get("llm_node_ttfs")),
                                   "tts_first_audio_ms": ms(assistant.get("tts_node_ttfb")),
                                   "reply_first_audio_ms": ms(reply.first_audio - reply.created) if reply.first_audio else None,
                                   "reply_audio_seconds": round(reply.audio_bytes / 2 / self.services.tts.sample_rate, 3)}
        voice_to_voice = assistant.get("e2e_latency")
        if reply.source == "voice":
            metrics["stt_ms"] = ms(self._user_metrics.get("transcription_delay"))
            metrics["endpointing_ms"] = ms(self._user_metrics.get("end_of_turn_delay"))
        elif reply.speech_end is not None and reply.first_audio is not None:
            voice_to_voice = reply.first_audio - reply.speech_end
        if voice_to_voice is not None and reply.source != "text":
            metrics["voice_to_voice_ms"] = ms(voice_to_voice)
            VOICE_TO_VOICE.observe(voice_to_voice)
        return metrics
