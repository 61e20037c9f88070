"""The OpenAI Realtime API as this server speaks it: client events as pydantic models, the session's
configuration, and the names beta clients use. Pure: no sockets, no models, no engine.

Client events are validated with ``parse_client_event``; whatever is refused becomes a ``RealtimeError``
(an ``error`` event: ``invalid_json``, ``invalid_event``, ``missing_required_parameter``, ``invalid_value``,
``bad_text``) whose ``param`` is the dotted path of the offending field. Both session shapes are accepted:
GA (``session.type: "realtime"``, ``audio.input`` / ``audio.output``) and beta (``input_audio_format``,
``turn_detection`` and friends at the top).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

PCM_RATE = 24000
G711_RATE = 8000
# Realtime audio formats: name -> (G.711 law or None for PCM, sample rate).
FORMATS = {"audio/pcm": (None, PCM_RATE), "audio/pcmu": ("ulaw", G711_RATE), "audio/pcma": ("alaw", G711_RATE)}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
# What beta clients call the GA events (a GA event missing here has the same name in beta, or none:
# conversation.item.done is GA only).
BETA_EVENTS = {
    "conversation.item.added": "conversation.item.created",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
GA_ONLY_EVENTS = {"conversation.item.done"}
BETA_CONTENT = {"output_audio": "audio", "output_text": "text"}
MAX_ITEM_ID = 64
MAX_TOKENS = 4096


class RealtimeError(Exception):
    """A client event the server refuses: an ``error`` event, and the session goes on."""

    def __init__(self, code: str, message: str, *, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.param, self.kind = code, param, kind


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


# --- field types ---------------------------------------------------------------------------------------


def _text(value: Any, info: ValidationInfo) -> Any:
    """Text the model can read: valid Unicode (JSON may carry lone surrogates), within the server's cap."""
    if not isinstance(value, str):
        return value  # the str type refuses it
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("bad_text", "the text holds characters that are not valid Unicode") from None
    limit = (info.context or {}).get("max_text_chars")
    if limit is not None and len(value) > limit:
        raise PydanticCustomError("value_error", "text may be at most {limit} characters", {"limit": limit})
    return value


def _format(value: Any) -> Any:
    return {"type": BETA_FORMATS[value]} if isinstance(value, str) and value in BETA_FORMATS else value


def _voice(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


Text = Annotated[str, BeforeValidator(_text)]
Voice = Annotated[str, BeforeValidator(_voice), Field(min_length=1, max_length=200)]
Modalities = Annotated[list[Literal["text", "audio"]], Field(min_length=1)]
MaxTokens = Union[Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS)], Literal["inf"]]
Temperature = Annotated[Union[StrictInt, StrictFloat], Field(ge=0.0, le=2.0)]


class _Model(BaseModel):
    # Fields this server does not serve (tools, tracing, noise reduction, ...) are accepted and ignored.
    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Model):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[24000] | None = None


Format = Annotated[AudioFormat, BeforeValidator(_format)]


