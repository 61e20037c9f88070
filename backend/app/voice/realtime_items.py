"""Items and responses of a Realtime conversation over the engine: what the client knows as conversation items
and responses, kept in step with the agent's chat context (what the model reads) and the session's speech.

``app.voice.realtime`` feeds it the client's events and the session's; this module writes the item and
response events (``conversation.item.*``, ``response.*``) through its owner, which it knows only as a
``RealtimeOwner`` (the few things below).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any, Protocol


from app.audio.codec import Resampler, g711_encode
from app.engine import INTERRUPT_WAIT_S, AudioFrame, ChatMessage, Override, PlayedSegment, SpeechHandle, VoiceEngine
from app.voice import realtime_schema as schema
from app.voice.realtime_schema import (BETA_CONTENT, BETA_FORMAT_NAMES, FORMATS, RealtimeError, SessionConfig,
                                       format_object, new_id)


class RealtimeOwner(Protocol):
    """What ``Items`` needs of the conversation it belongs to (``app.voice.realtime``)."""

    beta: bool
    conversation_id: str
    config: SessionConfig
    engine: VoiceEngine

    def send(self, event: dict) -> None: ...
    def spawn(self, coro) -> None: ...
    def heard(self, segment: PlayedSegment) -> float: ...
    def max_tokens(self, requested: int | str) -> int: ...
    def restore_output(self) -> None: ...
    def decode_audio(self, data: str, param: str) -> tuple[bytes, int]: ...
    async def transcribe(self, pcm: bytes, rate: int, language: str | None) -> tuple[str, str | None]: ...


class AudioEncoder:
    """A response's audio in the client's format: PCM 24 kHz, or G.711 at 8 kHz."""

    def __init__(self, fmt: str) -> None:
        self.law, self.rate = FORMATS[fmt]
        self._resampler: Resampler | None = None

    def encode(self, frame: AudioFrame) -> bytes:
        pcm = bytes(frame.data)
        if frame.sample_rate != self.rate:  # the format changed while this reply was being spoken
            if self._resampler is None or self._resampler.src_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, self.rate)
            pcm = self._resampler.push(pcm)
        return g711_encode(pcm, self.law) if self.law else pcm


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
    override: Override | None = None  # the options response.create set for this response only
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


class Items:
    """The conversation's items (in order) and the responses over the session's speech."""

    def __init__(self, owner: RealtimeOwner) -> None:
        self.owner = owner
        self.by_id: dict[str, Item] = {}
        self.order: list[str] = []  # item ids, oldest first
        self.responses: dict[str, Response] = {}  # by speech id
        self.active: Response | None = None
        self.requested: Response | None = None

    def last(self) -> str | None:
        return self.order[-1] if self.order else None

    def add(self, item: Item, previous: str | None) -> None:
        position = len(self.order) if previous is None else \
            0 if previous == "root" else self.order.index(previous) + 1
        self.order.insert(position, item.id)
        self.by_id[item.id] = item
        self.owner.send({"type": "conversation.item.added", "item": item.as_event(self.owner.beta),
                         "previous_item_id": self.order[position - 1] if position else None})
        if item.status == "completed":
            self.done(item)

    def done(self, item: Item) -> None:
        self.owner.send({"type": "conversation.item.done", "item": item.as_event(self.owner.beta)})

    async def insert_chat(self, item: Item, message: ChatMessage) -> None:
        """Into the agent's chat context, where the item stands in the conversation."""
        ctx = self.owner.engine.chat_ctx.copy()
        position = self.order.index(item.id)
        anchor = next((self.by_id[i].chat_id for i in reversed(self.order[:position])
                       if self.by_id[i].chat_id and ctx.get_by_id(self.by_id[i].chat_id)), None)
        if anchor is None:
            index = next((i for i, it in enumerate(ctx.items)
                          if not (isinstance(it, ChatMessage) and it.role in ("system", "developer"))),
                         len(ctx.items))
        else:
            index = ctx.index_by_id(anchor) + 1
        if index < len(ctx.items):  # in the middle: keep the context in time order
            before = ctx.items[index - 1].created_at if index else ctx.items[index].created_at - 1.0
            message.created_at = (before + ctx.items[index].created_at) / 2
        ctx.items.insert(index, message)
        await self.owner.engine.update_chat_ctx(ctx)
        item.chat_id = message.id

    async def remove_chat(self, chat_id: str | None) -> None:
        if chat_id is None:
            return
        ctx = self.owner.engine.chat_ctx.copy()
        if ctx.get_by_id(chat_id) is not None:
            ctx.remove(chat_id)
            await self.owner.engine.update_chat_ctx(ctx)

    def apply_truncation(self, response: Response) -> None:
        """Keep, in the item and the chat context, only the words heard by ``audio_end_ms``."""
        heard = (response.truncate_ms or 0) / 1000
        kept_chars = max((length for at, length in response.timeline if at <= heard), default=0)
        kept = response.transcript[:kept_chars].strip()
        item = self.by_id.get(response.item_id)
        if item is None:
            return
        item.status = "incomplete"
        item.content[0]["transcript"] = kept
        if item.chat_id is None:
            return
        if kept:
            self.owner.spawn(self.cut_chat(item.chat_id, kept))
        else:
            self.owner.spawn(self.remove_chat(item.chat_id))
            item.chat_id = None

    async def cut_chat(self, chat_id: str, kept: str) -> None:
        """The message in the agent's chat context keeps only ``kept``, as an interrupted reply."""
        ctx = self.owner.engine.chat_ctx.copy()
        message = ctx.get_by_id(chat_id)
        if isinstance(message, ChatMessage):  # a new message: the context's own items are read-only
            ctx.items[ctx.index_by_id(chat_id)] = message.model_copy(update={"content": [kept], "interrupted": True})
            await self.owner.engine.update_chat_ctx(ctx)

    async def stop(self, response: Response) -> None:
        """Interrupt the response's speech and wait (a bounded while) until it is filed."""
        handle = response.handle
        if handle is None:
            self.finish(response)
            return
        if not handle.done():
            handle.interrupt(force=True)

            async def settled() -> None:
                await handle

            try:
                await asyncio.wait_for(settled(), INTERRUPT_WAIT_S)
            except asyncio.TimeoutError:
                pass
        self.finish(response)

    def track(self, handle: SpeechHandle, response: Response) -> None:
        response.handle = handle
        self.responses[handle.id] = response
        handle.add_done_callback(lambda _handle: self.finish(response))

    def announce(self, response: Response) -> None:
        response.announced = True
        if response.encoder is None:
            response.encoder = AudioEncoder(response.output_format)
        self.owner.send({"type": "response.created", "response": self.response_object(response, "in_progress")})

    def start_item(self, response: Response) -> None:
        """The response's assistant message: added to the output and the conversation, its one part opened."""
        response.item_started = True
        kind = "output_audio" if response.audio_out else "output_text"
        item = Item(id=response.item_id, role="assistant", status="in_progress", response=response,
                    content=[{"type": kind, "transcript": ""} if response.audio_out else {"type": kind, "text": ""}])
        self.owner.send({"type": "response.output_item.added", "response_id": response.id, "output_index": 0,
                   "item": dict(item.as_event(self.owner.beta), content=[])})
        self.add(item, self.last())
        part = {"type": "audio", "transcript": ""} if response.audio_out else {"type": "text", "text": ""}
        self.owner.send({"type": "response.content_part.added", "response_id": response.id, "item_id": item.id,
                   "output_index": 0, "content_index": 0, "part": part})

    def output_response(self) -> Response | None:
        """The response whose reply is playing now; announced to the client on its first output."""
        handle = self.owner.engine.current_speech
        response = self.responses.get(handle.id) if handle is not None else None
        if response is None or response.cancelling:
            return None
        if not response.announced:
            previous = self.active
            if previous is not None and not previous.done and previous.handle is not None and previous.handle.done():
                self.finish(previous)  # (its speech ended and its callback is still to come)
            self.active = response
            self.announce(response)
        if not response.item_started:
            self.start_item(response)
        return response

    def reply_audio(self, frame: AudioFrame, segment: PlayedSegment) -> None:
        response = self.output_response()
        if response is None or not response.audio_out or response.encoder is None:
            return
        if not response.segments or response.segments[-1] is not segment:
            response.segments.append(segment)
        response.audio_seconds += frame.duration
        data = response.encoder.encode(frame)
        if data:
            self.owner.send({"type": "response.output_audio.delta", "response_id": response.id,
                       "item_id": response.item_id, "output_index": 0, "content_index": 0,
                       "delta": base64.b64encode(data).decode()})

    def reply_text(self, text: str) -> None:
        response = self.output_response()
        if response is not None and text:
            self.send_text(response, text)

    def send_text(self, response: Response, text: str) -> None:
        response.transcript += text
        heard = sum(self.owner.heard(segment) for segment in response.segments)
        response.timeline.append((heard, len(response.transcript)))
        kind = "response.output_audio_transcript.delta" if response.audio_out else "response.output_text.delta"
        self.owner.send({"type": kind, "response_id": response.id, "item_id": response.item_id, "output_index": 0,
                   "content_index": 0, "delta": text})

    def finish(self, response: Response) -> None:
        """The response's last events: its part, its item and ``response.done``."""
        if response.done:
            return
        handle = response.handle
        if handle is not None:
            self.responses.pop(handle.id, None)
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
        item = self.by_id.get(response.item_id)
        if response.item_started and item is not None:
            filed = ""
            for chat_item in (handle.chat_items if handle is not None else []):
                if isinstance(chat_item, ChatMessage) and chat_item.role == "assistant":
                    item.chat_id, filed = chat_item.id, chat_item.text_content or ""
            if status == "completed" and filed.startswith(response.transcript) and filed != response.transcript:
                # The last words can reach the transcript output after the reply was filed: send them now.
                self.send_text(response, filed[len(response.transcript):])
            item.status = "completed" if status == "completed" else "incomplete"
            ids = {"response_id": response.id, "item_id": item.id, "output_index": 0, "content_index": 0}
            if response.audio_out:
                item.content[0]["transcript"] = response.transcript
                self.owner.send({"type": "response.output_audio.done", **ids})
                self.owner.send({"type": "response.output_audio_transcript.done", **ids, "transcript": response.transcript})
                part = {"type": "audio", "transcript": response.transcript}
            else:
                item.content[0]["text"] = response.transcript
                self.owner.send({"type": "response.output_text.done", **ids, "text": response.transcript})
                part = {"type": "text", "text": response.transcript}
            self.owner.send({"type": "response.content_part.done", **ids, "part": part})
            if response.truncate_ms is not None:
                self.apply_truncation(response)
            self.done(item)
            self.owner.send({"type": "response.output_item.done", "response_id": response.id, "output_index": 0,
                       "item": item.as_event(self.owner.beta)})
        self.owner.send({"type": "response.done",
                   "response": self.response_object(response, status, details=details, item=item)})
        was_active, overridden = self.active is response, response.override is not None
        if overridden:
            response.override.undo()
        if was_active:
            self.active = None
        if overridden or was_active:
            self.owner.restore_output()

    def response_object(self, response: Response, status: str, *, details: dict | None = None,
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
            "output": [item.as_event(self.owner.beta)] if item is not None and response.item_started else [],
            "conversation_id": self.owner.conversation_id, "usage": usage, "metadata": response.metadata,
            "max_output_tokens": self.owner.max_tokens(response.max_output_tokens),
        }
        if self.owner.beta:
            if usage is not None:  # the beta API's usage (openai.types.beta.realtime) counts no image tokens
                del usage["input_token_details"]["image_tokens"]
            body["modalities"] = ["text", "audio"] if response.audio_out else ["text"]
            body["output_audio_format"] = BETA_FORMAT_NAMES[response.output_format]
            body["voice"] = response.voice
        else:
            body["output_modalities"] = list(response.modalities)
            body["audio"] = {"output": {"format": format_object(response.output_format), "voice": response.voice}}
        return body

    # --- the client's item events ------------------------------------------------------------------
    async def add_user_audio(self, item_id: str, previous: str | None, audio: list[tuple[bytes, int]], *,
                              texts: list[str]) -> None:
        """A user item of recorded audio (a commit, or conversation.item.create): created, transcribed, then
        put in the chat context."""
        content = [{"type": "input_text", "text": t} for t in texts] + \
            [{"type": "input_audio", "transcript": None} for _ in audio]
        item = Item(id=item_id, role="user", content=content)
        self.add(item, previous)
        words = list(texts)
        for index, (pcm, rate) in enumerate(audio):
            content_index = len(texts) + index
            try:
                transcript, _ = await self.owner.transcribe(pcm, rate, (self.owner.config.transcription or {}).get("language"))
            except Exception as exc:  # noqa: BLE001 - a failed transcription must not end the session
                self.owner.send({"type": "conversation.item.input_audio_transcription.failed", "item_id": item_id,
                           "content_index": content_index,
                           "error": {"type": "transcription_error", "code": "stt_failed", "message": str(exc),
                                     "param": None}})
                continue
            words.append(transcript)
            if self.owner.config.transcription is not None:
                item.content[content_index]["transcript"] = transcript
                self.owner.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                           "content_index": content_index, "transcript": transcript,
                           "usage": {"type": "duration", "seconds": round(len(pcm) / 2 / rate, 3)}})
        text = "\n".join(w for w in words if w)
        if text and item_id in self.by_id:  # (not deleted meanwhile)
            await self.insert_chat(item, ChatMessage(id=item_id, role="user", content=[text]))

    async def create(self, event: schema.ItemCreate) -> None:
        raw = event.item
        item_id = raw.id or new_id("item")
        if item_id in self.by_id or item_id == "root":
            raise RealtimeError("invalid_value", "item ids are new", param="item.id")
        previous = event.previous_item_id
        if previous is not None and previous != "root" and previous not in self.by_id:
            raise RealtimeError("item_not_found", f"no item {previous[:80]!r} in the conversation",
                                param="previous_item_id")
        if raw.audio:
            audio = [self.owner.decode_audio(data, "item.content.audio") for data in raw.audio]
            await self.add_user_audio(item_id, previous, audio, texts=raw.texts)
            return
        content_type = "output_text" if raw.role == "assistant" else "input_text"
        item = Item(id=item_id, role=raw.role, content=[{"type": content_type, "text": t} for t in raw.texts])
        self.add(item, previous)
        text = "\n".join(raw.texts)
        if text.strip():
            await self.insert_chat(item, ChatMessage(id=item_id, role=raw.role, content=[text]))

    def get(self, item_id: str) -> Item:
        if item_id not in self.by_id:
            raise RealtimeError("item_not_found", f"no item {item_id[:80]!r} in the conversation", param="item_id")
        return self.by_id[item_id]

    async def delete(self, event: schema.ItemDelete) -> None:
        item = self.get(event.item_id)
        if item.response is not None and not item.response.done:
            raise RealtimeError("invalid_value", "the item's response is still in progress: cancel it first",
                                param="item_id")
        await self.remove_chat(item.chat_id)
        self.order.remove(item.id)
        del self.by_id[item.id]
        self.owner.send({"type": "conversation.item.deleted", "item_id": item.id})

    async def retrieve(self, event: schema.ItemRetrieve) -> None:
        self.owner.send({"type": "conversation.item.retrieved", "item": self.get(event.item_id).as_event(self.owner.beta)})

    async def truncate(self, event: schema.ItemTruncate) -> None:
        item = self.get(event.item_id)
        response = item.response
        if response is None or not response.audio_out:
            raise RealtimeError("invalid_value", "only an assistant item with audio can be truncated", param="item_id")
        end_ms = event.audio_end_ms
        audio_ms = response.audio_seconds * 1000
        if end_ms > audio_ms + 1:
            raise RealtimeError("invalid_value", f"audio_end_ms ({end_ms}) is past the item's audio "
                                f"({audio_ms:.0f} ms)", param="audio_end_ms")
        response.truncate_ms = end_ms if response.truncate_ms is None else min(end_ms, response.truncate_ms)
        if not response.done:  # the client stopped playing it: no point going on
            response.cancel_reason = response.cancel_reason or "client_cancelled"
            await self.stop(response)
        if response.done:
            self.apply_truncation(response)
        self.owner.send({"type": "conversation.item.truncated", "item_id": item.id, "content_index": 0,
                   "audio_end_ms": end_ms})
