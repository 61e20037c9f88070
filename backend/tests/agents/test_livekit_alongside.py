"""LiveKit beside the API: the in-process agent worker and the zero-config local LiveKit server.

The zero-config tests start the real ``livekit-server`` that ``make livekit-server`` builds; the
in-process agent tests meet an address nobody answers (a room answered by it:
test_livekit_room.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
from agent_helpers import until
from helpers import free_port

from app.agents import local_livekit, runtime
from app.agents.inprocess import LiveKitAlongside
from app.agents.local_livekit import LocalLiveKit
from app.config.settings import Settings

BACKEND = Path(__file__).resolve().parents[2]
LIVEKIT_ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


def start_api(tmp_path: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """``uvicorn app.main:app`` on loopback in its own process group, its output in ``tmp_path/api.log``."""
    log_path = tmp_path / "api.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=BACKEND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log_path

def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "job_thread_runner"]


async def test_zero_config_starts_a_local_server_with_fresh_keys_and_the_agent_then_stops_both(services,
                                                                                               livekit_binary):
    settings = Settings(app_env="development", _env_file=None, livekit_url="")
    alongside = LiveKitAlongside(settings, services)
    await alongside.start()
    local = alongside.local
    try:
        assert local is not None and local.url.startswith("ws://127.0.0.1:")
        # Its own copy of the settings points at it (the API's token endpoint and the agent use that copy);
        # the process's settings are left as they were.
        used = alongside.settings
        assert (used.livekit_url, used.livekit_api_key) == (local.url, local.api_key)
        assert used.livekit_api_secret.get_secret_value() == local.api_secret and used.livekit_configured
        assert used is not settings and settings.livekit_url is None and not settings.livekit_configured
        assert len(local.api_secret) >= 32 and local.api_key != "devkey" and local.api_secret != "secret"
        command_line = " ".join(psutil.Process(local.process.pid).cmdline())
        assert local.api_secret not in command_line and "--dev" not in command_line  # others can read it
        async with httpx.AsyncClient() as client:
            assert (await client.get(local.url.replace("ws://", "http://") + "/")).text == "OK"
        assert alongside.server is not None  # the in-process agent, for the local server
        await until(alongside.registered.is_set, 15, "the agent registered with the local server")
    finally:
        await alongside.stop()
    assert local.process.returncode == 0
    assert alongside.settings is settings and settings.livekit_url is None and settings.livekit_api_secret is None
    assert not local.workdir.exists() and alongside.server is None


async def test_each_local_server_gets_its_own_keys(livekit_binary):
    first = await LocalLiveKit.start(livekit_binary)
    try:
        second = await LocalLiveKit.start(livekit_binary)
        await second.stop()
    finally:
        await first.stop()
    assert first.api_secret != second.api_secret and first.api_key != second.api_key
    assert first.url != second.url


async def test_without_a_binary_the_api_says_where_to_get_one(services, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no livekit-server on it, and none built:
    monkeypatch.setattr(local_livekit, "BUILT_BINARY", tmp_path / "livekit-server")
    settings = Settings(app_env="development", _env_file=None, livekit_url="")
    alongside = LiveKitAlongside(settings, services)
    await alongside.start()
    await alongside.stop()
    assert alongside.local is None and alongside.server is None and not settings.livekit_configured
    assert "no livekit-server binary was found" in caplog.text and "make livekit-server" in caplog.text


async def test_in_process_agent_runs_on_the_api_services_and_stops_cleanly(services, caplog):
    environ_before = {name: os.environ.get(name) for name in LIVEKIT_ENV}
    settings = Settings(app_env="test", _env_file=None, livekit_in_process_agent=True,
                        livekit_url=f"ws://127.0.0.1:{free_port()}", livekit_api_key="APIinprocess",
                        livekit_api_secret="s" * 40, livekit_worker_max_jobs=2)
    alongside = LiveKitAlongside(settings, services)
    await alongside.start()
    try:
        # Nobody answers there: one clear line, and the worker goes on trying.
        await until(lambda: "cannot reach the LiveKit server at " + settings.livekit_url in caplog.text, 15,
                    "the unreachable server's warning")
        # A warm job thread per slot, no model loading.
        await until(lambda: len(job_threads()) == 2, 15, "a job thread per slot")
        server = alongside.server
        await until(lambda: server.worker_info.http_port != 0, 15, "the health port")
        async with httpx.AsyncClient() as client:  # (the worker serves it on this test's loop)
            info = (await client.get(f"http://127.0.0.1:{server.worker_info.http_port}/worker")).json()
        assert info["agent_name"] == settings.livekit_agent_name and not info.get("active_jobs")
        assert not alongside._task.done()
    finally:
        await alongside.stop()
    task = alongside._task
    assert task.done() and not task.cancelled() and task.exception() is None
    await until(lambda: not job_threads(), 15, "the job threads to end")
    assert {name: os.environ.get(name) for name in LIVEKIT_ENV} == environ_before
    assert runtime.models_ready()  # the API's models stay (they were the process's already)
    assert "LiveKit agent worker stopped" in caplog.text


def test_the_api_starts_and_stops_the_agent_with_its_lifespan(tmp_path):
    """``uvicorn app.main:app`` with LIVEKIT_IN_PROCESS_AGENT: serves, runs the worker, stops both on Ctrl+C."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(APP_ENV="test", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", LIVEKIT_IN_PROCESS_AGENT="true",
               LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}", LIVEKIT_API_KEY="APIlifespan",
               LIVEKIT_API_SECRET="s" * 40)
    proc, log_path = start_api(tmp_path, port, env)
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        while "cannot reach the LiveKit server" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert "LiveKit agent worker starting in this process" in log_path.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text()
    assert "LiveKit agent worker stopped" in text and "Traceback" not in text, text


def test_zero_config_the_api_hands_out_the_local_servers_address(tmp_path, livekit_binary):
    """``uvicorn app.main:app`` in development with no LIVEKIT_URL: the token endpoint and /health use the
    local server's address and keys (a copy of the settings made for it), from the first request on."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(APP_ENV="development", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", PORT=str(port),
               LIVEKIT_SERVER_BIN=str(livekit_binary), ROOM_STORE_PATH=str(tmp_path / "rooms.sqlite"))
    proc, log_path = start_api(tmp_path, port, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/livekit/status", timeout=3)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert status.status_code == 200 and status.json()["configured"], status.text
        url = status.json()["url"]
        assert url.startswith("ws://127.0.0.1:") and url != f"ws://127.0.0.1:{port}", url
        issued = httpx.post(f"http://127.0.0.1:{port}/v1/livekit/token", json={}, timeout=10)
        assert issued.status_code == 200 and issued.json()["url"] == url, issued.text
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["livekit_configured"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()
