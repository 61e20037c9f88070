"""A LiveKit server on loopback for a developer machine: ``livekit-server`` with keys made for this run.

``make run`` (``app.agents.inprocess``) starts one when no ``LIVEKIT_URL`` is set and the binary is
on PATH or at ``LIVEKIT_SERVER_BIN``. Its signalling and API listen on 127.0.0.1 only, on free
ports, with an API key and a 43-character secret generated at start (never the well-known
development keys), handed to it in its environment rather than on its command line. Its media
ports (one UDP port, one TCP fallback) announce the machine's own address, found by the server as
``livekit-server --dev`` does: browsers leave loopback out of WebRTC unless told otherwise. ``stop()`` ends it the way its own signal
handler expects: SIGTERM, then a second one (forced), then SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.config.settings import Settings

log = logging.getLogger("app.agents.local_livekit")

BINARY = "livekit-server"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
# Where to get a binary; the web client says the same (frontend/src/components/LiveKitVoiceChat.tsx).
INSTALL_HINT = ("Get one with LiveKit's install script (curl -sSL https://get.livekit.io | bash), from "
                "https://github.com/livekit/livekit/releases (or set LIVEKIT_SERVER_BIN), run the "
                "livekit/livekit-server Docker image, or use LiveKit Cloud (set LIVEKIT_URL and its keys).")


class LocalServerError(RuntimeError):
    pass


def find_binary(settings: Settings) -> Path | None:
    """``LIVEKIT_SERVER_BIN`` if set (and executable), else ``livekit-server`` on PATH, else None."""
    if settings.livekit_server_bin is not None:
        path = Path(settings.livekit_server_bin).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        log.warning("LIVEKIT_SERVER_BIN=%s is not an executable file", path)
        return None
    found = shutil.which(BINARY)
    return Path(found) if found else None


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class LocalLiveKit:
    process: asyncio.subprocess.Process
    url: str
    api_key: str
    api_secret: str = field(repr=False)
    workdir: Path

    @property
    def log_path(self) -> Path:
        return self.workdir / "livekit-server.log"

    @classmethod
    async def start(cls, binary: Path, *, ready_timeout: float = READY_TIMEOUT_S) -> "LocalLiveKit":
        """Start the server and wait until it answers; raises LocalServerError with its log if it doesn't."""
        port, tcp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_STREAM)
        udp_port = _free_port(socket.SOCK_DGRAM)
        api_key = "API" + secrets.token_hex(8)
        api_secret = secrets.token_urlsafe(32)  # 43 characters; the server wants 32 or more
        workdir = Path(tempfile.mkdtemp(prefix="gemmavoice-livekit-"))
        env = {
            **os.environ,
            # The server's own environment variables (its --keys and --config-body flags).
            "LIVEKIT_KEYS": f"{api_key}: {api_secret}",
            "LIVEKIT_CONFIG": (f"port: {port}\nrtc:\n  tcp_port: {tcp_port}\n  use_external_ip: false\n"
                               "logging:\n  level: info\n"),
        }
        with open(workdir / "livekit-server.log", "wb") as out:
            process = await asyncio.create_subprocess_exec(
                str(binary), "--bind", HOST, "--udp-port", str(udp_port),
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches the API, which stops the agent first, then this
            )
        server = cls(process=process, url=f"ws://{HOST}:{port}", api_key=api_key, api_secret=api_secret,
                     workdir=workdir)
        try:
            await server._wait_ready(f"http://{HOST}:{port}/", ready_timeout)
        except BaseException:
            tail = server.log_tail()
            await server.stop()
            raise LocalServerError(f"{binary} did not start: {tail or 'no output'}") from None
        log.info("started %s (pid %d) on %s, with keys made for this run; log: %s",
                 binary, process.pid, server.url, server.log_path)
        return server

    async def _wait_ready(self, health_url: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self.process.returncode is not None:
                    raise LocalServerError(f"exited with status {self.process.returncode}")
                try:
                    if (await client.get(health_url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if loop.time() > deadline:
                    raise LocalServerError(f"no answer on {health_url} after {timeout:.0f} s")
                await asyncio.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> int | None:
        """Stop the server (and delete its log); returns its exit status."""
        process = self.process
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):  # graceful, forced, killed
            if process.returncode is not None:
                break
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("%s (pid %d) still running after %s", BINARY, process.pid, signal.Signals(sig).name)
        await process.wait()
        log.info("stopped %s (pid %d, status %s)", BINARY, process.pid, process.returncode)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return process.returncode
