"""The worker CLI, run as the user runs it, with no LiveKit server anywhere."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.agents.worker import build_server, job_options, worker_load
from app.config.settings import Settings

BACKEND = Path(__file__).resolve().parents[2]
UNREACHABLE = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "s" * 40}


def worker_env(**livekit: str) -> dict[str, str]:
    """This environment without LiveKit settings; blank values also override any .env file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update({"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": "", "PYTHONUNBUFFERED": "1"})
    env.update(livekit)
    return env


def run_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.agents.worker", *args], cwd=BACKEND, env=env,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands():
    result = run_worker("--help", env=worker_env())
    assert result.returncode == 0, result.stderr
    for command in ("dev", "start", "console", "download-files"):
        assert command in result.stdout


def test_start_without_livekit_settings_fails_clearly():
    result = run_worker("start", env=worker_env())
    assert result.returncode != 0
    assert "LIVEKIT_URL" in result.stderr and "LIVEKIT_API_SECRET" in result.stderr


def test_start_with_settings_on_the_command_line_is_not_refused_for_them():
    result = run_worker("start", "--url", "ws://127.0.0.1:9", env=worker_env())
    assert result.returncode != 0
    assert "LIVEKIT_URL" not in result.stderr and "LIVEKIT_API_KEY" in result.stderr


def test_start_prewarms_a_job_process_and_drains_on_sigterm():
    """The models load in a real job process (forkserver) within its timeout; SIGTERM drains."""
    # Its own process group: if the test fails, the job processes go too.
    proc = subprocess.Popen([sys.executable, "-m", "app.agents.worker", "start", "--log-level", "INFO"],
                            cwd=BACKEND, env=worker_env(**UNREACHABLE), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[str] = []

    def prewarmed() -> bool:  # the job process's log lines reach the server's log a little later
        return "process initialized" in seen and any(m.startswith("models ready in") for m in seen)

    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not prewarmed():
            line = proc.stdout.readline()
            if not line:
                break
            try:
                seen.append(json.loads(line)["message"])
            except (json.JSONDecodeError, KeyError):
                seen.append(line.strip())
        assert "process initialized" in seen, seen
        assert any(m.startswith("models ready in") for m in seen), seen

        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
        assert "draining worker" in rest
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_job_metadata_is_parsed_safely():
    settings = Settings(app_env="test", _env_file=None, max_text_chars=100)
    assert job_options('{"instructions": " Be a pirate. ", "voice": "alice", "x": 1}', settings) == {
        "instructions": "Be a pirate.", "voice": "alice"}
    assert job_options("", settings) == {}
    assert job_options(None, settings) == {}
    assert job_options("not json", settings) == {}
    assert job_options('["a list"]', settings) == {}
    assert job_options('{"instructions": 42, "voice": ""}', settings) == {}
    assert len(job_options(json.dumps({"instructions": "y" * 500}), settings)["instructions"]) == 100


def test_the_server_can_hand_its_functions_to_job_processes():
    """Job processes are forked from a server process: what runs there must be importable by name."""
    server = build_server(Settings(app_env="test", _env_file=None, livekit_agent_name="test-agent"))
    for fn in (server.setup_fnc, server.load_fnc, server._entrypoint_fnc, server._request_fnc):
        assert pickle.loads(pickle.dumps(fn)) is fn
    assert server._agent_name == "test-agent"


def test_load_counts_job_slots():
    class Busy:
        active_jobs = [object(), object()]

    assert worker_load(Busy()) == 1.0
