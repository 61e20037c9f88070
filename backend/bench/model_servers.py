"""Real OpenAI-compatible model servers as subprocesses on loopback, for tests of the remote model clients.

``LlamaCppServer`` runs llama-cpp-python's own server (``python -m llama_cpp.server``) on the embedded GGUF;
``GemmaVoiceAPIProcess`` runs a second GemmaVoice API (``uvicorn app.main:app``), which serves chat,
transcription and speech. Both are separate processes so a test can kill, restart or stop them like a real
remote server. For faults a real server can't be made to show on cue, see ``doubles/chat_server.py``.

Each keeps what the process prints in a log file (``log_text()``, ``wait_for_log()``). Every wait has a
deadline and ``stop()`` never hangs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.common import free_port


BACKEND_DIR = Path(__file__).resolve().parents[1]


class ServerProcess:
    """A server subprocess on 127.0.0.1:``port``, ready once ``GET {ready_url}`` answers 200."""

    name = "server"
    ready_path = "/"
    start_deadline_s = 60.0

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.started_in: float | None = None  # seconds the last start() took
        self._log_path: Path | None = None
        self._final_log: str | None = None  # the log after stop(), which removes the file

    # --- what a subclass says ---------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        # Unbuffered, so the log shows a line as soon as the server prints it (wait_for_log, disconnects).
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    cwd: Path | None = None

    # --- addresses --------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (what an SDK's base_url or LLM_BASE_URL takes)."""
        return f"{self.base}/v1"

    @property
    def ready_url(self) -> str:
        return self.base + self.ready_path

    # --- life -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "ServerProcess":
        """Start the process (on ``self.port``) and wait until it is ready; raise with the log tail if not."""
        if self.running:
            return self
        if self._log_path is None or not self._log_path.exists():
            fd, name = tempfile.mkstemp(prefix=f"{self.name}-{self.port}-", suffix=".log")
            os.close(fd)
            self._log_path, self._final_log = Path(name), None
        started = time.monotonic()
        # Appended to, so a restart keeps what the earlier run printed.
        with open(self._log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.cwd, env=self.env(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + self.start_deadline_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready "
                                   f"({self.ready_url}):\n{self.log_tail()}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} was not ready ({self.ready_url}) within {self.start_deadline_s:.0f} s:"
                                   f"\n{self.log_tail()}")
            time.sleep(0.2)
        self.started_in = time.monotonic() - started
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-request, as on a crash or an OOM kill."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM, without waiting: the server shuts down gracefully."""
        if self.running:
            self.process.terminate()

    def restart(self) -> "ServerProcess":
        """Stop (if running) and start again on the same port."""
        self.stop_process()
        return self.start()

    def stop_process(self) -> None:
        """SIGTERM, up to 10 s to exit, then SIGKILL. The log stays."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self) -> None:
        """Stop the process and remove the log file (log_text() still answers)."""
        self.stop_process()
        if self._log_path is not None:
            self._final_log = self.log_text()
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # its own session: children (if any) go too
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.name} (pid {self.process.pid}) did not exit on signal {sig}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- looking at it ----------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything the process printed so far (stdout and stderr), across restarts."""
        if self._log_path is None:
            return self._final_log or ""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        """Wait until ``text`` occurs ``count`` times in the log; return the first line holding it."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if log.count(text) >= count:
                return next(line for line in log.splitlines() if text in line)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {text!r} x{count} not in the log after {timeout} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def rss(self) -> int:
        """Resident memory in bytes of the process and its children (0 when not running)."""
        if not self.running:
            return 0
        try:
            proc = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0


class LlamaCppServer(ServerProcess):
    """llama-cpp-python's OpenAI-compatible server on the embedded GGUF (or ``model_path``)."""

    name = "llama-cpp-server"
    ready_path = "/v1/models"
    start_deadline_s = 120.0
    # What llama_cpp.server prints when a streaming client goes away (llama_cpp/server/app.py,
    # get_event_publisher; the "before llm invoked" variant shares the prefix).
    DISCONNECT_TEXT = "Disconnected from client (via refresh/close)"

    def __init__(self, model_path: str | Path | None = None, port: int | None = None, *, n_ctx: int = 4096,
                 n_threads: int = 2, extra_args: list[str] | tuple[str, ...] = ()):
        super().__init__(port)
        self.model_path = Path(model_path) if model_path else self.embedded_model()
        self.n_ctx, self.n_threads, self.extra_args = n_ctx, n_threads, list(extra_args)

    @staticmethod
    def embedded_model() -> Path:
        from app.config.settings import Settings
        from app.models import resolve_llm

        return resolve_llm(Settings(app_env="test", _env_file=None)).path

    def command(self) -> list[str]:
        # interrupt_requests off: otherwise a second request cuts the first one's reply short.
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.n_threads), "--interrupt_requests", "False", *self.extra_args]

    @property
    def model(self) -> str:
        """The model id the server lists (llama_cpp.server answers any name with its one model)."""
        return httpx.get(self.ready_url, timeout=5).json()["data"][0]["id"]

    def disconnects(self) -> int:
        """How many times the server logged a streaming client going away."""
        return self.log_text().count(self.DISCONNECT_TEXT)


class GemmaVoiceAPIProcess(ServerProcess):
    """A second GemmaVoice API (``uvicorn app.main:app``) in test mode, with no LiveKit and no rate limits.

    ``env`` adds to (or overrides) its environment: setting names in upper case, e.g. ``{"LLM_BASE_URL": ...}``.
    Like any API process it also reads the repository's .env files, where the environment doesn't say otherwise.
    """

    name = "gemmavoice-api"
    ready_path = "/health/ready"
    start_deadline_s = 180.0
    cwd = BACKEND_DIR
    DEFAULT_ENV = {
        "APP_ENV": "test",
        "LIVEKIT_LOCAL_SERVER": "false",
        "LIVEKIT_IN_PROCESS_AGENT": "false",
        "LOCAL_TTS_VARIATION": "0",  # the same audio for the same text
        "RATE_LIMIT_ENABLED": "false",
    }

    def __init__(self, env: dict[str, object] | None = None, port: int | None = None):
        super().__init__(port)
        self.extra_env = {k: str(v) for k, v in (env or {}).items()}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.DEFAULT_ENV, **self.extra_env}
