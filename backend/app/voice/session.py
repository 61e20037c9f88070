"""The real-time voice session behind ``WS /v1/conversation/ws``.

Microphone PCM -> silero VAD -> Whisper -> streamed LLM reply -> sentence-by-sentence TTS -> PCM back.

Latency: Whisper starts on the utterance as soon as the VAD sees the first silent windows, while the
silence is still being confirmed, so endpointing and transcription overlap. If the user speaks again,
that guess is thrown away. Barge-in: speech during a reply cancels it at once; the history keeps only
what the user had time to hear.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.audio.codec import WHISPER_RATE, AudioError, decode_audio, float_to_pcm16, pcm16_to_float, resample_pcm
from app.audio.vad import load_vad
from app.metrics import VOICE_TO_VOICE
from app.services.base import ServiceError
from app.services.container import Services
from app.services.llm import ChatMessage, GenerationParams
from app.services.whisper import Transcription
from app.voice.reply import AudioChunk, SentenceSpoken, SpokenReply, TextDelta

log = logging.getLogger("app.voice")

# Start transcribing after this much trailing silence (the VAD still waits its full min_silence to end the turn).
# Earlier than ~150 ms cuts off quiet final consonants ("France" heard as "friends").
SPECULATE_AFTER_S = 0.15
ALLOWED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class FrameError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class SessionConfig:
    instructions: str
    voice: str | None = None
    language: str | None = None
    input_sample_rate: int = 16000
    vad: bool = True


@dataclass
class UserTurn:
    """One user turn on its way to a reply: audio to transcribe (maybe already started) or typed text."""

    text: str | None = None
    audio: bytes | None = None  # PCM at the session's input rate
    speculation: asyncio.Task | None = None
    speech_end: float | None = None  # wall time the user stopped speaking
    endpointing_s: float | None = None
    source: str = "voice"
    transcribed: bool = False
    timings: dict[str, Any] = field(default_factory=dict)


class VoiceSession:
    def __init__(self, ws: WebSocket, services: Services):
        self.ws = ws
        self.services = services
        self.settings = services.settings
        self.id = uuid.uuid4().hex[:12]
        self.config = SessionConfig(instructions=self.settings.voice_instructions)
        self.history: list[ChatMessage] = []
        self._send_lock = asyncio.Lock()
        self._vad_stream = None
        self._vad_task: asyncio.Task | None = None
        self._utterance = bytearray()
        self._speculation: asyncio.Task | None = None
        self._ptt = bytearray()
        self._turn_task: asyncio.Task | None = None
        self._turn: UserTurn | None = None
        self._reply: SpokenReply | None = None
        self._reply_audio_started: float | None = None
        self._turns = 0
        self.closed = False

    # --- sending ----------------------------------------------------------------------------
    async def send_json(self, payload: dict) -> None:
        if self.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(payload, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def send_audio(self, pcm: bytes) -> None:
        if self.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_bytes(pcm)
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        self._open_vad()
        await self.send_json({"type": "ready", "session_id": self.id,
                              "input_sample_rate": self.config.input_sample_rate,
                              "output_sample_rate": self.services.tts.sample_rate,
                              "vad": self.config.vad, "models_ready": self.services.ready})
        try:
            while not self.closed:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    self._on_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self._on_text_frame(message["text"])
        except WebSocketDisconnect:
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop every piece of work this session started: no generation or task outlives it."""
        self.closed = True
        for task in (self._turn_task, self._speculation, self._vad_task):
            if task and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (self._turn_task, self._speculation, self._vad_task) if t),
                             return_exceptions=True)
        if self._vad_stream is not None:
            await self._vad_stream.aclose()
            self._vad_stream = None
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close()
            except (RuntimeError, WebSocketDisconnect):
                pass

    # --- client frames ----------------------------------------------------------------------
    async def _on_text_frame(self, raw: str) -> None:
        try:
            try:
                frame = json.loads(raw)
            except json.JSONDecodeError:
                raise FrameError("bad_frame", "text frames must be JSON objects with a \"type\"") from None
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                raise FrameError("bad_frame", "text frames must be JSON objects with a \"type\"")
            handler = {"config": self._on_config, "text": self._on_typed, "end_turn": self._on_end_turn,
                       "interrupt": self._on_interrupt, "audio": self._on_utterance}.get(frame["type"])
            if handler is None:
                raise FrameError("unknown_type", f"unknown frame type {frame['type']!r}")
            await handler(frame)
        except FrameError as exc:
            await self.send_error(exc.code, str(exc))

    async def _on_config(self, frame: dict) -> None:
        rate = frame.get("input_sample_rate", self.config.input_sample_rate)
        if rate not in ALLOWED_RATES:
            raise FrameError("bad_config", f"input_sample_rate must be one of {ALLOWED_RATES}")
        instructions = frame.get("instructions") or self.settings.voice_instructions
        if not isinstance(instructions, str) or len(instructions) > self.settings.max_text_chars:
            raise FrameError("bad_config", f"instructions must be text of at most {self.settings.max_text_chars} chars")
        vad = frame.get("vad", self.config.vad)
        if not isinstance(vad, bool):
            raise FrameError("bad_config", "vad must be true or false")
        reopen = rate != self.config.input_sample_rate or vad != self.config.vad
        self.config = SessionConfig(instructions=instructions, voice=frame.get("voice") or None,
                                    language=frame.get("language") or None, input_sample_rate=rate, vad=vad)
        if reopen:
            await self._close_vad()
            self._open_vad()
        await self.send_json({"type": "config", "input_sample_rate": rate, "vad": vad,
                              "output_sample_rate": self.services.tts.sample_rate})

    async def _on_typed(self, frame: dict) -> None:
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            raise FrameError("empty_text", "a text turn needs non-empty \"text\"")
        if len(text) > self.settings.max_text_chars:
            raise FrameError("text_too_long", f"text turns may be at most {self.settings.max_text_chars} characters")
        await self._start_turn(UserTurn(text=text.strip(), source="text"))

    async def _on_end_turn(self, _frame: dict) -> None:
        audio, self._ptt = bytes(self._ptt), bytearray()
        if not audio:
            raise FrameError("no_audio", "end_turn with no audio since the last turn")
        await self._start_turn(UserTurn(audio=audio, speech_end=time.perf_counter(), source="push_to_talk"))

    async def _on_interrupt(self, _frame: dict) -> None:
        await self._interrupt()

    async def _on_utterance(self, frame: dict) -> None:
        data = frame.get("data")
        if not isinstance(data, str) or not data:
            raise FrameError("bad_frame", "an audio frame needs base64 \"data\"")
        if len(data) > self.settings.max_upload_bytes * 4 // 3 + 4:
            raise FrameError("audio_too_large", "the recorded utterance is too large")
        try:
            encoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise FrameError("bad_frame", "audio \"data\" is not valid base64") from None
        try:
            samples = await asyncio.to_thread(decode_audio, encoded, max_seconds=self.settings.max_audio_seconds)
        except AudioError as exc:
            raise FrameError(exc.code, str(exc)) from None
        pcm = float_to_pcm16(samples)
        await self._start_turn(UserTurn(audio=pcm, speech_end=time.perf_counter(), source="recorded",
                                        timings={"input_rate": WHISPER_RATE}))

    def _on_audio(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            pcm = pcm[:-1]
        if not pcm:
            return
        if not self.config.vad:
            limit = int(self.settings.max_audio_seconds * self.config.input_sample_rate * 2)
            if len(self._ptt) + len(pcm) <= limit:
                self._ptt += pcm
            return
        from livekit import rtc

        if self._vad_stream is not None:
            self._vad_stream.push_frame(rtc.AudioFrame(pcm, self.config.input_sample_rate, 1, len(pcm) // 2))

    # --- voice activity ---------------------------------------------------------------------
    def _open_vad(self) -> None:
        if not self.config.vad:
            return
        self._vad_stream = load_vad(self.settings).stream()
        self._vad_task = asyncio.create_task(self._vad_loop(self._vad_stream), name=f"vad-{self.id}")

    async def _close_vad(self) -> None:
        if self._vad_task:
            self._vad_task.cancel()
            await asyncio.gather(self._vad_task, return_exceptions=True)
            self._vad_task = None
        if self._vad_stream is not None:
            await self._vad_stream.aclose()
            self._vad_stream = None

    async def _vad_loop(self, stream) -> None:
        from livekit.agents.vad import VADEventType

        async for ev in stream:
            if ev.type == VADEventType.START_OF_SPEECH:
                self._drop_speculation()
                await self.send_json({"type": "vad", "state": "speech_start"})
                # A turn cut off before its words were understood: its audio joins this utterance.
                carried = await self._interrupt(reason="barge_in")
                self._utterance = bytearray(carried) + (bytearray(ev.frames[0].data) if ev.frames else bytearray())
            elif ev.type == VADEventType.INFERENCE_DONE and ev.speaking:
                for frame in ev.frames:
                    self._utterance += bytes(frame.data)
                if ev.raw_accumulated_silence == 0:
                    self._drop_speculation()  # speech resumed: the guess is stale
                elif ev.raw_accumulated_silence >= SPECULATE_AFTER_S and self._speculation is None:
                    self._speculation = asyncio.create_task(self._transcribe(bytes(self._utterance)))
            elif ev.type == VADEventType.END_OF_SPEECH:
                now = time.perf_counter()
                audio = bytes(self._utterance)
                speculation, self._speculation = self._speculation, None
                self._utterance = bytearray()
                await self.send_json({"type": "vad", "state": "speech_end"})
                await self._start_turn(UserTurn(audio=audio, speculation=speculation,
                                                speech_end=now - ev.silence_duration,
                                                endpointing_s=ev.silence_duration))

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.cancel()
            self._speculation = None

    async def _transcribe(self, pcm: bytes, rate: int | None = None) -> Transcription:
        rate = rate or self.config.input_sample_rate
        if rate != WHISPER_RATE:
            pcm = resample_pcm(pcm, rate, WHISPER_RATE)
        return await self.services.stt.transcribe(pcm16_to_float(pcm), language=self.config.language)

    # --- turns ------------------------------------------------------------------------------
    async def _start_turn(self, turn: UserTurn) -> None:
        await self._interrupt(reason="new_turn")
        self._turn = turn
        self._turn_task = asyncio.create_task(self._run_turn(turn), name=f"turn-{self.id}")

    async def _interrupt(self, reason: str = "client") -> bytes:
        """Cancel the turn in progress. Returns its audio if it was cut off before being transcribed."""
        task, turn = self._turn_task, self._turn
        if task is None or task.done():
            return b""
        replying = self._reply is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if replying or reason == "client":
            await self.send_json({"type": "interrupted", "reason": reason})
        if turn is not None and turn.audio and not turn.transcribed and turn.source == "voice":
            return turn.audio
        return b""

    def _add(self, role: str, text: str) -> None:
        if self.history and self.history[-1].role == role:
            self.history[-1] = ChatMessage(role, f"{self.history[-1].content} {text}".strip())
        else:
            self.history.append(ChatMessage(role, text))
        # Trim in big steps: a window that slides every turn would defeat llama.cpp's prompt-prefix cache.
        limit = 2 * self.settings.voice_history_turns
        if len(self.history) > limit:
            self.history = self.history[-(limit // 2):]
            if self.history and self.history[0].role == "assistant":
                self.history = self.history[1:]

    async def _run_turn(self, turn: UserTurn) -> None:
        self._turns += 1
        turn_no = self._turns
        metrics: dict[str, Any] = {"type": "metrics", "turn": turn_no, "source": turn.source}
        try:
            text = turn.text
            if text is None:
                started = time.perf_counter()
                if turn.speculation is not None:
                    result = await turn.speculation
                    metrics["speculative_stt"] = True
                else:
                    result = await self._transcribe(turn.audio, turn.timings.get("input_rate"))
                metrics["stt_ms"] = round(result.processing_s * 1000, 1)
                metrics["stt_wait_ms"] = round((time.perf_counter() - started) * 1000, 1)
                text = result.text.strip()
                turn.transcribed = True
                if not any(ch.isalnum() for ch in text):
                    await self.send_json({"type": "transcript", "role": "user", "text": "", "final": True})
                    return
                await self.send_json({"type": "transcript", "role": "user", "text": text, "final": True,
                                      "language": result.language})
            self._add("user", text)
            await self._reply_to(turn, metrics)
        except asyncio.CancelledError:
            if turn.speculation is not None and not turn.speculation.done():
                turn.speculation.cancel()
            raise
        except ServiceError as exc:
            await self.send_error(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - a failed turn must not end the session
            log.exception("voice turn failed")
            await self.send_error("turn_failed", f"the turn failed: {type(exc).__name__}: {exc}")

    async def _reply_to(self, turn: UserTurn, metrics: dict[str, Any]) -> None:
        messages = [ChatMessage("system", self.config.instructions), *self.history]
        params = GenerationParams(max_tokens=self.settings.voice_max_reply_tokens,
                                  temperature=self.settings.voice_temperature)
        reply = SpokenReply(self.services, messages, params, voice=self.config.voice)
        self._reply, self._reply_audio_started = reply, None
        first_audio: float | None = None
        audio_bytes = 0
        try:
            async for event in reply.events():
                if isinstance(event, TextDelta):
                    await self.send_json({"type": "text", "role": "assistant", "delta": event.text})
                elif isinstance(event, AudioChunk):
                    if first_audio is None:
                        first_audio = self._reply_audio_started = time.perf_counter()
                    audio_bytes += len(event.pcm)
                    await self.send_audio(event.pcm)
                elif isinstance(event, SentenceSpoken):
                    pass
        except asyncio.CancelledError:
            heard_s = time.perf_counter() - first_audio if first_audio else 0.0
            heard = reply.heard_text(heard_s)
            if heard:
                self._add("assistant", heard)
            raise
        finally:
            self._reply = None
        self._add("assistant", reply.text.strip() or "…")
        await self.send_json({"type": "response_end", "text": reply.text.strip()})
        metrics.update(reply.timings.as_ms())
        if turn.endpointing_s is not None:
            metrics["endpointing_ms"] = round(turn.endpointing_s * 1000, 1)
        if turn.speech_end is not None and first_audio is not None:
            v2v = first_audio - turn.speech_end
            metrics["voice_to_voice_ms"] = round(v2v * 1000, 1)
            VOICE_TO_VOICE.observe(v2v)
        metrics["reply_audio_seconds"] = round(audio_bytes / 2 / self.services.tts.sample_rate, 3)
        metrics["completion_tokens"] = reply.usage.completion_tokens
        await self.send_json(metrics)

