"""Per-client rate limits on the costly routes: 429 with ``Retry-After`` when a client goes over.

The counting is the ``limits`` library's moving window in this process's memory; the client is the remote
address (behind a reverse proxy, run uvicorn with ``--proxy-headers --forwarded-allow-ips`` so it is the real
one). Groups and their settings:

===================  ==============================  =====================================================
group                setting                         routes
===================  ==============================  =====================================================
tokens               ``RATE_LIMIT_TOKENS``           POST /v1/livekit/token, /v1/livekit/agent-token
generation           ``RATE_LIMIT_GENERATION``       /v1/generate, /v1/generate_stream, /v1/chat/completions
transcription        ``RATE_LIMIT_TRANSCRIPTION``    /v1/speech-to-text, /v1/audio/transcriptions,
                                                     /v1/conversation/dialogue
speech               ``RATE_LIMIT_SPEECH``           /v1/text-to-speech, /v1/audio/speech
voice_sessions       ``RATE_LIMIT_VOICE_SESSIONS``   new WebSocket sessions on /v1/conversation/ws,
                                                     /v1/realtime
===================  ==============================  =====================================================

A refused WebSocket handshake gets an HTTP 429 (not an accepted-then-closed socket).

Requests that carry ``ADMIN_API_KEY`` are the operator's own services (light agent workers and other GemmaVoice
processes using this one as their model server: one address, many conversations) and are not counted.
"""

from __future__ import annotations

import json
import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from starlette.requests import HTTPConnection

from app.api.deps import admin_key_ok
from app.api.errors import error_body
from app.config.settings import Settings

ROUTE_GROUPS: dict[tuple[str, str], str] = {
    ("http", "/v1/livekit/token"): "tokens",
    ("http", "/v1/livekit/agent-token"): "tokens",
    ("http", "/v1/generate"): "generation",
    ("http", "/v1/generate_stream"): "generation",
    ("http", "/v1/chat/completions"): "generation",
    ("http", "/v1/speech-to-text"): "transcription",
    ("http", "/v1/audio/transcriptions"): "transcription",
    ("http", "/v1/conversation/dialogue"): "transcription",
    ("http", "/v1/text-to-speech"): "speech",
    ("http", "/v1/audio/speech"): "speech",
    ("websocket", "/v1/conversation/ws"): "voice_sessions",
    ("websocket", "/v1/realtime"): "voice_sessions",
}
GROUP_SETTINGS = {
    "tokens": "rate_limit_tokens",
    "generation": "rate_limit_generation",
    "transcription": "rate_limit_transcription",
    "speech": "rate_limit_speech",
    "voice_sessions": "rate_limit_voice_sessions",
}


class RateLimiter:
    """The limits of each group, counted per (group, client)."""

    def __init__(self, settings: Settings):
        self.limits: dict[str, list[RateLimitItem]] = {}
        if settings.rate_limit_enabled:
            for group, name in GROUP_SETTINGS.items():
                value = getattr(settings, name)
                if value:
                    self.limits[group] = parse_many(value)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def group_of(self, scope) -> str | None:
        if scope["type"] == "http" and scope.get("method") != "POST":
            return None
        group = ROUTE_GROUPS.get((scope["type"], scope["path"].rstrip("/") or "/"))
        return group if group in self.limits else None

    def hit(self, group: str, client: str) -> float | None:
        """Count one request; None when allowed, else the seconds until the client may try again."""
        items = self.limits[group]
        blocked = [item for item in items if not self._limiter.test(item, group, client)]
        if blocked:
            now = time.time()
            resets = [self._limiter.get_window_stats(item, group, client).reset_time for item in blocked]
            return max(1.0, max(resets) - now)
        for item in items:
            self._limiter.hit(item, group, client)
        return None


def client_of(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class RateLimitMiddleware:
    def __init__(self, app, *, settings: Settings):
        self.app = app
        self.limiter = RateLimiter(settings)
        self.settings = settings

    async def __call__(self, scope, receive, send):
        group = self.limiter.group_of(scope) if scope["type"] in ("http", "websocket") else None
        if group is None or admin_key_ok(HTTPConnection(scope), self.settings):
            return await self.app(scope, receive, send)
        wait = self.limiter.hit(group, client_of(scope))
        if wait is None:
            return await self.app(scope, receive, send)
        retry_after = str(math.ceil(wait))
        body = json.dumps(error_body("rate_limited", f"too many requests ({group}): "
                                     f"try again in {retry_after} s")).encode()
        headers = [(b"content-type", b"application/json"), (b"retry-after", retry_after.encode()),
                   (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # WebSocket: refuse the handshake itself.
        await receive()  # websocket.connect
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # servers without the denial-response extension answer 403
            await send({"type": "websocket.close", "code": 1013})
