"""The protocol of `WS /v1/conversation/ws`: every JSON event and message, once.

This module is the single source of the WebSocket voice protocol. The server builds every event it sends
through `ServerEvent`'s models (`event_json`) and parses every client text frame through
`ClientMessage`'s (`parse_client_message`). The web client's TypeScript types
(`frontend/src/api/socketProtocol.generated.ts`) are generated from this module's JSON Schema:

    cd frontend && npm run protocol:generate      # runs: python -m app.voice.socket_protocol | json2ts

and `backend/tests/test_socket_protocol.py` fails when the committed file differs from what the models give.

Binary frames are audio (PCM s16le mono, at `input_sample_rate` from the client and `output_sample_rate`
from the server); they carry no JSON and appear here only in the docs.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from app.voice.socket_io import FrameError, require_unicode

ALLOWED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
BAD_FRAME = "text frames must be JSON objects with a \"type\""


# --- server -> client -----------------------------------------------------------------------------------
class _Event(BaseModel):
    """A server event: built by the server only, so an unknown field is a bug."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):  # noqa: ANN001, ANN206 - pydantic's hook
        schema = handler(core_schema)
        # On the wire every field is present except those whose default is None and were not given (see
        # event_json): "type", "role", ... have defaults only so that the server need not repeat them.
        handler.resolve_ref_schema(schema)["required"] = [name for name, field in cls.model_fields.items()
                                                          if field.default is not None]
        return schema


class ReadyEvent(_Event):
    """First event of every session."""

    type: Literal["ready"] = "ready"
    session_id: str
    input_sample_rate: int
    output_sample_rate: int = Field(description="the rate of the reply audio (binary frames)")
    vad: bool = Field(description="true: the server finds turns; false: push-to-talk")
    models_ready: bool


class ConfigEvent(_Event):
    """The answer to the client's `config`: the settings in force."""

    type: Literal["config"] = "config"
    input_sample_rate: int
    vad: bool
    output_sample_rate: int


class VadEvent(_Event):
    """The server's voice activity detector hears the user start or stop speaking."""

    type: Literal["vad"] = "vad"
    state: Literal["speech_start", "speech_end"]


class TranscriptEvent(_Event):
    """The user's words."""

    type: Literal["transcript"] = "transcript"
    role: Literal["user"] = "user"
    text: str
    final: bool = True
    language: str | None


class TextEvent(_Event):
    """The reply's words, sent as the client plays them."""

    type: Literal["text"] = "text"
    role: Literal["assistant"] = "assistant"
    delta: str


class ResponseEndEvent(_Event):
    """The reply is complete (its audio may still be playing at the client)."""

    type: Literal["response_end"] = "response_end"
    text: str


class InterruptedEvent(_Event):
    """The reply stops for good: the client drops the reply audio it still holds."""

    type: Literal["interrupted"] = "interrupted"
    reason: Literal["barge_in", "client", "new_turn"]


class PlaybackEvent(_Event):
    """The user may be talking over the reply: hold its audio; `resumed` if it was only a noise."""

    type: Literal["playback"] = "playback"
    state: Literal["paused", "resumed"]


class TurnCutEvent(_Event):
    """The user spoke past the server's maximum turn length: what was said so far is answered."""

    type: Literal["turn_cut"] = "turn_cut"
    reason: Literal["max_turn_length"] = "max_turn_length"
    max_seconds: float
    message: str


class MetricsEvent(_Event):
    """One reply's timings, after its `response_end`. Null: not measured for this turn."""

    type: Literal["metrics"] = "metrics"
    turn: int
    source: Literal["voice", "text", "push_to_talk", "recorded"]
    llm_first_token_ms: float | None
    first_sentence_ms: float | None
    tts_first_audio_ms: float | None
    reply_first_audio_ms: float | None
    reply_audio_seconds: float
    stt_ms: float | None = Field(default=None, description="voice turns only")
    endpointing_ms: float | None = Field(default=None, description="voice turns only")
    voice_to_voice_ms: float = Field(default=None, description="spoken turns only: end of speech to first reply audio")


class ErrorEvent(_Event):
    """A refused frame or a failed turn; the session stays open (unless the server closes it, as when full)."""

    type: Literal["error"] = "error"
    code: str
    message: str


ServerEvent = Annotated[Union[ReadyEvent, ConfigEvent, VadEvent, TranscriptEvent, TextEvent, ResponseEndEvent,
                              InterruptedEvent, PlaybackEvent, TurnCutEvent, MetricsEvent, ErrorEvent],
                        Field(discriminator="type")]


def event_json(event: _Event) -> dict[str, Any]:
    """The event as it goes on the wire, `type` first. A field whose default is None is optional: left out
    unless the server gave it (an explicit null is sent)."""
    left_out = {name for name, field in type(event).model_fields.items()
                if field.default is None and name not in event.model_fields_set}
    return event.model_dump(mode="json", exclude=left_out)


# --- client -> server -----------------------------------------------------------------------------------
class Refusal(NamedTuple):
    """What the server answers when a field is missing or not of its type (`{max_text_chars}` is filled in)."""

    code: str
    message: str


