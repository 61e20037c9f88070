"""``WS /v1/realtime``: the OpenAI Realtime API over the one voice engine (``app.voice.realtime``).

The official SDKs connect with ``base_url=http://host:8000/v1`` (``client.realtime.connect(model=...)``). The
handshake is the voice WebSocket's (Origin and API key checked before accepting; ``Authorization: Bearer``
works), and a session counts against the same ``MAX_VOICE_SESSIONS`` as ``/v1/conversation/ws``.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, WebSocket

from app.api.deps import accept_voice_socket
from app.voice.realtime import RealtimeConversation, new_id, wants_beta
from app.voice.socket_io import run_counted, voice_sessions_full

ws_router = APIRouter()


@ws_router.websocket("/realtime")
async def realtime_ws(ws: WebSocket, model: str | None = None):
    services = ws.app.state.services
    if not await accept_voice_socket(ws, subprotocol="realtime"):
        return
    if voice_sessions_full(ws.app.state):  # every open voice session counts, whatever its transport
        await ws.send_text(json.dumps({"type": "error", "event_id": new_id("event"), "error": {
            "type": "server_error", "code": "too_many_sessions", "param": None, "event_id": None,
            "message": "the server is at its voice session limit; try again shortly"}}))
        await ws.close(code=1013)
        return
    await run_counted(ws.app.state, RealtimeConversation(ws, services, model=(model or "")[:100],
                                                         beta=wants_beta(ws)))
