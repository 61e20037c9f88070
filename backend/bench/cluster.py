"""A LiveKit cluster on one machine, the way livekit-server's own multi-node tests run one: a Redis on
loopback with a password (Debian's ``redis-server``), and two ``livekit-server`` nodes on other ports
that share it and one set of keys; and agent workers registered with its nodes. The cluster tests and
``bench.cluster_recovery`` use it:

    async with LiveKitCluster.start(binary, webhook_urls=[...]) as cluster:
        cluster.nodes[0].url, cluster.nodes[1].url, cluster.redis.url
        workers = WorkerPool(cluster, voice_env)
        await workers.ready()      # worker "a" on node A, "b" on node B, idle and known to the server
        await cluster.restart(1)   # node B stops and comes back on its port
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
from bench.common import free_port
from bench.livekit_room import WorkerProcess, worker_env

REDIS_BINARY = "redis-server"
INSTALL_HINT = "Debian's redis-server package: `make setup` installs it (apt-get install redis-server)."


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
        port, password = port or free_port(), secrets.token_urlsafe(24)
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


class WorkerPool:
    """One worker per node (``a`` on node A, ``b`` on node B), ``python -m app.agents.worker start`` as users run
    it, with ``max_jobs`` conversations each and the cluster's Redis for rooms' conversations; ``ready()`` replaces
    one that was killed or drained."""

    def __init__(self, cluster: LiveKitCluster, env: dict[str, str], *, max_jobs: int = 1) -> None:
        self.cluster, self.env, self.max_jobs = cluster, env, max_jobs
        self.running: dict[str, WorkerProcess] = {}

    def start(self, name: str) -> WorkerProcess:
        node = self.cluster.nodes[0 if name == "a" else 1]
        worker = WorkerProcess(worker_env(
            LIVEKIT_URL=node.url, LIVEKIT_API_KEY=self.cluster.api_key, LIVEKIT_API_SECRET=self.cluster.api_secret,
            LIVEKIT_WORKER_PORT=str(free_port()), LIVEKIT_WORKER_MAX_JOBS=str(self.max_jobs),
            REDIS_URL=self.cluster.redis.url, **self.env))
        self.running[name] = worker
        return worker

    async def ready(self, timeout: float = 180) -> dict[str, WorkerProcess]:
        """Both workers running, idle, and known to the server as taking jobs."""
        for name in ("a", "b"):
            if name not in self.running or self.running[name].proc.poll() is not None:
                if name in self.running:
                    self.running[name].kill()
                self.start(name)
        deadline = time.monotonic() + timeout
        for worker in self.running.values():
            while not await asyncio.to_thread(_idle, worker):
                if worker.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not become idle; its log ends:\n{worker.messages[-20:]}")
                await asyncio.sleep(0.2)
            await asyncio.to_thread(worker.wait_for, "registered worker", 30)
        await asyncio.sleep(2.6)  # one status report (every 2.5 s) since they became idle: the server knows it
        return self.running

    def holding(self) -> tuple[str, WorkerProcess]:
        """The one worker with a conversation, and its name."""
        busy = [(n, w) for n, w in self.running.items() if w.proc.poll() is None and w.info().get("active_jobs", 0)]
        if len(busy) != 1:
            raise RuntimeError(f"not one busy worker: {[(n, w.info()) for n, w in self.running.items()]}")
        return busy[0]

    def close(self) -> None:
        for worker in self.running.values():
            worker.kill()


def _idle(worker: WorkerProcess) -> bool:
    try:
        return worker.idle()
    except Exception:  # noqa: BLE001 - its health endpoint is not up yet
        return False