class TurnDetection(_Model):
    type: Literal["server_vad", "semantic_vad"]  # semantic_vad: the engine's own VAD makes the turns
    threshold: Annotated[Union[StrictInt, StrictFloat], Field(ge=0.0, le=1.0)] | None = None
    silence_duration_ms: Annotated[StrictInt, Field(ge=0, le=10000)] | None = None
    prefix_padding_ms: Annotated[StrictInt, Field(ge=0, le=5000)] | None = None
    create_response: StrictBool | None = None
    interrupt_response: StrictBool | None = None

    @field_validator("create_response", "interrupt_response")
    @classmethod
    def _served(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        # The engine answers every turn it commits and lets speech cut its reply: false is refused, not ignored.
        if value is False:
            raise ValueError("false is not served: every committed turn is answered, and "
                             "speech over a reply interrupts it (turn_detection null lets the client decide both)")
        return value


class Transcription(_Model):
    model: Text | None = None
    language: Text | None = None
    prompt: Text | None = None


class AudioInput(_Model):
    format: Format | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class AudioOutput(_Model):
    format: Format | None = None
    voice: Voice | None = None


class Audio(_Model):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class Session(_Model):
    type: Literal["realtime"] | None = None
    instructions: Text | None = None
    output_modalities: Modalities | None = None
    modalities: Modalities | None = None  # beta
    max_output_tokens: MaxTokens | None = None
    max_response_output_tokens: MaxTokens | None = None  # beta
    temperature: Temperature | None = None
    audio: Audio | None = None
    input_audio_format: Format | None = None  # beta
    output_audio_format: Format | None = None  # beta
    turn_detection: TurnDetection | None = None  # beta
    input_audio_transcription: Transcription | None = None  # beta
    voice: Voice | None = None  # beta
    tools: list | None = None


class ContentPart(_Model):
    type: str
    text: Text | None = None
    transcript: Text | None = None
    audio: str | None = None


TEXT_PARTS = {"user": ("input_text",), "system": ("input_text",),
              "assistant": ("output_text", "text", "output_audio", "audio")}


class ItemIn(_Model):
    id: Annotated[str, Field(max_length=MAX_ITEM_ID)] | None = None
    type: Literal["message"] = "message"  # no function calls: the local models do not call tools
    role: Literal["user", "assistant", "system"]
    content: Annotated[list[ContentPart], Field(min_length=1)]

    @model_validator(mode="after")
    def _parts(self, info: ValidationInfo) -> ItemIn:
        for part in self.content:
            if part.type in TEXT_PARTS[self.role]:
                words = part.text if part.type in ("input_text", "output_text", "text") else part.transcript
                if words is None:
                    raise ValueError("a text part needs \"text\" (an audio part of an assistant item, \"transcript\")")
            elif not (part.type == "input_audio" and self.role == "user" and part.audio is not None):
                raise ValueError(f"content of type {part.type[:40]!r} is not served for {self.role} items")
        limit = (info.context or {}).get("max_text_chars")
        if limit is not None and sum(len(t) for t in self.texts) > limit:
            raise ValueError(f"an item's text may be at most {limit} characters")
        return self

    @property
    def texts(self) -> list[str]:
        return [p.text if p.text is not None else p.transcript or "" for p in self.content if p.type != "input_audio"]

    @property
    def audio(self) -> list[str]:
        return [p.audio or "" for p in self.content if p.type == "input_audio"]


class ResponseAudioOutput(_Model):
    format: Format | None = None
    voice: Voice | None = None


class ResponseAudio(_Model):
    output: ResponseAudioOutput | None = None


class ResponseParams(_Model):
    conversation: Literal["auto"] | None = None  # responses outside the conversation are not served
    input: None = None  # the response reads the conversation: custom input is not served
    output_modalities: Modalities | None = None
    modalities: Modalities | None = None
    max_output_tokens: MaxTokens | None = None
    max_response_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    instructions: Text | None = None
    audio: ResponseAudio | None = None
    voice: Voice | None = None
    metadata: dict | None = None


class SessionUpdate(_Model):
    type: Literal["session.update"]
    session: Session


class AudioAppend(_Model):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_Model):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_Model):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(_Model):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ItemIn


class ItemDelete(_Model):
    type: Literal["conversation.item.delete"]
    item_id: str


class ItemRetrieve(_Model):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ItemTruncate(_Model):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: Literal[0] = 0  # a message item here has one content part
    audio_end_ms: Annotated[StrictInt, Field(ge=0)]


class ResponseCreate(_Model):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Model):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Union[SessionUpdate, AudioAppend, AudioCommit, AudioClear, ItemCreate, ItemDelete, ItemRetrieve,
                    ItemTruncate, ResponseCreate, ResponseCancel]
EVENTS: dict[str, type[_Model]] = {model.model_fields["type"].annotation.__args__[0]: model
                                   for model in ClientEvent.__args__}


def _param(loc: tuple) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def _refusal(exc: ValidationError) -> RealtimeError:
    error = exc.errors()[0]
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("-" in p or "[" in p)))  # not union branches
    code = {"missing": "missing_required_parameter", "bad_text": "bad_text"}.get(error["type"], "invalid_value")
    message = error["msg"].removeprefix("Value error, ")
    param = _param(loc)
    return RealtimeError(code, f"{param}: {message}" if param else message, param=param)


