"""LiveKit endpoints: ``/v1/livekit/status``, ``/token``, ``/agent-token``, and the server's ``/webhook``.

``/token`` takes the user API key like every /v1 route; the identity it puts in the token is always made by the
server. ``/agent-token`` takes only ``ADMIN_API_KEY`` (never the user key) and is refused when none is set.
``/webhook`` takes no API key: LiveKit signs each call with its API secret, and the room keeper verifies it.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import SettingsDep, admin_key_ok
from app.api.errors import APIError
from app.config.settings import Settings
from app.services.livekit_tokens import IssuedToken, TokenRequestError, agent_token, user_token
from app.services.room_keeper import WebhookRefused

router = APIRouter(prefix="/livekit", tags=["livekit"])
webhook_router = APIRouter(prefix="/livekit", tags=["livekit"])


class TokenRequest(BaseModel):
    room_name: str | None = Field(None, description=(
        "Leave out for a fresh room of your own. Set it (it must start with LIVEKIT_ROOM_NAME + '-') only to "
        "join a room on purpose: anyone with the API key who knows the name can join it too."))
    participant_identity: str | None = Field(None, description=(
        "Not accepted: the server always makes the identity (a request that sets it gets 422). "
        "Use participant_name for a display name."))
    participant_name: str | None = Field(None, max_length=128, description="Display name shown to others.")
    metadata: str | dict | None = None
    ttl: int | None = Field(None, description="Seconds, 60 to LIVEKIT_TOKEN_MAX_TTL; default LIVEKIT_TOKEN_TTL.")


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
    if body.participant_identity is not None:
        raise APIError(422, "invalid_request", "participant_identity is assigned by the server; set "
                       "participant_name for a display name")
    return _respond(lambda: user_token(settings, room_name=body.room_name, name=body.participant_name,
                                       metadata=body.metadata, ttl=body.ttl))


@router.post("/agent-token", response_model=TokenResponse)
async def agent_token_route(body: AgentTokenRequest, request: Request, settings: SettingsDep):
    """A token for an agent participant. Needs ADMIN_API_KEY as a Bearer token (or X-API-Key); never the user key."""
    _require_configured(settings)
    if settings.admin_api_key is None:
        raise APIError(403, "forbidden", "agent tokens are disabled: set ADMIN_API_KEY on the server to enable them")
    if not admin_key_ok(request, settings):
        raise APIError(401, "unauthorized", "agent tokens need ADMIN_API_KEY (Authorization: Bearer <admin key>)",
                       {"WWW-Authenticate": "Bearer"})
    return _respond(lambda: agent_token(settings, room_name=body.room_name, identity=body.participant_identity,
                                        ttl=body.ttl))


@webhook_router.post("/webhook", include_in_schema=False)
async def webhook(request: Request):
    """LiveKit's webhooks (its ``webhook.urls``): unsigned, wrongly signed, stale and replayed calls are refused."""
    keeper = getattr(request.app.state, "room_keeper", None)
    if keeper is None:
        raise APIError(503, "livekit_not_configured", "no room keeper runs here (LiveKit is not configured, or "
                       "LIVEKIT_KEEPER is off)")
    body = (await request.body()).decode("utf-8", "replace")
    try:
        event = await keeper.receive(body, request.headers.get("Authorization"))
    except WebhookRefused as exc:
        raise APIError(exc.status, exc.code, str(exc)) from None
    return {"received": event.event}
