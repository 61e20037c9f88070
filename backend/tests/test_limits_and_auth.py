"""API key (REST and the WebSocket handshake), Origin and CORS, upload and text limits, and overload behaviour
(a server with strict settings)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from helpers import STRICT_KEY


@pytest.fixture(scope="module")
def strict(strict_server):
    with httpx.Client(base_url=strict_server.url, timeout=120) as c:
        yield c


AUTH = {"Authorization": f"Bearer {STRICT_KEY}"}


def test_v1_requires_the_key(strict):
    response = strict.post("/v1/generate", json={"prompt": "hi", "max_tokens": 2})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert strict.post("/v1/generate", json={"prompt": "hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize("headers", [AUTH, {"X-API-Key": STRICT_KEY}])
def test_key_accepted_as_bearer_or_header(strict, headers):
    assert strict.post("/v1/generate", json={"prompt": "hi", "max_tokens": 2}, headers=headers).status_code == 200


def test_health_stays_open(strict):
    assert strict.get("/health/ready").status_code == 200
    assert strict.get("/metrics").status_code == 200


async def test_websocket_handshake_is_refused_without_the_key(strict_server):
    """Refused before accept (HTTP 403), not accepted and then closed."""
    url = f"{strict_server.ws_url}/v1/conversation/ws"
    for options in ({}, {"subprotocols": ["gemmavoice", "apikey.wrong-key"]},
                    {"additional_headers": {"Authorization": "Bearer wrong"}}, {"subprotocols": ["gemmavoice"]}):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, **options):
                pass
        assert refused.value.response.status_code == 403, options
        assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"
    with pytest.raises(InvalidStatus):
        async with websockets.connect(f"{url}?api_key=wrong"):
            pass


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("options, path", [
    ({"subprotocols": ["gemmavoice", f"apikey.{STRICT_KEY}"]}, ""),  # what the web client sends
    ({"subprotocols": ["gemmavoice", f"apikey-b64.{b64(STRICT_KEY)}"]}, ""),
    ({"additional_headers": {"Authorization": f"Bearer {STRICT_KEY}"}}, ""),
    ({"additional_headers": {"X-API-Key": STRICT_KEY}}, ""),
    ({}, f"?api_key={STRICT_KEY}"),  # old clients: still accepted, redacted from the logs (test_security.py)
], ids=["subprotocol", "subprotocol-b64", "bearer", "x-api-key", "legacy-query"])
async def test_websocket_accepts_the_key(strict_server, options, path):
    async with websockets.connect(f"{strict_server.ws_url}/v1/conversation/ws{path}", **options) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        offered = options.get("subprotocols")
        assert ws.subprotocol == ("gemmavoice" if offered else None)
        assert STRICT_KEY not in str(ws.response.headers)  # the key is never echoed


@pytest.mark.parametrize("origin, allowed", [
    ("http://evil.example", False),
    ("null", False),
    ("http://127.0.0.1:5173", True),  # in CORS_ORIGINS
    ("same", True),  # the web client served by this server (`make run`)
])
async def test_websocket_checks_the_origin(strict_server, origin, allowed):
    if origin == "same":
        origin = strict_server.url
    url = f"{strict_server.ws_url}/v1/conversation/ws"
    protocols = ["gemmavoice", f"apikey.{STRICT_KEY}"]
    if allowed:
        async with websockets.connect(url, origin=origin, subprotocols=protocols) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
    else:
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, origin=origin, subprotocols=protocols):
                pass
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body)["error"]["code"] == "origin_not_allowed"


def test_cors_allow_list(client):
    ok = client.options("/v1/generate", headers={"Origin": "http://allowed.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert ok.headers.get("access-control-allow-origin") == "http://allowed.example"
    assert "access-control-allow-credentials" not in ok.headers
    bad = client.options("/v1/generate", headers={"Origin": "http://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in bad.headers


def test_upload_over_limit_is_refused_by_content_length(strict):
    response = strict.post("/v1/speech-to-text", files={"file": ("big.wav", b"RIFF" + b"\0" * (2 * 1024 * 1024))},
                           headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_upload_over_limit_is_refused_while_streaming(strict_server):
    sent = 0

    def body():
        nonlocal sent
        yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\nRIFF")
        for _ in range(64):  # 4 MiB offered in 64 KiB pieces, no Content-Length
            sent += 65536
            yield b"\0" * 65536

    with httpx.Client(timeout=60) as c:
        response = c.post(f"{strict_server.url}/v1/speech-to-text", content=body(),
                          headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413, response.text


def test_text_limit(strict):
    response = strict.post("/v1/text-to-speech", json={"text": "word " * 100}, headers=AUTH)
    assert response.status_code == 400
    assert "200 characters" in response.json()["error"]["message"]


async def test_overload_gets_503_with_retry_after(strict_server):
    """One instance, one queue slot: of several simultaneous long requests, some must be refused."""
    async with httpx.AsyncClient(base_url=strict_server.url, headers=AUTH, timeout=120) as c:
        responses = await asyncio.gather(*(
            c.post("/v1/generate", json={"prompt": "Tell me a long story.", "max_tokens": 60}) for _ in range(5)))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "overloaded"
    # the server is fine afterwards
    assert httpx.post(f"{strict_server.url}/v1/generate", json={"prompt": "hi", "max_tokens": 2},
                      headers=AUTH, timeout=60).status_code == 200
