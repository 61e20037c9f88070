"""Refuse oversized request bodies with 413 before reading them: by Content-Length when given,
by counting as the body streams in otherwise."""

from __future__ import annotations

import json

from app.api.errors import APIError, error_body


class BodyTooLarge(APIError):
    def __init__(self, max_bytes: int):
        super().__init__(413, "payload_too_large", f"request body exceeds the {max_bytes // (1024 * 1024)} MiB limit")


class BodySizeLimitMiddleware:
    def __init__(self, app, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send) -> None:
        exc = BodyTooLarge(self.max_bytes)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": json.dumps(error_body(exc.code, exc.message)).encode()})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0
        exceeded = False
        replaced = False

        async def counting_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def guarded_send(message):
            # Body parsers wrap our exception in their own 400; whatever the app answers, it becomes the 413.
            nonlocal replaced
            if exceeded:
                if not replaced:
                    replaced = True
                    await self._refuse(send)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not replaced:
                await self._refuse(send)
