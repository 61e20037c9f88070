"""Conversation: the one-shot ``/v1/conversation/dialogue`` and the real-time ``WS /v1/conversation/ws``."""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, File, Form, UploadFile, WebSocket

from app.agents.sentences import speakable
from app.api.deps import ServicesDep, accept_voice_socket
from app.api.v1.speech import transcribe_upload
from app.audio.codec import encode_audio
from app.services.llm import ChatMessage, GenerationParams
from app.voice.socket_io import run_counted, voice_sessions_full
from app.voice.socket_protocol import ErrorEvent, event_json
from app.voice.websocket import SocketConversation

router = APIRouter(prefix="/conversation", tags=["conversation"])
ws_router = APIRouter(prefix="/conversation")


@router.post("/dialogue")
async def dialogue(services: ServicesDep, file: UploadFile = File(...), instructions: str | None = Form(None),
                   language: str | None = Form(None), voice: str | None = Form(None)):
    """A whole spoken question in, the transcript, the reply text and the reply audio (WAV) out.

    Not through the voice engine (``app.engine``): the engine is a live conversation (VAD, turn taking,
    barge-in, a history across turns, audio streamed as it is made), and this is one stateless request whose
    reply is returned whole. It uses the same services and speaks the same text (``speakable``)."""
    transcript = await transcribe_upload(services, file, language=language)
    system = instructions or services.settings.voice_instructions
    if not transcript.text:
        return {"transcript": "", "assistant_text": "", "audio_base64": "", "sample_rate": services.tts.sample_rate,
                "format": "wav", "language": transcript.language}
    messages = [ChatMessage("system", system), ChatMessage("user", transcript.text)]
    # The whole reply is returned at once, so it is written, then spoken: no streaming to overlap.
    started = time.perf_counter()
    text, _usage = await services.llm.chat(messages, GenerationParams(
        max_tokens=services.settings.voice_max_reply_tokens, temperature=services.settings.voice_temperature))
    written = time.perf_counter()
    pcm = await services.tts.synthesize(speakable(text), voice=voice) if speakable(text) else b""
    spoken = time.perf_counter()
    wav = encode_audio(pcm, services.tts.sample_rate, "wav")
    return {"transcript": transcript.text, "assistant_text": text,
            "audio_base64": base64.b64encode(wav).decode(), "sample_rate": services.tts.sample_rate,
            "format": "wav", "language": transcript.language,
            "timings": {"llm_ms": round((written - started) * 1000, 1), "tts_ms": round((spoken - written) * 1000, 1)}}


@ws_router.websocket("/ws")
async def conversation_ws(ws: WebSocket):
    services = ws.app.state.services
    if not await accept_voice_socket(ws):  # Origin and API key, checked before the handshake is accepted
        return
    if voice_sessions_full(ws.app.state):
        await ws.send_json(event_json(ErrorEvent(
            code="too_many_sessions", message="the server is at its voice session limit; try again shortly")))
        await ws.close(code=1013)
        return
    await run_counted(ws.app.state, SocketConversation(ws, services))
