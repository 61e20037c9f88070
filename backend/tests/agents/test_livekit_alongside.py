"""LiveKit beside the API: the in-process agent worker and the zero-config local LiveKit server.

No LiveKit server can be installed here, so the zero-config tests start ``FAKE_LIVEKIT_SERVER``, a
test double of the ``livekit-server`` binary; the in-process agent meets an address nobody answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from helpers import free_port

from app.agents import runtime
from app.agents.inprocess import LiveKitAlongside
from app.agents.local_livekit import LocalLiveKit
from app.config.settings import Settings

BACKEND = Path(__file__).resolve().parents[2]
LIVEKIT_ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")

FAKE_LIVEKIT_SERVER = f'''#!{sys.executable}
"""TEST DOUBLE of the livekit-server binary: answers "OK" on / at the port of its LIVEKIT_CONFIG,
on the address of --bind, writes what it was started with (argv, LIVEKIT_KEYS, LIVEKIT_CONFIG) and
the signal that stopped it to $FAKE_LIVEKIT_RECORD. It speaks no LiveKit protocol."""
import json, os, re, signal, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

record = {{"argv": sys.argv[1:], "keys": os.environ.get("LIVEKIT_KEYS"), "config": os.environ.get("LIVEKIT_CONFIG")}}
path = os.environ["FAKE_LIVEKIT_RECORD"]
json.dump(record, open(path, "w"))
port = int(re.search(r"^port: (\\d+)", record["config"], re.M).group(1))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((sys.argv[sys.argv.index("--bind") + 1], port), Handler)


def stop(signum, frame):
    record["signal"] = signal.Signals(signum).name
    json.dump(record, open(path, "w"))
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
server.serve_forever()
'''


def fake_livekit_server(directory: Path) -> Path:
    path = directory / "livekit-server"
    path.write_text(FAKE_LIVEKIT_SERVER)
    path.chmod(0o755)
    return path


async def eventually(check, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "job_thread_runner"]


async def test_zero_config_starts_a_local_server_with_fresh_keys_and_the_agent_then_stops_both(
        services, tmp_path, monkeypatch):
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_LIVEKIT_RECORD", str(record))
    settings = Settings(app_env="development", _env_file=None, livekit_url="",
                        livekit_server_bin=str(fake_livekit_server(tmp_path)))
    alongside = LiveKitAlongside(settings, services)
    await alongside.start()
    local = alongside.local
    try:
        assert local is not None and local.url.startswith("ws://127.0.0.1:")
        seen = json.loads(record.read_text())
        key, secret = seen["keys"].split(": ")
        # The process's settings point at it: the token endpoint and the agent use them.
        assert (settings.livekit_url, settings.livekit_api_key) == (local.url, key)
        assert settings.livekit_api_secret.get_secret_value() == secret and settings.livekit_configured
        assert len(secret) >= 32 and key != "devkey" and secret != "secret"
        assert secret not in " ".join(seen["argv"])  # not on a command line others can read
        assert seen["argv"][seen["argv"].index("--bind") + 1] == "127.0.0.1"
        async with httpx.AsyncClient() as client:
            assert (await client.get(local.url.replace("ws://", "http://") + "/")).text == "OK"
        assert alongside.server is not None  # the in-process agent, for the local server
    finally:
        await alongside.stop()
    assert local.process.returncode == 0
    assert json.loads(record.read_text())["signal"] == "SIGTERM"
    assert settings.livekit_url is None and settings.livekit_api_secret is None
    assert not local.workdir.exists() and alongside.server is None


async def test_each_local_server_gets_its_own_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LIVEKIT_RECORD", str(tmp_path / "record.json"))
    binary = fake_livekit_server(tmp_path)
    first = await LocalLiveKit.start(binary)
    try:
        second = await LocalLiveKit.start(binary)
        await second.stop()
    finally:
        await first.stop()
    assert first.api_secret != second.api_secret and first.api_key != second.api_key
    assert first.url != second.url


async def test_without_a_binary_the_api_says_where_to_get_one(services, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no livekit-server on it
    settings = Settings(app_env="development", _env_file=None, livekit_url="")
    alongside = LiveKitAlongside(settings, services)
    await alongside.start()
    await alongside.stop()
    assert alongside.local is None and alongside.server is None and not settings.livekit_configured
    assert "no livekit-server binary was found" in caplog.text and "get.livekit.io" in caplog.text


async def test_in_process_agent_runs_on_the_api_services_and_stops_cleanly(services, caplog):
    environ_before = {name: os.environ.get(name) for name in LIVEKIT_ENV}
    settings = Settings(app_env="test", _env_file=None, livekit_in_process_agent=True,
                        livekit_url=f"ws://127.0.0.1:{free_port()}", livekit_api_key="APIinprocess",
                        livekit_api_secret="s" * 40, livekit_worker_max_jobs=2)
    alongside = LiveKitAlongside(settings, services)
    await alongside.start()
    try:
        # Nobody answers there: one clear line, and the worker goes on trying.
        await eventually(lambda: "cannot reach the LiveKit server at " + settings.livekit_url in caplog.text)
        await eventually(lambda: len(job_threads()) == 2)  # a warm job thread per slot, no model loading
        server = alongside.server
        await eventually(lambda: server.worker_info.http_port != 0)
        async with httpx.AsyncClient() as client:  # (the worker serves it on this test's loop)
            info = (await client.get(f"http://127.0.0.1:{server.worker_info.http_port}/worker")).json()
        assert info["agent_name"] == settings.livekit_agent_name and not info.get("active_jobs")
        assert not alongside._task.done()
    finally:
        await alongside.stop()
    task = alongside._task
    assert task.done() and not task.cancelled() and task.exception() is None
    await eventually(lambda: not job_threads())
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
    log_path = tmp_path / "api.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=BACKEND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
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
