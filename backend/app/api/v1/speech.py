"""Speech routes: ``/v1/speech-to-text`` and ``/v1/text-to-speech``."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from app.api.deps import ServicesDep
from app.api.sse import sse_event, sse_response, started
from app.audio.codec import AUDIO_MEDIA_TYPES, decode_audio, encode_audio, wav_header
from app.metrics import STT_SECONDS, TTS_FIRST_AUDIO
from app.services.base import ServiceError
from app.services.container import Services
from app.services.stt import Transcription

router = APIRouter(tags=["speech"])

TranscriptFormat = Literal["json", "verbose_json", "text", "srt", "vtt"]


async def transcribe_upload(services: Services, file: UploadFile, *, language: str | None = None,
                            prompt: str | None = None, temperature: float = 0.0) -> Transcription:
    data = await file.read()
    audio = await asyncio.to_thread(decode_audio, data, max_seconds=services.settings.max_audio_seconds)
    result = await services.stt.transcribe(audio, language=language, prompt=prompt, temperature=temperature)
    STT_SECONDS.observe(result.processing_s)
    return result


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def transcription_response(result: Transcription, fmt: str, *, verbose_default: bool):
    """Render a transcription in any of the formats clients ask for."""
    if fmt == "text":
        return PlainTextResponse(result.text)
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        cues = [f"{_stamp(s.start, sep)} --> {_stamp(s.end, sep)}\n{s.text}\n" for s in result.segments]
        if fmt == "srt":
            body = "\n".join(f"{i + 1}\n{cue}" for i, cue in enumerate(cues))
        else:
            body = "WEBVTT\n\n" + "\n".join(cues)
        return PlainTextResponse(body, media_type="text/vtt" if fmt == "vtt" else "application/x-subrip")
    if fmt == "json" and not verbose_default:
        return {"text": result.text}
    return {
        "task": "transcribe", "text": result.text, "language": result.language,
        "language_probability": round(result.language_probability, 4), "duration": result.duration,
        "confidence": round(result.confidence, 4),
        "segments": [{"id": s.id, "start": s.start, "end": s.end, "text": s.text,
                      "avg_logprob": round(s.avg_logprob, 4), "no_speech_prob": round(s.no_speech_prob, 4)}
                     for s in result.segments],
    }


@router.post("/speech-to-text")
async def speech_to_text(services: ServicesDep, file: UploadFile = File(...), language: str | None = Form(None),
                         prompt: str | None = Form(None), response_format: TranscriptFormat = Form("json"),
                         temperature: float = Form(0.0, ge=0.0, le=1.0)):
    result = await transcribe_upload(services, file, language=language, prompt=prompt, temperature=temperature)
    return transcription_response(result, response_format, verbose_default=True)


class SpeechRequest(BaseModel):
    text: str = Field(..., min_length=1)
    voice: str | None = None
    reference_id: str | None = None
    format: Literal["wav", "pcm", "mp3"] = "wav"
    stream: bool = False


async def speech_bytes(services: Services, text: str, fmt: str, **options) -> tuple[bytes, float]:
    """The whole utterance in ``fmt``, and its duration in seconds. ``options``: the engine's ``stream()``
    keywords (voice, speed)."""
    started = time.perf_counter()
    pieces: list[bytes] = []
    async for chunk in services.tts.stream(text, **options):
        if not pieces:
            TTS_FIRST_AUDIO.observe(time.perf_counter() - started)
        pieces.append(chunk)
    pcm = b"".join(pieces)
    rate = services.tts.sample_rate
    return await asyncio.to_thread(encode_audio, pcm, rate, fmt), len(pcm) / 2 / rate


STREAMED_FORMATS = ("wav", "pcm")


async def speech_stream(services: Services, text: str, fmt: str, **options) -> StreamingResponse:
    """The utterance in ``fmt`` (WAV or PCM) as it is synthesized; a failure before the first audio is a JSON
    error, one after it ends the stream. ``options``: as ``speech_bytes``."""
    rate = services.tts.sample_rate
    chunks = await started(services.tts.stream(text, **options))

    async def audio_stream():
        # WAV streams carry an open-ended header; PCM goes out bare.
        try:
            if fmt == "wav":
                yield wav_header(rate)
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return StreamingResponse(audio_stream(), media_type=AUDIO_MEDIA_TYPES[fmt], headers={"X-Sample-Rate": str(rate)})


def wants_audio(request: Request) -> bool:
    return "audio/" in request.headers.get("accept", "")


@router.post("/text-to-speech")
async def text_to_speech(body: SpeechRequest, request: Request, services: ServicesDep):
    voice = body.reference_id or body.voice
    rate = services.tts.sample_rate
    if body.stream and wants_audio(request):
        # mp3 is encoded whole; streams are WAV or PCM
        return await speech_stream(services, body.text, "wav" if body.format == "mp3" else body.format, voice=voice)
    if body.stream:
        pcm_chunks = await started(services.tts.stream(body.text, voice=voice))

        async def events():
            yield sse_event({"type": "start", "format": "pcm", "sample_rate": rate, "channels": 1})
            total = 0
            try:
                async for chunk in pcm_chunks:
                    total += len(chunk)
                    yield sse_event({"type": "audio", "data": base64.b64encode(chunk).decode()})
                yield sse_event({"type": "done", "bytes": total, "duration": round(total / 2 / rate, 3)})
            except ServiceError as exc:  # after audio has flowed: the stream says so and ends
                yield sse_event({"type": "error", "code": exc.code, "message": str(exc)})
            finally:
                await pcm_chunks.aclose()

        return sse_response(events())
    audio, duration = await speech_bytes(services, body.text, body.format, voice=voice)
    if wants_audio(request):
        return Response(audio, media_type=AUDIO_MEDIA_TYPES[body.format], headers={"X-Sample-Rate": str(rate)})
    return {"audio_base64": base64.b64encode(audio).decode(), "format": body.format, "sample_rate": rate,
            "duration": round(duration, 3), "engine": services.tts.engine}
