"""LiveKit token endpoints, through the real HTTP app; every token is checked with LiveKit's own verifier.

Secure by default (issue 10): identities are made by the server, rooms stay under LIVEKIT_ROOM_NAME, tokens live
15 minutes unless asked (up to LIVEKIT_TOKEN_MAX_TTL), and agent tokens need ADMIN_API_KEY, never the user key.

The token routes need no models, so the app's lifespan (which loads them) is never started.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import jwt
import pytest
from livekit import api

from pydantic import ValidationError

from app.config.settings import Settings
from app.main import create_app

KEY = "devkey"
SECRET = "s3cret-" * 6
AGENT = "gemma-test-agent"
ADMIN = "admin-key-0123456789abcdef"
USER_KEY = "user-key-0123456789"


def livekit_settings(**overrides) -> Settings:
    values = dict(app_env="test", livekit_url="ws://localhost:7880", livekit_api_key=KEY,
                  livekit_api_secret=SECRET, livekit_agent_name=AGENT, livekit_room_name="voice-room",
                  rate_limit_enabled=False)
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def client_for(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://test")


@pytest.fixture
async def client():
    async with await client_for(livekit_settings()) as c:
        yield c


def verify(token: str) -> api.access_token.Claims:
    return api.TokenVerifier(KEY, SECRET).verify(token)


def lifetime(token: str) -> int:
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)
    return payload["exp"] - payload["nbf"]


async def test_status_says_how_to_connect(client):
    response = await client.get("/v1/livekit/status")
    assert response.status_code == 200
    assert response.json() == {"configured": True, "url": "ws://localhost:7880", "room_name": "voice-room",
                               "agent_name": AGENT}


async def test_public_url_is_what_browsers_get():
    async with await client_for(livekit_settings(livekit_public_url="wss://lk.example.com")) as c:
        assert (await c.get("/v1/livekit/status")).json()["url"] == "wss://lk.example.com"
        assert (await c.post("/v1/livekit/token", json={})).json()["url"] == "wss://lk.example.com"


async def test_user_token_is_scoped_to_one_room_and_dispatches_the_agent(client):
    response = await client.post("/v1/livekit/token", json={
        "room_name": "voice-room-kitchen", "participant_name": "Alice", "metadata": {"voice": "warm"}, "ttl": 3600})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["room_name"], body["url"]) == ("voice-room-kitchen", "ws://localhost:7880")
    assert body["participant_identity"].startswith("user-")

    claims = verify(body["token"])
    assert (claims.identity, claims.name) == (body["participant_identity"], "Alice")
    grants = claims.video
    assert grants.room == "voice-room-kitchen"
    assert grants.room_join and grants.can_publish and grants.can_subscribe and grants.can_publish_data
    assert not (grants.room_admin or grants.room_create or grants.room_list or grants.room_record or grants.agent)
    assert json.loads(claims.metadata) == {"voice": "warm"}
    [dispatch] = claims.room_config.agents
    assert dispatch.agent_name == AGENT
    assert json.loads(dispatch.metadata) == {"voice": "warm"}  # the agent reads it as its job metadata

    assert lifetime(body["token"]) == pytest.approx(3600, abs=2)
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    assert expires_at == pytest.approx(time.time() + 3600, abs=30)


async def test_without_a_room_name_each_request_gets_a_fresh_room_and_identity(client):
    first, second = [(await client.post("/v1/livekit/token")).json() for _ in range(2)]
    assert first["room_name"] != second["room_name"]
    assert first["participant_identity"] != second["participant_identity"]
    for body in (first, second):
        assert body["room_name"].startswith("voice-room-")
        claims = verify(body["token"])
        assert claims.video.room == body["room_name"]
        assert claims.identity == body["participant_identity"] and claims.identity
        assert claims.room_config.agents[0].agent_name == AGENT
        assert lifetime(body["token"]) == pytest.approx(900, abs=2)  # LIVEKIT_TOKEN_TTL's default: 15 minutes
    # fresh rooms can't be guessed: 96 random bits after the prefix
    assert len(first["room_name"]) == len("voice-room-") + 24


async def test_the_identity_is_always_made_by_the_server(client):
    """Two callers naming the same room never share an identity, and nobody can choose one (so nobody can take
    over another participant's identity and get them kicked out)."""
    refused = await client.post("/v1/livekit/token", json={"room_name": "voice-room-shared",
                                                            "participant_identity": "alice"})
    assert refused.status_code == 422
    assert "participant_name" in refused.json()["error"]["message"]
    first, second = [(await client.post("/v1/livekit/token", json={"room_name": "voice-room-shared",
                                                                    "participant_name": "Alice"})).json()
                     for _ in range(2)]
    assert first["room_name"] == second["room_name"] == "voice-room-shared"  # joining a named room: explicit
    identities = {verify(b["token"]).identity for b in (first, second)}
    assert len(identities) == 2 and all(i.startswith("user-") and i != "Alice" for i in identities)


@pytest.mark.parametrize("room", ["kitchen", "voice-room", "voice-room-", "other-voice-room-x", "voice-roomy-x"])
async def test_rooms_outside_the_configured_prefix_are_refused(client, room):
    response = await client.post("/v1/livekit/token", json={"room_name": room})
    assert response.status_code == 422, response.text
    assert "voice-room-" in response.json()["error"]["message"]


async def test_ttl_default_and_maximum_come_from_the_settings():
    async with await client_for(livekit_settings(livekit_token_ttl=120, livekit_token_max_ttl=600)) as c:
        default = (await c.post("/v1/livekit/token")).json()
        assert lifetime(default["token"]) == pytest.approx(120, abs=2)
        asked = (await c.post("/v1/livekit/token", json={"ttl": 600})).json()
        assert lifetime(asked["token"]) == pytest.approx(600, abs=2)
        too_long = await c.post("/v1/livekit/token", json={"ttl": 601})
        assert too_long.status_code == 422 and "600" in too_long.json()["error"]["message"]
    with pytest.raises(ValidationError, match="LIVEKIT_TOKEN_TTL"):
        livekit_settings(livekit_token_ttl=7200)  # above the default maximum of 3600


@pytest.mark.parametrize("body", [
    {"room_name": "voice-room-no spaces allowed"},
    {"room_name": "voice-room-" + "x" * 129},
    {"participant_identity": "bad/identity"},
    {"participant_identity": "alice"},
    {"participant_name": "n" * 129},
    {"participant_name": "bad\nname"},
    {"ttl": 10},
    {"ttl": 3601},
    {"ttl": 30 * 86400},
    {"metadata": "m" * 5000},
])
async def test_bad_names_and_ttls_are_refused(client, body):
    response = await client.post("/v1/livekit/token", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


async def test_without_livekit_settings_the_routes_say_so():
    async with await client_for(Settings(_env_file=None, app_env="test")) as c:
        assert (await c.get("/v1/livekit/status")).json()["configured"] is False
        for path, body in (("/v1/livekit/token", {}), ("/v1/livekit/agent-token", {"room_name": "r"})):
            response = await c.post(path, json=body, headers={"Authorization": "Bearer anything"})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "livekit_not_configured"
            assert "LIVEKIT_URL" in response.json()["error"]["message"]


async def test_agent_token_is_refused_without_an_admin_key(client):
    """No ADMIN_API_KEY set: agent tokens are off, whatever is presented (the LiveKit secret included)."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {SECRET}"}, {"X-API-Key": KEY}):
        response = await client.post("/v1/livekit/agent-token", json={"room_name": "kitchen"}, headers=headers)
        assert response.status_code == 403, headers
        assert "ADMIN_API_KEY" in response.json()["error"]["message"]


async def test_agent_token_needs_the_admin_key_never_the_user_key():
    async with await client_for(livekit_settings(api_key=USER_KEY, admin_api_key=ADMIN)) as c:
        for headers in ({}, {"Authorization": f"Bearer {USER_KEY}"}, {"X-API-Key": USER_KEY},
                        {"Authorization": f"Bearer {SECRET}"}):
            response = await c.post("/v1/livekit/agent-token", json={"room_name": "kitchen"}, headers=headers)
            assert response.status_code == 401, headers
        # the user key still gets user tokens
        assert (await c.post("/v1/livekit/token", headers={"X-API-Key": USER_KEY})).status_code == 200

        accepted = await c.post("/v1/livekit/agent-token", json={"room_name": "kitchen", "ttl": 600},
                                headers={"Authorization": f"Bearer {ADMIN}"})
        assert accepted.status_code == 200, accepted.text
        claims = verify(accepted.json()["token"])
        assert claims.kind == "agent"
        assert claims.video.room == "kitchen" and claims.video.room_join and claims.video.agent
        assert not (claims.video.room_admin or claims.video.room_create or claims.video.room_list)
        assert claims.name == AGENT
        assert claims.identity.startswith(f"agent-{AGENT}-")
        assert lifetime(accepted.json()["token"]) == pytest.approx(600, abs=2)


async def test_agent_token_with_an_admin_key_and_no_user_key():
    async with await client_for(livekit_settings(admin_api_key=ADMIN)) as c:
        assert (await c.post("/v1/livekit/agent-token", json={"room_name": "kitchen"})).status_code == 401
        response = await c.post("/v1/livekit/agent-token", json={"room_name": "kitchen"},
                                headers={"X-API-Key": ADMIN})
        assert response.status_code == 200, response.text
        assert verify(response.json()["token"]).identity.startswith(f"agent-{AGENT}-")


def test_admin_key_must_differ_from_the_user_key():
    with pytest.raises(ValidationError, match="ADMIN_API_KEY must differ"):
        livekit_settings(api_key=USER_KEY, admin_api_key=USER_KEY)


async def test_agent_token_refuses_a_bad_room():
    async with await client_for(livekit_settings(admin_api_key=ADMIN)) as c:
        response = await c.post("/v1/livekit/agent-token", json={"room_name": "bad room"},
                                headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 422
