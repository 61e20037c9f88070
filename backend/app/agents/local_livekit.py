"""A LiveKit server on loopback: ``livekit-server`` with keys made for this run.

``make run`` (``app.agents.inprocess``) starts one when no ``LIVEKIT_URL`` is set and a binary is
found: ``LIVEKIT_SERVER_BIN``, else ``livekit-server`` on PATH, else the one ``make livekit-server``
builds into ``.build/bin/``. The room tests and ``python -m app.agents.local_livekit`` (a server for a
standalone worker, ``make livekit``) start it the same way.

Every listener is on 127.0.0.1: signalling and API on a free port, media on one UDP port that
announces 127.0.0.1, and no ICE-over-TCP port (the server would open that one on every interface).
The API key and the 43-character secret are generated at start (never the well-known development
keys) and handed to it in its environment rather than on its command line. ``stop()`` ends it the way
its own signal handler expects: SIGTERM, then a second one (forced), then SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
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

from app.config.settings import REPO_DIR, Settings, get_settings

log = logging.getLogger("app.agents.local_livekit")

BINARY = "livekit-server"
BUILT_BINARY = REPO_DIR / ".build" / "bin" / BINARY  # where `make livekit-server` puts it
HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
# Where to get a binary; the web client says the same (frontend/src/components/LiveKitVoiceChat.tsx).
INSTALL_HINT = ("Build one with `make livekit-server` (a pinned release, compiled by Go 1.25+ from the Go module "
                "proxy into .build/bin/), or set LIVEKIT_SERVER_BIN to a livekit-server you have; or run the "
                "livekit/livekit-server Docker image, or use LiveKit Cloud (set LIVEKIT_URL and its keys).")


class LocalServerError(RuntimeError):
    pass


def find_binary(settings: Settings) -> Path | None:
    """``LIVEKIT_SERVER_BIN`` if set (and executable), else ``livekit-server`` on PATH, else the one
    ``make livekit-server`` built, else None."""
    if settings.livekit_server_bin is not None:
        path = Path(settings.livekit_server_bin).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        log.warning("LIVEKIT_SERVER_BIN=%s is not an executable file", path)
        return None
    found = shutil.which(BINARY)
    if found:
        return Path(found)
    return BUILT_BINARY if os.access(BUILT_BINARY, os.X_OK) else None


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def loopback_config(port: int, udp_port: int, *, redis: "RedisAddress | None" = None,
                    webhook: tuple[str, list[str]] | None = None) -> str:
    """The server's YAML config with every listener and every announced address on 127.0.0.1.

    ``redis``: the Redis that nodes of one cluster share (rooms, routing, agent workers). ``webhook``: (the API key
    that signs them, the URLs) of the server's webhooks."""
    extra = ""
    if redis is not None:
        extra += f"redis:\n  address: {redis.address}\n" + (f"  password: {json.dumps(redis.password)}\n"
                                                              if redis.password else "")
    if webhook is not None:
        key, urls = webhook
        extra += f"webhook:\n  api_key: {key}\n  urls: {json.dumps(urls)}\n"
    return (f"port: {port}\n"
            "rtc:\n"
            "  tcp_port: 0\n"  # no ICE over TCP: its listener ignores --bind
            f"  udp_port: {udp_port}\n"
            f"  node_ip: {HOST}\n"
            "  use_external_ip: false\n"
            "  enable_loopback_candidate: true\n"
            "  ips:\n"
            f"    includes: [{HOST}/32]\n"
            "logging:\n  level: info\n" + extra)


@dataclass(frozen=True)
class RedisAddress:
    address: str  # host:port
    password: str | None = field(default=None, repr=False)


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
    async def start(cls, binary: Path, *, ready_timeout: float = READY_TIMEOUT_S, port: int | None = None,
                    keys: tuple[str, str] | None = None, redis: RedisAddress | None = None,
                    webhook_urls: list[str] | None = None) -> "LocalLiveKit":
        """Start the server and wait until it answers; raises LocalServerError with its log if it doesn't.

        ``port`` (default: a free one) and ``keys`` (default: made now): a node that restarts keeps both. ``redis``:
        a node of the cluster that shares it. ``webhook_urls``: where the server posts its webhooks, signed with
        its key."""
        port, udp_port = port or _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
        # 43 characters for a made secret; the server wants 32 or more
        api_key, api_secret = keys or ("API" + secrets.token_hex(8), secrets.token_urlsafe(32))
        workdir = Path(tempfile.mkdtemp(prefix="gemmavoice-livekit-"))
        env = {
            **os.environ,
            # The server's own environment variables (its --keys and --config-body flags).
            "LIVEKIT_KEYS": f"{api_key}: {api_secret}",
            "LIVEKIT_CONFIG": loopback_config(port, udp_port, redis=redis,
                                              webhook=(api_key, webhook_urls) if webhook_urls else None),
        }
        with open(workdir / "livekit-server.log", "wb") as out:
            process = await asyncio.create_subprocess_exec(
                str(binary), "--bind", HOST,
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


async def serve(env_file: Path) -> int:
    """Run a loopback server until SIGINT/SIGTERM; its settings go to ``env_file`` (mode 0600), not the log."""
    binary = find_binary(get_settings())
    if binary is None:
        log.error("no livekit-server binary was found. %s", INSTALL_HINT)
        return 1
    try:
        server = await LocalLiveKit.start(binary)
    except LocalServerError as exc:
        log.error("%s", exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        env_file.touch(mode=0o600)
        env_file.chmod(0o600)
        env_file.write_text(f"LIVEKIT_URL={server.url}\nLIVEKIT_API_KEY={server.api_key}\n"
                            f"LIVEKIT_API_SECRET={server.api_secret}\n")
        log.info("LiveKit server ready on %s; its settings are in %s (source it, or pass it to the worker "
                 "and the API); Ctrl+C stops it", server.url, env_file)
        waiter = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(server.process.wait())
        await asyncio.wait([waiter, exited], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if exited.done():
            log.error("livekit-server exited with status %s: %s", server.process.returncode, server.log_tail())
            return 1
        return 0
    finally:
        env_file.unlink(missing_ok=True)
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m app.agents.local_livekit",
                                     description="A livekit-server on loopback with keys made for this run.")
    parser.add_argument("--env-file", type=Path, default=REPO_DIR / ".build" / "livekit.env",
                        help="where to write LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.env_file.parent.mkdir(parents=True, exist_ok=True)
    return asyncio.run(serve(args.env_file))


if __name__ == "__main__":
    raise SystemExit(main())
