"""Request dependencies: the shared services, settings, the API key checks and the WebSocket handshake."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, WebSocket
from starlette.requests import HTTPConnection

from app.api.errors import APIError, error_response
from app.config.settings import Settings
from app.services.container import Services


def get_services(conn: HTTPConnection) -> Services:
    return conn.app.state.services


def get_settings_dep(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings  # the services' settings, or a copy pointing at a local LiveKit (app.main)


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


# The WebSocket subprotocol of the voice session. A browser can't set headers on a WebSocket, so it offers
# ["gemmavoice", "apikey.<key>"] (or "apikey-b64.<base64url of the key>" for a key with characters a
# subprotocol can't carry); the server answers "gemmavoice" and never echoes the key.
WS_SUBPROTOCOL = "gemmavoice"
KEY_PROTOCOL = "apikey."
KEY_PROTOCOL_B64 = "apikey-b64."


def _key_from_subprotocols(conn: HTTPConnection) -> str | None:
    for offered in conn.scope.get("subprotocols") or ():
        if offered.startswith(KEY_PROTOCOL):
            return offered[len(KEY_PROTOCOL):]
        if offered.startswith(KEY_PROTOCOL_B64):
            encoded = offered[len(KEY_PROTOCOL_B64):]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def presented_key(conn: HTTPConnection, *, allow_query: bool = False) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if conn.headers.get("x-api-key"):
        return conn.headers["x-api-key"].strip()
    if conn.scope["type"] == "websocket":
        from_protocol = _key_from_subprotocols(conn)
        if from_protocol is not None:
            return from_protocol
    if allow_query:  # old WebSocket clients; redacted from every log line (app.logging_redaction)
        return conn.query_params.get("api_key")
    return None


def keys_match(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def api_key_ok(conn: HTTPConnection, settings: Settings, *, allow_query: bool = False) -> bool:
    """The user key (or the admin key, which may do anything the user key may); open when no API_KEY is set."""
    if settings.api_key is None:
        return True
    presented = presented_key(conn, allow_query=allow_query)
    ok = keys_match(presented, settings.api_key.get_secret_value())
    if settings.admin_api_key is not None:
        ok |= keys_match(presented, settings.admin_api_key.get_secret_value())
    return ok


def admin_key_ok(conn: HTTPConnection, settings: Settings) -> bool:
    """Only ADMIN_API_KEY; never the user key, and nobody when no admin key is set."""
    if settings.admin_api_key is None:
        return False
    return keys_match(presented_key(conn), settings.admin_api_key.get_secret_value())


async def require_api_key(request: Request) -> None:
    if not api_key_ok(request, request.app.state.services.settings):
        raise APIError(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                       {"WWW-Authenticate": "Bearer"})


def origin_allowed(conn: HTTPConnection, settings: Settings) -> bool:
    """A browser's Origin must be in CORS_ORIGINS or be this server itself (the web client `make run` serves).

    Clients that send no Origin (not browsers) pass; they still need the key."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    allowed = {o.rstrip("/").lower() for o in settings.cors_origin_list}
    normalized = origin.strip().rstrip("/").lower()
    if "*" in allowed or normalized in allowed:
        return True
    parts = urlsplit(normalized)
    host = conn.headers.get("host", "").strip().lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if parts.netloc == host:
        return True
    # A reverse proxy that passes only the host name (nginx's `$host`, as in frontend/nginx.conf): same host.
    return ":" not in host.rsplit("]", 1)[-1] and parts.hostname == host.strip("[]")


async def refuse_websocket(ws: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake with an HTTP error (the socket is never accepted)."""
    if "websocket.http.response" in (ws.scope.get("extensions") or {}):
        await ws.send_denial_response(error_response(status, code, message))
    else:  # a server without the denial-response extension: closing before accept answers 403
        await ws.close(code=1008)


async def accept_voice_socket(ws: WebSocket, *, subprotocol: str = WS_SUBPROTOCOL) -> bool:
    """The voice WebSocket's handshake: Origin and API key are checked before accepting.

    Refused (HTTP 403, never accepted): an Origin outside CORS_ORIGINS (and not this server), or a missing or
    wrong key when API_KEY is set. The key may come as the ``apikey.<key>`` subprotocol (browsers), an
    ``Authorization: Bearer`` / ``X-API-Key`` header, or the legacy ``api_key`` query parameter. Accepted with
    the ``gemmavoice`` subprotocol (``/v1/realtime``: ``realtime``) when the client offered it. Returns whether the
    socket was accepted."""
    settings: Settings = ws.app.state.services.settings
    if not origin_allowed(ws, settings):
        await refuse_websocket(ws, 403, "origin_not_allowed",
                               "this Origin may not open a voice session: add it to CORS_ORIGINS on the server")
        return False
    if not api_key_ok(ws, settings, allow_query=True):
        await refuse_websocket(ws, 403, "unauthorized",
                               "a valid API key is required (subprotocol apikey.<key>, Authorization: Bearer, "
                               "or X-API-Key)")
        return False
    offered = ws.scope.get("subprotocols") or ()
    await ws.accept(subprotocol=subprotocol if subprotocol in offered else None)
    return True
