"""Helpers shared by the agent tests (a module of its own: two conftest.py files share one name)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from livekit import rtc

from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.services.container import Services


async def transcribe(services: Services, audio: rtc.AudioFrame) -> str:
    pcm = resample_pcm(bytes(audio.data), audio.sample_rate, WHISPER_RATE)
    return (await services.stt.transcribe(pcm16_to_float(pcm), language="en")).text


def rms(audio: rtc.AudioFrame) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(audio.data, dtype="<i2").astype(np.float32) ** 2)))


BACKEND = Path(__file__).resolve().parents[2]


def worker_env(**livekit: str) -> dict[str, str]:
    """This environment without LiveKit settings; blank values also override any .env file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update({"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": "", "PYTHONUNBUFFERED": "1"})
    env.update(livekit)
    return env


class WorkerProcess:
    """``python -m app.agents.worker start`` in its own process group; its log goes to a file that
    ``wait_for`` reads with a deadline (a pipe's readline would block past it)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._log = tempfile.NamedTemporaryFile("w+", prefix="gemmavoice-worker-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen([sys.executable, "-m", "app.agents.worker", "start", "--log-level", "INFO"],
                                     cwd=BACKEND, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    @property
    def messages(self) -> list[str]:
        """The log's messages (the framework logs JSON lines; anything else is kept as it is)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line)["message"])
            except (json.JSONDecodeError, KeyError, TypeError):
                found.append(line.strip())
        return found

    def wait_for(self, pattern: str, timeout: float = 120, *, after: int = 0) -> re.Match:
        """The first message (from the ``after``-th on) that matches ``pattern``, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages[after:]:
                if found := re.search(pattern, message):
                    return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = "exited" if self.proc.poll() is not None else "still running"
                raise AssertionError(f"no {pattern!r} in the worker's log ({state}): {self.messages[-30:]}")
            time.sleep(0.1)

    def stop(self) -> str:
        """SIGTERM, up to 60 s to finish; returns the whole log."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)
