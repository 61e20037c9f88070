"""LiveKit token endpoints: ``/v1/livekit/status``, ``/token``, ``/agent-token``."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import SettingsDep, keys_match, presented_key
from app.api.errors import APIError
from app.config.settings import Settings
from app.services.livekit_tokens import IssuedToken, TokenRequestError, agent_token, user_token

router = APIRouter(prefix="/livekit", tags=["livekit"])


class TokenRequest(BaseModel):
    room_name: str | None = None
    participant_identity: str | None = None
    participant_name: str | None = Field(None, max_length=128)
    metadata: str | dict | None = None
    ttl: int | None = None


class AgentTokenRequest(BaseModel):
    room_name: str
    participant_identity: str | None = None
    ttl: int | None = None


class TokenResponse(BaseModel):
    token: str
    url: str | None
    room_name: str
    participant_identity: str
    expires_at: datetime


def _require_configured(settings: Settings) -> None:
    if not settings.livekit_configured:
        raise APIError(503, "livekit_not_configured",
                       "LiveKit is not configured on the server: set LIVEKIT_URL, LIVEKIT_API_KEY and "
                       "LIVEKIT_API_SECRET")


def _respond(issue) -> TokenResponse:
    try:
        issued: IssuedToken = issue()
    except TokenRequestError as exc:
        raise APIError(422, "invalid_request", str(exc)) from exc
    return TokenResponse(**issued.__dict__)


@router.get("/status")
async def status(settings: SettingsDep):
    return {"configured": settings.livekit_configured, "url": settings.livekit_browser_url,
            "room_name": settings.livekit_room_name, "agent_name": settings.livekit_agent_name}


@router.post("/token", response_model=TokenResponse)
async def token(settings: SettingsDep, body: TokenRequest | None = None):
    _require_configured(settings)
    body = body or TokenRequest()
    return _respond(lambda: user_token(settings, room_name=body.room_name, identity=body.participant_identity,
                                       name=body.participant_name, metadata=body.metadata, ttl=body.ttl))


@router.post("/agent-token", response_model=TokenResponse)
async def agent_token_route(body: AgentTokenRequest, request: Request, settings: SettingsDep):
    _require_configured(settings)
    # Never anonymous: the API key when one is set, otherwise the LiveKit API secret itself.
    expected = (settings.api_key or settings.livekit_api_secret).get_secret_value()
    if not keys_match(presented_key(request), expected):
        raise APIError(401, "unauthorized", "agent tokens need the API key (or, with no API_KEY set, the "
                       "LiveKit API secret) as a Bearer token", {"WWW-Authenticate": "Bearer"})
    return _respond(lambda: agent_token(settings, room_name=body.room_name, identity=body.participant_identity,
                                        ttl=body.ttl))
