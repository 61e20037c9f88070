"""Conversation: the one-shot ``/v1/conversation/dialogue`` and the real-time ``WS /v1/conversation/ws``."""

from __future__ import annotations

import base64

from fastapi import APIRouter, File, Form, UploadFile, WebSocket

from app.api.deps import ServicesDep, accept_voice_socket
from app.api.v1.speech import transcribe_upload
from app.audio.codec import encode_audio
from app.metrics import VOICE_SESSIONS
from app.services.llm import ChatMessage, GenerationParams
from app.voice.reply import AudioChunk, SpokenReply
from app.voice.session import VoiceSession

router = APIRouter(prefix="/conversation", tags=["conversation"])
ws_router = APIRouter(prefix="/conversation")


@router.post("/dialogue")
async def dialogue(services: ServicesDep, file: UploadFile = File(...), instructions: str | None = Form(None),
                   language: str | None = Form(None), voice: str | None = Form(None)):
    """A whole spoken question in, the transcript, the reply text and the reply audio (WAV) out."""
    transcript = await transcribe_upload(services, file, language=language)
    system = instructions or services.settings.voice_instructions
    if not transcript.text:
        return {"transcript": "", "assistant_text": "", "audio_base64": "", "sample_rate": services.tts.sample_rate,
                "format": "wav", "language": transcript.language}
    messages = [ChatMessage("system", system), ChatMessage("user", transcript.text)]
    reply = SpokenReply(services, messages, GenerationParams(max_tokens=services.settings.voice_max_reply_tokens),
                        voice=voice)
    pcm = b"".join([event.pcm async for event in reply.events() if isinstance(event, AudioChunk)])
    wav = encode_audio(pcm, services.tts.sample_rate, "wav")
    return {"transcript": transcript.text, "assistant_text": reply.text.strip(),
            "audio_base64": base64.b64encode(wav).decode(), "sample_rate": services.tts.sample_rate,
            "format": "wav", "language": transcript.language, "timings": reply.timings.as_ms()}


@ws_router.websocket("/ws")
async def conversation_ws(ws: WebSocket):
    services = ws.app.state.services
    if not await accept_voice_socket(ws):  # Origin and API key, checked before the handshake is accepted
        return
    open_sessions = getattr(ws.app.state, "voice_sessions", 0)
    if open_sessions >= services.settings.max_voice_sessions:
        await ws.send_json({"type": "error", "code": "too_many_sessions",
                            "message": "the server is at its voice session limit; try again shortly"})
        await ws.close(code=1013)
        return
    ws.app.state.voice_sessions = open_sessions + 1
    VOICE_SESSIONS.inc()
    try:
        await VoiceSession(ws, services).run()
    finally:
        ws.app.state.voice_sessions -= 1
        VOICE_SESSIONS.dec()