def event_id_of(raw: str) -> str | None:
    """The client's ``event_id`` of a raw event, for the error that answers it (when there is one)."""
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None
    value = event.get("event_id") if isinstance(event, dict) else None
    return value[:200] if isinstance(value, str) else None


def parse_client_event(raw: str, *, max_text_chars: int) -> ClientEvent:
    """A client event from its JSON text, validated; ``RealtimeError`` when refused."""
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested past what json parses
        raise RealtimeError("invalid_json", "events must be JSON objects with a \"type\"") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise RealtimeError("invalid_event", "events must be JSON objects with a \"type\"", param="type")
    model = EVENTS.get(event["type"])
    if model is None:
        raise RealtimeError("invalid_event", f"unknown or unsupported event type {event['type']!r}"[:300],
                            param="type")
    try:
        return model.model_validate(event, context={"max_text_chars": max_text_chars})
    except ValidationError as exc:
        raise _refusal(exc) from None


# --- the session's configuration -------------------------------------------------------------------------


def format_object(name: str) -> dict:
    return {"type": name, "rate": PCM_RATE} if name == "audio/pcm" else {"type": name}


BETA_FORMAT_NAMES = {v: k for k, v in BETA_FORMATS.items()}


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

    def updated(self, s: Session, *, default_instructions: str) -> SessionConfig:
        """This configuration with a validated ``session.update`` applied (GA and beta shapes alike)."""
        config = replace(self)
        audio_in = (s.audio.input if s.audio else None) or AudioInput()
        audio_out = (s.audio.output if s.audio else None) or AudioOutput()
        if s.instructions is not None:
            config.instructions = s.instructions or default_instructions
        if (modalities := s.output_modalities or s.modalities) is not None:
            config.output_modalities = ("audio",) if "audio" in modalities else ("text",)
        for tokens in (s.max_output_tokens, s.max_response_output_tokens):
            if tokens is not None:
                config.max_output_tokens = tokens
        if s.temperature is not None:
            config.temperature = float(s.temperature)
        for fmt in (audio_in.format, s.input_audio_format):
            if fmt is not None:
                config.input_format = fmt.type
        for fmt in (audio_out.format, s.output_audio_format):
            if fmt is not None:
                config.output_format = fmt.type
        for container, key in ((audio_in, "turn_detection"), (s, "turn_detection")):
            if key in container.model_fields_set:
                td = getattr(container, key)
                config.vad = td is not None
                if td is not None:
                    config.threshold = float(td.threshold) if td.threshold is not None else config.threshold
                    config.silence_ms = td.silence_duration_ms if td.silence_duration_ms is not None \
                        else config.silence_ms
                    config.padding_ms = td.prefix_padding_ms if td.prefix_padding_ms is not None else config.padding_ms
        for container, key in ((audio_in, "transcription"), (s, "input_audio_transcription")):
            if key in container.model_fields_set:
                t = getattr(container, key)
                config.transcription = None if t is None else {
                    "model": t.model or "whisper-1", "language": t.language or None, "prompt": t.prompt or None}
        for voice in (audio_out.voice, s.voice):
            if voice is not None:
                config.voice = voice
        return config

    def turn_detection(self) -> dict | None:
        if not self.vad:
            return None
        # idle_timeout_ms is not served.
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
        # The beta API's session (the SDK's openai.types.beta.realtime.Session) has no "object", and its turn
        # detection no idle_timeout_ms (tests/realtime_events.py checks every event against the SDK's models).
        turn_detection = self.turn_detection()
        if turn_detection is not None:
            del turn_detection["idle_timeout_ms"]
        return {
            "id": session_id, "model": self.model,
            "modalities": ["text", "audio"] if self.audio_out else ["text"], "instructions": self.instructions,
            "voice": self.voice, "input_audio_format": BETA_FORMAT_NAMES[self.input_format],
            "output_audio_format": BETA_FORMAT_NAMES[self.output_format], "input_audio_transcription": self.transcription,
            "turn_detection": turn_detection, "input_audio_noise_reduction": None, "tools": [],
            "tool_choice": "auto", "temperature": self.temperature, "max_response_output_tokens": max_tokens,
            "speed": 1.0, "tracing": None,
        }
