"""A LiveKit cluster on one machine, the way livekit-server's own multi-node tests run one: a Redis on
loopback with a password (Debian's ``redis-server``), and two ``livekit-server`` nodes on other ports
that share it and one set of keys. The cluster tests and ``bench.cluster_recovery`` use it:

    async with LiveKitCluster.start(binary, webhook_urls=[...]) as cluster:
        cluster.nodes[0].url, cluster.nodes[1].url, cluster.redis.url
        await cluster.restart(0)   # node A stops and comes back on its port
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from app.agents.local_livekit import HOST, LocalLiveKit, RedisAddress

REDIS_BINARY = "redis-server"
INSTALL_HINT = "Debian's redis-server package: `make setup` installs it (apt-get install redis-server)."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class LocalRedis:
    """``redis-server`` on 127.0.0.1 with a password and nothing saved to disk; the password goes in on its
    standard input (its config), never on a command line."""

    process: subprocess.Popen
    port: int
    password: str = field(repr=False)

    @property
    def address(self) -> RedisAddress:
        return RedisAddress(f"{HOST}:{self.port}", self.password)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{HOST}:{self.port}/0"

    @classmethod
    def start(cls, *, port: int | None = None, timeout: float = 10.0) -> "LocalRedis":
        binary = shutil.which(REDIS_BINARY)
        if binary is None:
            raise RuntimeError(f"no {REDIS_BINARY} on PATH. {INSTALL_HINT}")
        port, password = port or _free_port(), secrets.token_urlsafe(24)
        config = (f"bind {HOST}\nport {port}\nrequirepass {password}\nsave \"\"\nappendonly no\n"
                  "protected-mode yes\ndaemonize no\nloglevel warning\n")
        process = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        process.stdin.write(config)
        process.stdin.close()
        redis = cls(process, port, password)
        deadline = time.monotonic() + timeout
        while not redis._answers():
            if process.poll() is not None or time.monotonic() > deadline:
                redis.stop()
                raise RuntimeError(f"{REDIS_BINARY} did not start on {HOST}:{port}")
            time.sleep(0.05)
        return redis

    def _answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as conn:
                conn.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                return b"+PONG" in conn.recv(64)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class LiveKitCluster:
    binary: Path
    redis: LocalRedis
    nodes: list[LocalLiveKit]
    webhook_urls: list[str] | None = None

    @property
    def api_key(self) -> str:
        return self.nodes[0].api_key

    @property
    def api_secret(self) -> str:
        return self.nodes[0].api_secret

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, binary: Path, *, nodes: int = 2,
                    webhook_urls: list[str] | None = None) -> AsyncIterator["LiveKitCluster"]:
        redis = await asyncio.to_thread(LocalRedis.start)
        cluster = cls(binary, redis, [], webhook_urls)
        try:
            keys = ("API" + secrets.token_hex(8), secrets.token_urlsafe(32))
            for _ in range(nodes):
                cluster.nodes.append(await LocalLiveKit.start(binary, keys=keys, redis=redis.address,
                                                              webhook_urls=webhook_urls))
            yield cluster
        finally:
            for node in cluster.nodes:
                await node.stop()
            redis.stop()

    async def restart(self, index: int, *, down_s: float = 0.0) -> LocalLiveKit:
        """Stops node ``index`` (SIGTERM, as an operator's restart does), and starts it again on the same port
        with the same keys after ``down_s``."""
        old = self.nodes[index]
        port = int(old.url.rsplit(":", 1)[1])
        await old.stop()
        await asyncio.sleep(down_s)
        self.nodes[index] = await LocalLiveKit.start(self.binary, port=port, keys=(old.api_key, old.api_secret),
                                                     redis=self.redis.address, webhook_urls=self.webhook_urls)
        return self.nodes[index]
