"""Request dependencies: the shared services, settings, and the API key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from app.api.errors import APIError
from app.config.settings import Settings
from app.services.container import Services


def get_services(conn: HTTPConnection) -> Services:
    return conn.app.state.services


def get_settings_dep(conn: HTTPConnection) -> Settings:
    return conn.app.state.services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def presented_key(conn: HTTPConnection, *, allow_query: bool = False) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if conn.headers.get("x-api-key"):
        return conn.headers["x-api-key"].strip()
    if allow_query:  # browsers can't set headers on a WebSocket
        return conn.query_params.get("api_key")
    return None


def keys_match(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def api_key_ok(conn: HTTPConnection, settings: Settings, *, allow_query: bool = False) -> bool:
    if settings.api_key is None:
        return True
    return keys_match(presented_key(conn, allow_query=allow_query), settings.api_key.get_secret_value())


async def require_api_key(request: Request) -> None:
    if not api_key_ok(request, request.app.state.services.settings):
        raise APIError(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                       {"WWW-Authenticate": "Bearer"})
