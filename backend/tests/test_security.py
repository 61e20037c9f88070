"""Secure by default (issue 10): start-up refusals, secrets kept out of the server's own logs, health without
details, and per-client rate limits. Real uvicorn servers: the `make run` command line in a subprocess where the
start-up or the log output is what is tested, in-process servers on loopback otherwise.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets
from helpers import STRICT_KEY, free_port, until
from websockets.exceptions import InvalidStatus

from app.config.settings import Settings
from app.logging_redaction import install_log_redaction, redact, register_secret
from app.main import create_app
from app.startup_checks import bound_host, is_loopback, startup_problem

BACKEND = Path(__file__).resolve().parents[1]
SECRET_ENV = ("API_KEY", "ADMIN_API_KEY", "APP_ENV", "HOST", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


# --- the real command line: `uvicorn app.main:app --host ... --port ...` ----------------------------------------


@contextmanager
def uvicorn_process(host: str, env: dict[str, str], log_path: Path):
    """`python -m uvicorn app.main:app` as `make run` starts it, output (stdout and stderr) to log_path."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    child_env.update({"LOCAL_TTS_VARIATION": "0", "PYTHONUNBUFFERED": "1", **env})
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", host, "--port", str(port),
                                 "--log-level", "info"], cwd=BACKEND, env=child_env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_exit_or_live(proc: subprocess.Popen, port: int, timeout: float = 60) -> bool:
    """True once /health/live answers; False when the process exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server neither served nor exited")


@pytest.mark.parametrize("env, host, expected", [
    ({"APP_ENV": "production"}, "127.0.0.1", "refusing to start in production without an API key"),
    ({"APP_ENV": "development"}, "0.0.0.0", "refusing to serve on 0.0.0.0 without an API key"),
], ids=["production-without-key", "development-on-all-interfaces-without-key"])
def test_server_refuses_to_start_open_to_others(tmp_path, env, host, expected):
    log_path = tmp_path / "server.log"
    with uvicorn_process(host, env, log_path) as (proc, port):
        assert not wait_for_exit_or_live(proc, port), "the server started"
        assert proc.wait(timeout=10) != 0
    output = log_path.read_text()
    assert expected in output, output
    # the message says how to make a key
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in output
    assert "Application startup failed" in output


def test_startup_rules():
    dev, prod = Settings(_env_file=None, app_env="development"), Settings(_env_file=None, app_env="production")
    keyed = Settings(_env_file=None, app_env="production", api_key="a-real-key-0123456789")
    assert startup_problem(dev, "127.0.0.1") is None and startup_problem(dev, "::1") is None
    assert startup_problem(dev, "localhost") is None and startup_problem(dev, None) is None  # unix socket
    for host in ("0.0.0.0", "::", "192.168.1.5", "10.0.0.1"):
        assert "without an API key" in startup_problem(dev, host)
    assert "production" in startup_problem(prod, "127.0.0.1")
    assert startup_problem(keyed, "0.0.0.0") is None
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and not is_loopback("0.0.0.0")


def test_the_bound_host_is_read_from_uvicorns_command_line(monkeypatch):
    """`uvicorn ...` and `python -m uvicorn ...` (and the workers they spawn, which inherit sys.argv) bind what their
    command line says, parsed by uvicorn's own click command; anything else binds HOST."""
    monkeypatch.delenv("UVICORN_HOST", raising=False)
    settings = Settings(_env_file=None, host="127.0.0.1")
    uvicorn_main = str(Path(uvicorn.__file__).with_name("__main__.py"))
    assert bound_host(settings, ["/srv/.venv/bin/uvicorn", "app.main:app", "--host", "0.0.0.0"]) == "0.0.0.0"
    assert bound_host(settings, [uvicorn_main, "app.main:app", "--port", "80", "--host=::"]) == "::"
    assert bound_host(settings, [uvicorn_main, "app.main:app"]) == "127.0.0.1"  # uvicorn's default
    assert bound_host(settings, [uvicorn_main, "app.main:app", "--uds", "/tmp/api.sock"]) is None
    assert bound_host(settings, [uvicorn_main, "app.main:app", "--fd", "3"]) is None
    monkeypatch.setenv("UVICORN_HOST", "0.0.0.0")  # uvicorn's command line reads it too
    assert bound_host(settings, ["/usr/local/bin/uvicorn", "app.main:app"]) == "0.0.0.0"
    # python -m app passes HOST to uvicorn.run; other programs bind what HOST says
    assert bound_host(settings, ["/srv/backend/app/__main__.py"]) == "127.0.0.1"
    assert bound_host(Settings(_env_file=None, host="0.0.0.0"), ["/usr/bin/gunicorn", "app.main:app"]) == "0.0.0.0"


