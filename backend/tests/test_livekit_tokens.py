"""LiveKit token endpoints, through the real HTTP app; every token is checked with LiveKit's own verifier.

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

from app.config.settings import Settings
from app.main import create_app

KEY = "devkey"
SECRET = "s3cret-" * 6
AGENT = "gemma-test-agent"


def livekit_settings(**overrides) -> Settings:
    values = dict(app_env="test", livekit_url="ws://localhost:7880", livekit_api_key=KEY,
                  livekit_api_secret=SECRET, livekit_agent_name=AGENT, livekit_room_name="voice-room")
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
        "room_name": "kitchen", "participant_identity": "alice", "participant_name": "Alice",
        "metadata": {"voice": "warm"}, "ttl": 3600})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["room_name"], body["participant_identity"], body["url"]) == ("kitchen", "alice", "ws://localhost:7880")

    claims = verify(body["token"])
    assert (claims.identity, claims.name) == ("alice", "Alice")
    grants = claims.video
    assert grants.room == "kitchen"
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
        assert lifetime(body["token"]) == pytest.approx(86400, abs=2)  # LIVEKIT_TOKEN_TTL's default


@pytest.mark.parametrize("body", [
    {"room_name": "no spaces allowed"},
    {"room_name": "x" * 129},
    {"participant_identity": "bad/identity"},
    {"participant_name": "n" * 129},
    {"ttl": 10},
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


async def test_agent_token_needs_the_livekit_secret_when_no_api_key_is_set(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY}):
        response = await client.post("/v1/livekit/agent-token", json={"room_name": "kitchen"}, headers=headers)
        assert response.status_code == 401, headers

    response = await client.post("/v1/livekit/agent-token", json={"room_name": "kitchen"},
                                 headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200, response.text
    claims = verify(response.json()["token"])
    assert claims.kind == "agent"
    assert claims.video.room == "kitchen" and claims.video.room_join and claims.video.agent
    assert not (claims.video.room_admin or claims.video.room_create or claims.video.room_list)
    assert claims.name == AGENT
    assert claims.identity.startswith(f"agent-{AGENT}-")


async def test_agent_token_takes_the_api_key_when_one_is_set():
    async with await client_for(livekit_settings(api_key="api-key-123")) as c:
        refused = await c.post("/v1/livekit/agent-token", json={"room_name": "kitchen"},
                               headers={"Authorization": f"Bearer {SECRET}"})
        assert refused.status_code == 401
        accepted = await c.post("/v1/livekit/agent-token", json={"room_name": "kitchen", "ttl": 600},
                                headers={"X-API-Key": "api-key-123"})
        assert accepted.status_code == 200, accepted.text
        assert verify(accepted.json()["token"]).video.room == "kitchen"
        assert lifetime(accepted.json()["token"]) == pytest.approx(600, abs=2)


async def test_agent_token_refuses_a_bad_room():
    async with await client_for(livekit_settings()) as c:
        response = await c.post("/v1/livekit/agent-token", json={"room_name": "bad room"},
                                headers={"Authorization": f"Bearer {SECRET}"})
        assert response.status_code == 422