class _Message(BaseModel):
    """A client message. Fields it does not know are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: str

    @staticmethod
    def _limit(info: ValidationInfo) -> int | None:
        return (info.context or {}).get("max_text_chars")


class ConfigMessage(_Message):
    """The session's settings; a later `config` replaces them (absent fields keep their values, except
    `instructions`, `voice` and `language`, which go back to the server's defaults)."""

    type: Literal["config"]
    input_sample_rate: Annotated[int, Refusal("bad_config", f"input_sample_rate must be one of {ALLOWED_RATES}")] = \
        Field(default=None, description=f"the microphone's rate: one of {ALLOWED_RATES}")
    instructions: Annotated[str | None, Refusal(
        "bad_config", "instructions must be text of at most {max_text_chars} chars")] = None
    vad: Annotated[bool, Refusal("bad_config", "vad must be true or false")] = Field(
        default=None, description="true: the server finds turns; false: push-to-talk, the client sends end_turn")
    voice: Annotated[str | None, Refusal("bad_config", "voice must be text")] = None
    language: Annotated[str | None, Refusal("bad_config", "language must be text")] = None

    @field_validator("input_sample_rate")
    @classmethod
    def _known_rate(cls, rate: int) -> int:
        if rate not in ALLOWED_RATES:
            raise ValueError("not an allowed rate")
        return rate

    @field_validator("instructions")
    @classmethod
    def _instructions(cls, text: str | None, info: ValidationInfo) -> str | None:
        limit = cls._limit(info)
        if text and limit is not None and len(text) > limit:
            raise ValueError("too long")
        if text:
            require_unicode(text, "instructions")
        return text


class TextMessage(_Message):
    """A typed user turn."""

    type: Literal["text"]
    text: Annotated[str, Refusal("empty_text", "a text turn needs non-empty \"text\"")]

    @field_validator("text")
    @classmethod
    def _text(cls, text: str, info: ValidationInfo) -> str:
        if not text.strip():
            raise ValueError("empty")
        require_unicode(text, "text")
        limit = cls._limit(info)
        if limit is not None and len(text) > limit:
            raise FrameError("text_too_long", f"text turns may be at most {limit} characters")
        return text


class EndTurnMessage(_Message):
    """Push-to-talk (`vad: false`): the user let go; the audio since the last turn is answered."""

    type: Literal["end_turn"]


class InterruptMessage(_Message):
    """Stop the reply now."""

    type: Literal["interrupt"]


class AudioMessage(_Message):
    """A whole recorded utterance, base64, in any supported format (the server finds which)."""

    type: Literal["audio"]
    data: Annotated[str, Refusal("bad_frame", "audio must be base64 text")]
    format: str | None = Field(default=None, description="a hint only (wav, webm, ...): the server reads the data")

    @field_validator("data")
    @classmethod
    def _data(cls, data: str) -> str:
        if not data:
            raise ValueError("empty")
        return data


ClientMessage = Annotated[Union[ConfigMessage, TextMessage, EndTurnMessage, InterruptMessage, AudioMessage],
                          Field(discriminator="type")]
CLIENT_MESSAGES: dict[str, type[_Message]] = {
    model.model_fields["type"].annotation.__args__[0]: model
    for model in (ConfigMessage, TextMessage, EndTurnMessage, InterruptMessage, AudioMessage)}


def parse_client_message(raw: str, *, max_text_chars: int) -> _Message:
    """A text frame as its message; `FrameError` (with the code the client gets) when it is refused."""
    try:
        frame = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested past what json parses
        raise FrameError("bad_frame", BAD_FRAME) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError("bad_frame", BAD_FRAME)
    model = CLIENT_MESSAGES.get(frame["type"])
    if model is None:
        raise FrameError("unknown_type", f"unknown frame type {frame['type']!r}")
    context = {"max_text_chars": max_text_chars}
    try:
        return model.model_validate(frame, context=context)
    except ValidationError as exc:
        raise _refusal(model, exc.errors()[0], context) from None


def _refusal(model: type[_Message], error: dict, context: dict) -> FrameError:
    """The first error, as the client hears it: a check's own `FrameError`, else the field's `Refusal`."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FrameError):
        return cause
    field = model.model_fields.get(str(error["loc"][0])) if error.get("loc") else None
    refusal = next((m for m in field.metadata if isinstance(m, Refusal)), None) if field else None
    if refusal is None:
        return FrameError("bad_frame", f"{error['loc'][0] if error.get('loc') else 'the frame'}: {error['msg']}")
    return FrameError(refusal.code, refusal.message.format(**context))


# --- the schema the TypeScript types are generated from ---------------------------------------------------
def json_schema() -> dict[str, Any]:
    """Both directions as one JSON Schema: `ServerEvent` and `ClientMessage` (unions on `type`) and their
    members in `$defs`. Property titles are left out (json2ts would make a type alias of each)."""
    defs: dict[str, Any] = {}
    roots = {}
    for name, union, mode, doc in (("ServerEvent", ServerEvent, "serialization", "A JSON event from the server."),
                                   ("ClientMessage", ClientMessage, "validation", "A JSON message from the client.")):
        schema = TypeAdapter(union).json_schema(mode=mode, ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        schema.pop("discriminator", None)  # json2ts reads the union from oneOf; the "type" literals narrow it
        roots[name] = {"title": name, "description": doc, **schema}
    for model in defs.values():
        for prop in model.get("properties", {}).values():
            prop.pop("title", None)
            if prop.get("default", ...) is None:
                prop.pop("default")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SocketProtocol",
        "description": "The JSON frames of WS /v1/conversation/ws (backend/app/voice/socket_protocol.py).",
        "type": "object",
        "properties": {"server": {"$ref": "#/$defs/ServerEvent"}, "client": {"$ref": "#/$defs/ClientMessage"}},
        "required": ["server", "client"],
        "additionalProperties": False,
        "$defs": {**roots, **dict(sorted(defs.items()))},
    }


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