def test_key_never_reaches_the_server_log(tmp_path):
    """With a key, binding all interfaces is allowed; the key, given the old way in the WebSocket's query or as a
    wrong guess, is in none of the server's own log lines (uvicorn's access log included)."""
    key = "sk-live-9f8e7d6c5b4a3210zyx"
    wrong = "guess-0123456789abcdef"
    log_path = tmp_path / "server.log"
    with uvicorn_process("0.0.0.0", {"API_KEY": key, "APP_ENV": "development"}, log_path) as (proc, port):
        assert wait_for_exit_or_live(proc, port), log_path.read_text()
        base = f"127.0.0.1:{port}"
        # The probes below are judged by the log lines they cause: wait for the models first, so that no
        # line of the loading models' falls among them.
        deadline = time.monotonic() + 180
        while httpx.get(f"http://{base}/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "models did not load"
            time.sleep(0.2)

        async def sockets():
            async with websockets.connect(f"ws://{base}/v1/conversation/ws?api_key={key}") as ws:
                assert ws.response.status_code == 101
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(f"ws://{base}/v1/conversation/ws?api_key={wrong}"):
                    pass
            assert refused.value.response.status_code == 403
            async with websockets.connect(f"ws://{base}/v1/conversation/ws",
                                          subprotocols=["gemmavoice", f"apikey.{key}"]) as ws:
                assert ws.subprotocol == "gemmavoice"

        asyncio.run(sockets())
        assert httpx.get(f"http://{base}/health/live", params={"api_key": key}).status_code == 200
        assert httpx.get(f"http://{base}/health", headers={"Authorization": f"Bearer {wrong}"}).status_code == 200
        assert httpx.post(f"http://{base}/v1/generate", params={"token": key},
                          headers={"Authorization": f"Bearer {wrong}"}, json={"prompt": "hi"}).status_code == 401
        # The access log lines are out once the last request's is (they are written in order).
        asyncio.run(until(lambda: "/v1/generate?token=" in log_path.read_text(), 10, "the last request's log line"))
    output = log_path.read_text()
    assert "[accepted]" in output and "/v1/conversation/ws?api_key=***" in output, output  # the lines are there
    assert "/health/live?api_key=***" in output, output
    assert key not in output and wrong not in output, output


def test_redaction_covers_tracebacks_and_any_handler():
    secret = "tb-secret-abcdefgh123"
    install_log_redaction(Settings(_env_file=None, app_env="test", admin_api_key=secret))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError(f"upstream refused key {secret}")
        except RuntimeError:
            logger.exception("call with Authorization: Bearer %s failed (url %s)", "abc.def-ghi",
                             httpx.URL(f"http://x/y?api_key={secret}&x=1"))
        logger.warning("subprotocols %s", ["gemmavoice", "apikey.some-key-value"])
        logger.warning({"X-API-Key": "another-key-value"})
        logger.info("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ issued")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "Traceback" in output and "RuntimeError: upstream refused key ***" in output, output
    for leaked in (secret, "abc.def-ghi", "some-key-value", "another-key-value", "eyJzdWIiOiJ4In0"):
        assert leaked not in output, output
    assert "Bearer ***" in output and "api_key=***&x=1" in output


def test_redact_leaves_ordinary_text_alone():
    register_secret("registered-secret-value")
    assert redact("GET /v1/models 200 max_tokens=5") == "GET /v1/models 200 max_tokens=5"
    assert redact("a registered-secret-value b") == "a *** b"
    assert redact("/ws?x=1&api_key=k%2B1&y=2") == "/ws?x=1&api_key=***&y=2"


# --- health: readiness for all, details with the key -----------------------------------------------------------


def test_health_says_what_is_ready_not_where_files_live(strict_server):
    base = strict_server.url
    for path in ("/health", "/health/ready", "/health/llm", "/health/stt", "/health/tts"):
        public = httpx.get(base + path)
        assert public.status_code == 200
        text = public.text
        assert "/" not in text.replace("/health", ""), f"{path}: {text}"  # no file path, no URL
        assert ".gguf" not in text and "path" not in text
    components = httpx.get(base + "/health/ready").json()["components"]
    assert components["llm"] == {"state": "ready", "ready": True}

    detailed = httpx.get(base + "/health", headers={"Authorization": f"Bearer {STRICT_KEY}"}).json()
    assert detailed["components"]["llm"]["path"].endswith(".gguf")
    assert "model" in httpx.get(base + "/health/stt", headers={"X-API-Key": STRICT_KEY}).json()
    assert "path" not in httpx.get(base + "/health/llm", headers={"X-API-Key": "wrong"}).json()


# --- rate limits -------------------------------------------------------------------------------------------------


@contextmanager
def bare_server(**overrides):
    """A real uvicorn server on loopback whose models are never loaded (lifespan off): enough for the limiter,
    which answers before any route runs."""
    values = dict(app_env="test", ready_wait_seconds=0, livekit_url="ws://localhost:7880",
                  livekit_api_key="devkey", livekit_api_secret="s3cret-" * 6)
    values.update(overrides)
    app = create_app(Settings(_env_file=None, **values))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def client_from(address: str) -> httpx.Client:
    """A client whose connections come from another loopback address: another client to the limiter."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_rate_limit_per_client_with_retry_after():
    with bare_server(rate_limit_tokens="3/minute") as url, client_from("127.0.0.1") as one, \
            client_from("127.0.0.2") as two:
        codes = [one.post(f"{url}/v1/livekit/token").status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        refused = one.post(f"{url}/v1/livekit/token")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert one.post(f"{url}/v1/livekit/agent-token", json={"room_name": "r"}).status_code == 429  # same group
        # another client is not affected, and cheap routes are never limited
        assert two.post(f"{url}/v1/livekit/token").status_code == 200
        assert one.get(f"{url}/v1/livekit/status").status_code == 200
        assert one.get(f"{url}/health/live").status_code == 200


def test_rate_limits_cover_the_costly_groups_and_can_be_tuned_off():
    limits = dict(rate_limit_generation="2/minute", rate_limit_transcription="1/minute", rate_limit_speech="1/minute")
    with bare_server(**limits) as url, client_from("127.0.0.1") as c:
        for path in ("/v1/generate", "/v1/chat/completions"):  # one group: generation
            assert c.post(url + path, json={}).status_code != 429
        assert c.post(f"{url}/v1/generate_stream", json={}).status_code == 429
        assert c.post(f"{url}/v1/speech-to-text").status_code != 429
        assert c.post(f"{url}/v1/audio/transcriptions").status_code == 429
        assert c.post(f"{url}/v1/text-to-speech", json={"text": "hi"}).status_code != 429
        assert c.post(f"{url}/v1/audio/speech", json={}).status_code == 429
    with bare_server(rate_limit_enabled=False, rate_limit_tokens="1/minute") as url, client_from("127.0.0.1") as c:
        assert [c.post(f"{url}/v1/livekit/token").status_code for _ in range(4)] == [200] * 4


def test_the_operators_key_is_not_rate_limited():
    """A light worker uses this API as its model server: one address, every conversation of the worker. With
    ADMIN_API_KEY it is not counted; the same address with the user key still is."""
    admin = "admin-key-0123456789abcdef"
    with bare_server(rate_limit_speech="1/minute", api_key=STRICT_KEY, admin_api_key=admin) as url, \
            client_from("127.0.0.1") as c:
        operator = {"Authorization": f"Bearer {admin}"}
        assert [c.post(f"{url}/v1/audio/speech", json={}, headers=operator).status_code != 429
                for _ in range(4)] == [True] * 4
        user = {"Authorization": f"Bearer {STRICT_KEY}"}
        assert [c.post(f"{url}/v1/audio/speech", json={}, headers=user).status_code for _ in range(2)][1] == 429


async def test_new_voice_sessions_are_rate_limited_at_the_handshake():
    with bare_server(rate_limit_voice_sessions="1/minute", api_key=STRICT_KEY) as url:
        ws_url = url.replace("http://", "ws://") + "/v1/conversation/ws"
        with pytest.raises(InvalidStatus) as first:  # counted even though refused for its key
            async with websockets.connect(ws_url):
                pass
        assert first.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as second:
            async with websockets.connect(ws_url, subprotocols=["gemmavoice", f"apikey.{STRICT_KEY}"]):
                pass
        assert second.value.response.status_code == 429
        assert int(second.value.response.headers["Retry-After"]) >= 1


def test_bad_rate_limit_setting_is_refused():
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(_env_file=None, rate_limit_generation="lots")


@pytest.mark.parametrize("origin, host, allowed", [
    (None, "api:8000", True),  # not a browser
    ("http://allowed.example", "api:8000", True),  # in CORS_ORIGINS
    ("http://api:8000", "api:8000", True),  # the server's own page
    ("https://voice.example", "voice.example", True),  # a proxy passing only the host name (nginx `$host`)
    ("http://voice.example:3000", "voice.example", True),
    ("http://evil.example", "voice.example", False),
    ("http://evil.example:8000", "api:8000", False),
    ("http://api:9000", "api:8000", False),  # same host, another port, where the port is known
    ("null", "api:8000", False),
    ("file://api:8000", "api:8000", False),
])
def test_origin_rules(origin, host, allowed):
    from starlette.requests import HTTPConnection

    from app.api.deps import origin_allowed

    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
    conn = HTTPConnection({"type": "websocket", "headers": headers, "path": "/v1/conversation/ws"})
    settings = Settings(_env_file=None, app_env="test", cors_origins="http://allowed.example")
    assert origin_allowed(conn, settings) is allowed
