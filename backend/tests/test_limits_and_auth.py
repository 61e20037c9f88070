"""API key, CORS, upload and text limits, and overload behaviour (a server with strict settings)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

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


async def test_websocket_requires_the_key(strict_server):
    async with websockets.connect(f"{strict_server.ws_url}/v1/conversation/ws") as ws:
        first = json.loads(await ws.recv())
        assert first["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1008
    async with websockets.connect(f"{strict_server.ws_url}/v1/conversation/ws?api_key={STRICT_KEY}") as ws:
        assert json.loads(await ws.recv())["type"] == "ready"


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
