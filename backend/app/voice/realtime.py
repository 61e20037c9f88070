"""``WS /v1/realtime``: the OpenAI Realtime API as one more transport of the voice engine.

The session's lifecycle is every socket transport's (``app.voice.socket_session``); the event schema is
``app.voice.realtime_schema``; items and responses are ``app.voice.realtime_items``. This module is the protocol:
client events become microphone audio, chat-context items and ``generate_reply`` calls, and the session's
events become Realtime server events.

Protocol version: the GA Realtime API as the ``openai`` Python SDK 3.x speaks it (``client.realtime.connect``);
beta clients (header ``OpenAI-Beta: realtime=v1``) get the beta event names (``response.audio.delta``, ...)
and session shape; both session shapes are accepted from anyone.

How the API's ideas map onto the engine:

- ``server_vad`` on: appended audio is the session's microphone. The engine's VAD, Whisper and turn
  taking make the turns (``threshold``, ``silence_duration_ms`` and ``prefix_padding_ms`` tune this session's
  own silero VAD). Talking over a reply pauses it; words stop it, a noise lets it go on. Every turn is
  answered and speech always cuts the reply: ``create_response`` / ``interrupt_response: false`` are refused.
- ``turn_detection: null``: audio collects in a buffer; ``input_audio_buffer.commit`` transcribes it into a user
  item and ``response.create`` answers.
- Items live in the agent's chat context (what the model reads), so ``conversation.item.create`` / ``delete`` /
  ``truncate`` change what the next reply is written from. ``truncate`` keeps the words that were heard by
  ``audio_end_ms``, on the timeline of when each word was spoken.
- ``response.done`` comes once the reply has played on the client's clock: the transcript deltas follow the
  audio as it plays (the same words the history keeps after a barge-in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from app.audio.codec import g711_decode
from app.engine import (AudioFrame, ChatMessage, ConversationItemAddedEvent, ListenerPlayout, LLMMetrics, MetricsCollectedEvent,
                        PlayedSegment, SpeechCreatedEvent, UserStateChangedEvent)
from app.services.container import Services
from app.voice import realtime_schema as schema
from app.voice.realtime_items import Item, Items, Response
from app.voice.realtime_schema import FORMATS, PCM_RATE, RealtimeError, SessionConfig, new_id
from app.voice.socket_io import FrameError
from app.voice.socket_session import VoiceSocketSession

MIN_COMMIT_MS = 100  # the API's smallest committable buffer
FRAME_MS = 20  # appended audio goes to the session in frames of this length


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

    async def _deliver(self, frame: AudioFrame) -> None:
        self._conversation.items.reply_audio(frame, self.segments[-1])

    def heard(self, segment: PlayedSegment) -> float:
        return segment.played if segment.played is not None else self._heard(segment)


class RealtimeConversation(VoiceSocketSession):
    kind = "realtime"
    refusals = (FrameError, RealtimeError)

    def __init__(self, ws: WebSocket, services: Services, *, model: str, beta: bool = False) -> None:
        settings = services.settings
        self.beta = beta
        self.conversation_id = new_id("conv")
        self._buffer = bytearray()  # turn_detection null: audio since the last commit / clear
        self._buffer_full = False
        self._uncommitted = False  # server VAD: audio since the last turn
        self._input_ms = 0.0  # all audio appended, on the input clock (speech_started / stopped)
        self._speaking = False
        self._speech_item: str | None = None
        self._speech_started_ms = 0.0
        self._stopped_item: tuple[str, float] | None = None  # (item id, seconds of speech)
        self.items = Items(self)
        voices = services.tts.voices()
        self.config = SessionConfig(
            model=model or "gemma", instructions=settings.voice_instructions,
            voice=settings.tts_default_voice or (voices[0] if voices else "default"),
            threshold=settings.vad_activation_threshold, silence_ms=settings.vad_min_silence_ms,
            temperature=settings.voice_temperature)
        super().__init__(ws, services, session_id=new_id("sess"), speaker=RealtimeSpeaker(self),
                         own_vad=True)

    def session_handlers(self) -> dict[str, Callable[[Any], None]]:
        return {"user_state_changed": self._on_user_state, "speech_created": self._on_speech_created,
                "conversation_item_added": self._on_item_added, "metrics_collected": self._on_metrics}

    # --- the protocol -------------------------------------------------------------------------
    def send(self, event: dict) -> None:
        if self.beta:
            if event["type"] in schema.GA_ONLY_EVENTS:
                return
            event["type"] = schema.BETA_EVENTS.get(event["type"], event["type"])
        # ASCII escapes: whatever a client sent that comes back (ids, names) is valid JSON text, lone surrogates too.
        self.send_json({"event_id": new_id("event"), **event}, ascii_only=True)

    def refuse(self, exc: Exception, raw: str | None = None, *, server: bool = False) -> None:
        code, param = getattr(exc, "code", "server_error"), getattr(exc, "param", None)
        kind = "server_error" if server else getattr(exc, "kind", "invalid_request_error")
        self.send({"type": "error", "error": {"type": kind, "code": code, "message": str(exc), "param": param,
                                              "event_id": schema.event_id_of(raw) if raw else None}})

    def turn_failed(self, code: str, cause: BaseException) -> None:
        active = self.items.active
        if active is not None and not active.done:
            active.error = {"type": "server_error", "code": code, "message": str(cause)}
        super().turn_failed(code, cause)

    async def started(self) -> None:
        self.send({"type": "session.created", "session": self._session_object()})

    def parse(self, raw: str) -> tuple[Any, Callable[[Any], Any]]:
        event = schema.parse_client_event(raw, max_text_chars=self.settings.max_text_chars)
        return event, {
            "session.update": self._session_update, "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit, "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self.items.create, "conversation.item.delete": self.items.delete,
            "conversation.item.truncate": self.items.truncate, "conversation.item.retrieve": self.items.retrieve,
            "response.create": self._response_create, "response.cancel": self._response_cancel}[event.type]

    def on_binary(self, data: bytes) -> None:
        self.refuse(RealtimeError("invalid_event", "events are JSON text frames; audio goes in "
                                  "input_audio_buffer.append as base64"))

    def reply_text(self, text: str) -> None:
        self.items.reply_text(text)

    # --- session.update -------------------------------------------------------------------------
    async def _session_update(self, event: schema.SessionUpdate) -> None:
        config = self.config.updated(event.session, default_instructions=self.settings.voice_instructions)
        old, self.config = self.config, config
        transcription = config.transcription or {}
        await self.engine.configure(instructions=config.instructions, temperature=config.temperature,
                                    max_tokens=self.max_tokens(config.max_output_tokens),
                                    voice=self._engine_voice(config.voice),
                                    language=transcription.get("language") or "",
                                    stt_prompt=transcription.get("prompt") or "")
        if (config.threshold, config.silence_ms, config.padding_ms) != (old.threshold, old.silence_ms, old.padding_ms):
            self.engine.tune_vad(threshold=config.threshold, silence_ms=config.silence_ms, padding_ms=config.padding_ms)
        if config.input_format != old.input_format:
            self._buffer.clear()
        if config.vad != old.vad:
            self._buffer.clear()
            self._uncommitted = False
            # turn_detection null: the session hears nothing until the client commits (see _commit).
            self.engine.listen(config.vad)
        self.speaker.rate = FORMATS[config.output_format][1]
        if self.items.active is None:
            self.engine.set_audio_enabled(config.audio_out)
        self.send({"type": "session.updated", "session": self._session_object()})

    def max_tokens(self, requested: int | str) -> int:
        """The context window keeps room for VOICE_MAX_REPLY_TOKENS: a reply may be shorter, never longer."""
        cap = self.settings.voice_max_reply_tokens
        return cap if requested == "inf" else min(int(requested), cap)

    def _engine_voice(self, voice: str) -> str:
        """OpenAI voice names (alloy, marin, ...) mean nothing to our engines: only known voices pass through."""
        return voice if voice in self.services.tts.voices() else (self.settings.tts_default_voice or "")

    def _session_object(self) -> dict:
        max_tokens = self.max_tokens(self.config.max_output_tokens)
        return self.config.beta(self.id, max_tokens) if self.beta else self.config.ga(self.id, max_tokens)

    # --- input audio ----------------------------------------------------------------------------
    def decode_audio(self, data: str, param: str) -> tuple[bytes, int]:
        try:
            raw = self.decode_base64(data)
        except FrameError as exc:
            raise RealtimeError("invalid_value", str(exc), param=param) from None
        law, rate = FORMATS[self.config.input_format]
        return (g711_decode(raw, law) if law else raw[:len(raw) - len(raw) % 2]), rate

    async def _append(self, event: schema.AudioAppend) -> None:
        pcm, rate = self.decode_audio(event.audio, "audio")
        if not pcm:
            return
        self._input_ms += len(pcm) / 2 / rate * 1000
        if self.config.vad:
            self._uncommitted = True
            step = rate * FRAME_MS // 1000 * 2
            for start in range(0, len(pcm), step):
                self.engine.push_audio(pcm[start:start + step], rate)
            return
        if len(self._buffer) + len(pcm) > self.settings.max_audio_seconds * rate * 2:
            if not self._buffer_full:
                self._buffer_full = True
                raise RealtimeError("input_audio_buffer_full", f"the input audio buffer holds at most "
                                    f"{self.settings.max_audio_seconds:.0f} s: commit or clear it")
            return
        self._buffer += pcm

    async def _commit(self, event: schema.AudioCommit) -> None:
        rate = FORMATS[self.config.input_format][1]
        if self.config.vad:
            if not self._uncommitted:
                raise RealtimeError("input_audio_buffer_commit_empty", "no audio since the last turn to commit")
            self._uncommitted = False
            # The engine's own way to end a turn now: what was said is transcribed and answered, and the user
            # item arrives like any server-VAD turn (_on_item_added). The client stopped talking: the VAD hears
            # the silence after it, so the user counts as done and the reply may start.
            self.engine.commit_user_turn()
            silence = b"\0\0" * (rate * FRAME_MS // 1000)
            for _ in range((self.config.silence_ms + 100) // FRAME_MS + 1):
                self.engine.push_audio(silence, rate)
            return
        pcm, self._buffer, self._buffer_full = bytes(self._buffer), bytearray(), False
        if len(pcm) / 2 / rate * 1000 < MIN_COMMIT_MS:
            raise RealtimeError("input_audio_buffer_commit_empty",
                                f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio")
        item_id, previous = new_id("item"), self.items.last()
        self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        await self.items.add_user_audio(item_id, previous, [(pcm, rate)], texts=[])

    async def _clear(self, event: schema.AudioClear) -> None:
        self._buffer, self._buffer_full, self._uncommitted = bytearray(), False, False
        if self.config.vad:
            self.engine.clear_user_turn()
        self.send({"type": "input_audio_buffer.cleared"})

    # --- responses --------------------------------------------------------------------------------
    async def _response_create(self, event: schema.ResponseCreate) -> None:
        active = self.items.active
        if active is not None and not active.done:
            raise RealtimeError("conversation_already_has_active_response",
                                f"response {active.id} is still in progress: cancel it or wait for response.done")
        params = event.response or schema.ResponseParams()
        config = self.config
        modalities = params.output_modalities or params.modalities
        tokens = next((t for t in (params.max_output_tokens, params.max_response_output_tokens) if t is not None),
                      config.max_output_tokens)
        audio_out = (params.audio.output if params.audio else None) or schema.ResponseAudioOutput()
        response = Response(id=new_id("resp"), item_id=new_id("item"),
                            modalities=(("audio",) if "audio" in modalities else ("text",)) if modalities
                            else config.output_modalities,
                            output_format=audio_out.format.type if audio_out.format else config.output_format,
                            voice=audio_out.voice or params.voice or config.voice, max_output_tokens=tokens,
                            requested=True, metadata=params.metadata)
        await self._override(response, instructions=params.instructions,
                             temperature=float(params.temperature) if params.temperature is not None else None)
        self.items.active = response
        self.items.announce(response)
        self.items.requested = response
        try:
            handle = self.engine.generate_reply()
        except RuntimeError as exc:
            response.error = {"type": "server_error", "code": "response_failed", "message": str(exc)}
            self.items.finish(response)
            return
        finally:
            self.items.requested = None
        if response.handle is None:  # (the session announces every speech; in case it did not)
            self.items.track(handle, response)

    async def _override(self, response: Response, *, instructions: str | None, temperature: float | None) -> None:
        """What a response.create sets for this response only, undone when it is done (``Items.finish``)."""
        config = self.config
        response.override = await self.engine.override(
            max_tokens=self.max_tokens(response.max_output_tokens), temperature=temperature,
            instructions=(instructions or self.settings.voice_instructions) if instructions is not None else None,
            voice=self._engine_voice(response.voice) if response.voice != config.voice else None)
        self.speaker.rate = FORMATS[response.output_format][1]
        self.engine.set_audio_enabled(response.audio_out)

    def restore_output(self) -> None:
        """The session's own output format and modalities, after a response that had its own."""
        self.speaker.rate = FORMATS[self.config.output_format][1]
        self.engine.set_audio_enabled(self.config.audio_out)

    def heard(self, segment: PlayedSegment) -> float:
        return self.speaker.heard(segment)

    async def _response_cancel(self, event: schema.ResponseCancel) -> None:
        response = self.items.active
        if response is None or response.done:
            raise RealtimeError("response_cancel_not_active", "there is no response in progress to cancel")
        if event.response_id is not None and event.response_id != response.id:
            raise RealtimeError("invalid_value", f"response {event.response_id[:80]!r} is not in progress",
                                param="response_id")
        response.cancel_reason = response.cancel_reason or "client_cancelled"
        await self.items.stop(response)

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
        requested = self.items.requested
        if requested is not None and requested.handle is None:
            self.items.track(ev.speech_handle, requested)
            return
        config = self.config
        self.items.track(ev.speech_handle, Response(
            id=new_id("resp"), item_id=new_id("item"), modalities=config.output_modalities,
            output_format=config.output_format, voice=config.voice, max_output_tokens=config.max_output_tokens,
            requested=False))

    def _on_item_added(self, ev: ConversationItemAddedEvent) -> None:
        """A user turn the engine heard (server VAD, or a commit with it on): the committed user item."""
        message = ev.item
        if not isinstance(message, ChatMessage) or message.role != "user" or message.id in self.items.by_id:
            return
        if any(item.chat_id == message.id for item in self.items.by_id.values()):
            return
        if self._stopped_item is not None and not self._speaking:
            item_id, seconds = self._stopped_item
        else:  # a turn cut while the user still speaks
            item_id, seconds = new_id("item"), (self._input_ms - self._speech_started_ms) / 1000
        self._stopped_item = None
        self._uncommitted = False
        previous = self.items.last()
        self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        text = message.text_content or ""
        transcribed = self.config.transcription is not None
        item = Item(id=item_id, role="user", chat_id=message.id,
                    content=[{"type": "input_audio", "transcript": text if transcribed else None}])
        self.items.add(item, previous)
        if transcribed:
            self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                       "content_index": 0, "transcript": text,
                       "usage": {"type": "duration", "seconds": round(max(seconds, 0.0), 3)}})
        # The engine files the user's words once their reply is scheduled: that reply is the response to them.
        answer = [r for r in self.items.responses.values() if not r.announced and not r.requested
                  and r.handle is not None and r.handle.scheduled and not r.handle.done()]
        if answer and (self.items.active is None or self.items.active.done):
            self.items.active = answer[-1]
            self.items.announce(answer[-1])

    def _on_metrics(self, ev: MetricsCollectedEvent) -> None:
        """Token counts for response.done (the session tags LLM metrics with the speech they belong to)."""
        metrics = ev.metrics
        if not isinstance(metrics, LLMMetrics):
            return
        response = next((r for r in [*self.items.responses.values(), self.items.active]
                         if r is not None and r.handle is not None and r.handle.id == metrics.speech_id), None)
        if response is not None:
            response.usage["input_tokens"] += metrics.prompt_tokens
            response.usage["output_tokens"] += metrics.completion_tokens
            response.usage["cached_tokens"] += metrics.prompt_cached_tokens


def wants_beta(ws: WebSocket) -> bool:
    """A beta client: ``OpenAI-Beta: realtime=v1`` (or the browser's ``openai-beta.realtime-v1`` subprotocol)."""
    header = ws.headers.get("openai-beta", "")
    offered = ws.scope.get("subprotocols") or ()
    return "realtime=v1" in header.replace(" ", "") or "openai-beta.realtime-v1" in offered
