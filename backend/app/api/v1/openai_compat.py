"""OpenAI-compatible routes, so the official SDKs work with ``base_url=http://host:8000/v1``.

Thin translations onto the same services the native routes use.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.api.deps import ServicesDep
from app.api.errors import APIError
from app.api.sse import sse_event, sse_response, started
from app.api.v1.generation import Message, record_usage
from app.api.v1.speech import (STREAMED_FORMATS, TranscriptFormat, speech_bytes, speech_stream, transcribe_upload,
                               transcription_response)
from app.audio.codec import AUDIO_MEDIA_TYPES
from app.services.base import ServiceError
from app.services.llm import ChatMessage, GenerationParams, Usage
from app.services.remote import public_url

router = APIRouter(tags=["openai-compatible"])


@router.get("/models")
async def list_models(services: ServicesDep):
    """What serves each role, by its real name, with the engine that runs it, where it runs (``backend``:
    ``embedded`` in this process, or ``remote`` on a model server, with its ``url``), whether it answers, and
    the LiveKit plugin that wraps it. With no settings, ``GemmaLLM`` runs the embedded SmolLM2 stand-in (not
    Gemma) and ``OpenAudioTTS`` the embedded piper voice (not an OpenAudio server)."""
    created = int(time.time())
    served = [(services.llm, "llm", "GemmaLLM"), (services.stt, "stt", "WhisperSTT"),
              (services.tts, "tts", "OpenAudioTTS")]
    return {"object": "list", "data": [_model(service, kind, plugin, created) for service, kind, plugin in served]}


def _model(service, kind: str, plugin: str, created: int) -> dict:
    server = service.server
    entry = {"id": service.model_name, "object": "model", "created": created, "owned_by": "gemmavoice",
             "kind": kind, "engine": service.engine, "livekit_plugin": plugin,
             "backend": "remote" if server is not None else "embedded", "ready": service.state == "ready"}
    if server is not None:
        entry["url"] = public_url(server.base_url)
    return entry


class StreamOptions(BaseModel):
    include_usage: bool = False  # a last chunk with no choices and the request's usage


class ChatCompletionRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    stop: list[str] | str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    # llama.cpp servers' extension, which a light worker sends (VOICE_REPEAT_PENALTY)
    repeat_penalty: float = Field(1.0, ge=1.0, le=2.0)
    n: int = Field(1, ge=1, le=1)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, services: ServicesDep):
    messages = [ChatMessage(m.role, m.content) for m in body.messages]
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    params = GenerationParams(
        max_tokens=body.max_completion_tokens or body.max_tokens or services.settings.llm_default_max_tokens,
        temperature=body.temperature, top_p=body.top_p, stop=stop, seed=body.seed,
        repeat_penalty=body.repeat_penalty)
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), services.llm.model_name

    if not body.stream:
        text, usage = await services.llm.chat(messages, params)
        record_usage(usage)
        return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": _finish(usage)}],
                "usage": usage.as_dict()}

    usage = Usage()
    tokens = await started(services.llm.stream_chat(messages, params, usage))

    def chunk(delta: dict, finish: str | None = None):
        return sse_event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    async def events():
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for piece in tokens:
                yield chunk({"content": piece})
            record_usage(usage)
            yield chunk({}, _finish(usage))
            if body.stream_options is not None and body.stream_options.include_usage:
                yield sse_event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [], "usage": usage.as_dict()})
        except ServiceError as exc:
            yield sse_event({"error": {"code": exc.code, "message": str(exc)}})
        finally:
            await tokens.aclose()
        yield sse_event("[DONE]")

    return sse_response(events())


def _finish(usage: Usage) -> str:
    return "length" if usage.finish_reason == "length" else "stop"


@router.post("/audio/transcriptions")
async def audio_transcriptions(services: ServicesDep, file: UploadFile = File(...), model: str = Form("whisper-1"),
                               language: str | None = Form(None), prompt: str | None = Form(None),
                               response_format: TranscriptFormat = Form("json"),
                               temperature: float = Form(0.0, ge=0.0, le=1.0)):
    result = await transcribe_upload(services, file, language=language, prompt=prompt, temperature=temperature)
    return transcription_response(result, response_format, verbose_default=False)


class AudioSpeechRequest(BaseModel):
    model: str | None = None
    input: str = Field(..., min_length=1)
    voice: str | None = None
    response_format: Literal["mp3", "wav", "pcm", "opus", "aac", "flac"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)


@router.post("/audio/speech")
async def audio_speech(body: AudioSpeechRequest, services: ServicesDep):
    if body.response_format not in AUDIO_MEDIA_TYPES:
        raise APIError(400, "unsupported_format",
                       f"response_format {body.response_format!r} is not supported: use mp3, wav or pcm")
    # OpenAI voice names (alloy, nova, ...) mean nothing to our engines: only known voices pass through.
    voice = body.voice if body.voice in services.tts.voices() else None
    options = {"voice": voice}
    if body.speed != 1.0:
        if not services.tts.speaks_at_speeds:
            raise APIError(400, "unsupported_speed", f"speed is not supported by the {services.tts.engine} engine: "
                                                     "leave it at 1.0")
        options["speed"] = body.speed
    if body.response_format in STREAMED_FORMATS:  # streamed as synthesized: a client hears the start sooner
        return await speech_stream(services, body.input, body.response_format, **options)
    audio, _ = await speech_bytes(services, body.input, body.response_format, **options)
    return Response(audio, media_type=AUDIO_MEDIA_TYPES[body.response_format],
                    headers={"X-Sample-Rate": str(services.tts.sample_rate)})
