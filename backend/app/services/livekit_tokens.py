"""LiveKit access tokens: user tokens scoped to one room that dispatch the agent, and agent tokens.

Secure by default (README "Security"):

- The participant identity is always made here (``user-<random>``), never taken from the caller, so nobody can
  impersonate another participant or kick them out by reusing their identity. A caller may set a display name.
- Rooms: without ``room_name`` every token gets a fresh, unguessable room ``<LIVEKIT_ROOM_NAME>-<random>``.
  Naming a room is the explicit way to join an existing one (e.g. a second device in the same conversation),
  and only rooms under that prefix can be named.
- Lifetime: ``LIVEKIT_TOKEN_TTL`` (15 minutes by default; a token is only needed to join), at most
  ``LIVEKIT_TOKEN_MAX_TTL`` when a caller asks for a ``ttl``.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from app.config.settings import Settings
from app.logging_redaction import register_secret

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")
MIN_TTL = 60


class TokenRequestError(ValueError):
    """A bad room name, identity or TTL (422)."""


@dataclass
class IssuedToken:
    token: str
    url: str | None
    room_name: str
    participant_identity: str
    expires_at: datetime


def agent_identity(agent_name: str, suffix: str) -> str:
    """An agent's identity in a room: ``agent-<LIVEKIT_AGENT_NAME>-<job id, or what the operator chose>``. The room
    keeper knows the agents of its name by that prefix."""
    return f"agent-{agent_name}-{suffix}"


def _check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise TokenRequestError(f"{kind} must be 1-128 characters of letters, digits and _ - . : @")
    return value


def _ttl(settings: Settings, ttl: int | None) -> timedelta:
    seconds = settings.livekit_token_ttl if ttl is None else ttl
    if not MIN_TTL <= seconds <= settings.livekit_token_max_ttl:
        raise TokenRequestError(f"ttl must be between {MIN_TTL} and {settings.livekit_token_max_ttl} seconds "
                                "(LIVEKIT_TOKEN_MAX_TTL)")
    return timedelta(seconds=seconds)


def _user_room(settings: Settings, room_name: str | None) -> str:
    prefix = f"{settings.livekit_room_name}-"
    if not room_name:
        return prefix + secrets.token_hex(12)  # a fresh, unguessable room (96 random bits)
    _check_name("room_name", room_name)
    if not room_name.startswith(prefix) or len(room_name) == len(prefix):
        raise TokenRequestError(f"room_name must start with '{prefix}' (rooms outside LIVEKIT_ROOM_NAME are not "
                                "handed out); leave it out for a fresh room")
    return room_name


def _builder(settings: Settings) -> api.AccessToken:
    secret = settings.livekit_api_secret.get_secret_value()
    register_secret(secret)  # also one set after start-up (a local LiveKit server's): never in a log line
    return api.AccessToken(settings.livekit_api_key, secret)


def user_token(settings: Settings, *, room_name: str | None = None, name: str | None = None,
               metadata: str | dict | None = None, ttl: int | None = None) -> IssuedToken:
    """A token for one room (join/publish/subscribe/data only) whose room configuration dispatches the agent.

    The identity is always generated here; ``name`` is only the display name."""
    room = _user_room(settings, room_name)
    identity = f"user-{secrets.token_hex(8)}"
    if name is not None and (not name.strip() or any(ord(c) < 32 for c in name)):
        raise TokenRequestError("participant_name must be non-blank text without control characters")
    lifetime = _ttl(settings, ttl)
    meta = json.dumps(metadata) if isinstance(metadata, dict) else (metadata or "")
    if len(meta) > 4096:
        raise TokenRequestError("metadata may be at most 4096 characters")
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True, room_admin=False, room_create=False, room_list=False)
    dispatch = RoomConfiguration(agents=[RoomAgentDispatch(agent_name=settings.livekit_agent_name, metadata=meta)])
    jwt = (_builder(settings).with_identity(identity).with_name(name or identity).with_metadata(meta)
           .with_ttl(lifetime).with_grants(grants).with_room_config(dispatch).to_jwt())
    return IssuedToken(token=jwt, url=settings.livekit_browser_url, room_name=room, participant_identity=identity,
                       expires_at=datetime.now(timezone.utc) + lifetime)


def agent_token(settings: Settings, *, room_name: str, identity: str | None = None,
                ttl: int | None = None) -> IssuedToken:
    """A token for an agent participant in one room (kind=agent, hidden from nobody, may publish).

    Only for the operator (ADMIN_API_KEY): the route checks that. The identity is always ``agent-...``."""
    room = _check_name("room_name", room_name)
    identity = agent_identity(settings.livekit_agent_name,
                              _check_name("participant_identity", identity) if identity else secrets.token_hex(4))
    lifetime = _ttl(settings, ttl)
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True, agent=True)
    jwt = (_builder(settings).with_identity(identity).with_name(settings.livekit_agent_name).with_kind("agent")
           .with_ttl(lifetime).with_grants(grants).to_jwt())
    return IssuedToken(token=jwt, url=settings.livekit_url, room_name=room, participant_identity=identity,
                       expires_at=datetime.now(timezone.utc) + lifetime)
