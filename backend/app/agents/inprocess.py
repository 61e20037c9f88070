"""LiveKit alongside the API, for a single machine: the agent worker inside the API process, and on a
developer machine a local LiveKit server as well. The API's lifespan starts and stops both.

- ``LIVEKIT_IN_PROCESS_AGENT=true``: the API process registers as the LiveKit agent worker too, so
  REST, the WebSocket and LiveKit rooms share one set of models. Its jobs run as threads of the
  API process; their models' work runs on the API's event loop (``app.agents.runtime``).
- Zero-config (``APP_ENV=development``, no ``LIVEKIT_URL``, ``LIVEKIT_LOCAL_SERVER`` on): with a
  ``livekit-server`` binary found, it is started on loopback with keys made for this run, and the
  in-process agent runs. ``LiveKitAlongside.settings`` is then a copy of the process's settings that points
  at it (the process's own are left as they are): the API serves the token endpoint with it
  (``app.main``), and the agent worker is given it.

Neither stops the API from serving: a LiveKit server that cannot be reached is a log line, and the
agent keeps trying to register.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from urllib.parse import urlparse

import httpx
from pydantic import SecretStr

from app.agents import runtime
from app.agents.local_livekit import INSTALL_HINT, LocalLiveKit, LocalServerError, find_binary
from app.config.settings import Settings
from app.services.container import Services

log = logging.getLogger("app.agents.inprocess")

# When the API stops, how long conversations in progress may go on.
DRAIN_TIMEOUT_S = 10.0
# How long a worker still setting up (starting its job threads) is waited for when the API stops.
STARTUP_TIMEOUT_S = 40.0
# The worker is given its server and keys as arguments (app.agents.worker.build_server), but livekit-agents
# (1.8.9, AgentServer.run) also exports them into os.environ, for job processes to inherit. This process is the
# API too, whose Settings() read the environment: they are put back as they were when the worker stops.
_WORKER_ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


class LiveKitAlongside:
    """What the API runs beside itself for LiveKit; ``start()`` and ``stop()`` never raise."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self.given = settings
        # The settings LiveKit is used with here: ``settings``, or while a local server runs, a copy pointing at it.
        self.settings = settings
        self.services = services
        self.local: LocalLiveKit | None = None
        self.server = None  # the AgentServer, once started
        self.registered = asyncio.Event()
        self._room_since: float | None = None  # when the registered worker first had room for a job
        self._unreachable = False  # the probe found no LiveKit server at LIVEKIT_URL
        self._started = asyncio.Event()  # the worker's run() is past its set-up
        self._task: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        self._adopted = False
        self._saved_env: dict[str, str | None] = {}

    @property
    def wanted_local_server(self) -> bool:
        s = self.settings
        return s.app_env == "development" and s.livekit_local_server and not s.livekit_url

    async def start(self) -> None:
        if self.wanted_local_server:
            await self._start_local_server()
        if self.local is None and not self.settings.livekit_in_process_agent:
            return
        if not self.settings.livekit_configured:
            log.error("LIVEKIT_IN_PROCESS_AGENT is on, but LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
                      "are not all set: no agent worker in this process")
            return
        try:
            self._start_worker()
        except Exception:  # noqa: BLE001 - LiveKit trouble must not stop the API
            log.exception("the in-process LiveKit agent worker could not start")

    async def stop(self) -> None:
        try:
            await self._stop_worker()
        finally:
            if self.local is not None:
                await self.local.stop()
                self.settings = self.given
                self.local = None

    async def _start_local_server(self) -> None:
        binary = find_binary(self.settings)
        if binary is None:
            log.info("LiveKit mode is off: no LIVEKIT_URL is set and no livekit-server binary was found "
                     "(PATH or LIVEKIT_SERVER_BIN). %s", INSTALL_HINT)
            return
        try:
            # Its webhooks come to this API's room keeper (PORT must be the port the API listens on).
            self.local = await LocalLiveKit.start(binary, webhook_urls=[self.settings.livekit_webhook_target])
        except (LocalServerError, OSError) as exc:
            log.error("LiveKit mode is off: %s", exc)
            return
        self.settings = self.given.model_copy(update={
            "livekit_url": self.local.url, "livekit_public_url": None, "livekit_api_key": self.local.api_key,
            "livekit_api_secret": SecretStr(self.local.api_secret)})

    def _start_worker(self) -> None:
        from app.agents.worker import build_server  # imports the agents framework: only when wanted

        loop = asyncio.get_running_loop()
        self._adopted = runtime.adopt(self.services, loop)
        self._saved_env = {name: os.environ.get(name) for name in _WORKER_ENV}
        self.server = build_server(self.settings, in_process=True, on_load=self._on_load)
        self.server.on("worker_started", self._started.set)
        self.server.on("worker_registered", self._on_registered)
        self._task = loop.create_task(self._run(self.server), name="livekit-agent-worker")
        self._probe = loop.create_task(self._probe_server(), name="livekit-agent-probe")
        log.info("LiveKit agent worker starting in this process: agent %r, LiveKit at %s",
                 self.settings.livekit_agent_name, self.settings.livekit_url)

    def _on_load(self, load: float) -> None:
        # Called from the framework's executor every 0.5 s; the server hears the status every 2.5 s.
        if self._room_since is None and load < self.settings.livekit_worker_load_threshold \
                and self.registered.is_set():
            self._room_since = time.monotonic()

    def agent_status(self) -> dict | None:
        """Whether LiveKit rooms get an agent from this process: the server has been told it takes jobs (what
        readiness waits for: a user who joined before then got no agent at once); None when no worker runs here.
        The framework tells the server the worker's status every UPDATE_STATUS_INTERVAL, so that is the time
        after the worker first had room. Busy later (every slot taken) it stays ready: the room keeper brings
        an agent once a slot is free. ``unreachable``: the server could not be reached (readiness does not wait
        for it then: the API serves all else, and the agent keeps trying)."""
        if self.server is None:
            return None
        from livekit.agents.worker import UPDATE_STATUS_INTERVAL  # loaded already: the worker runs

        ready = self._room_since is not None and time.monotonic() - self._room_since > UPDATE_STATUS_INTERVAL
        state = "ready" if ready else "unreachable" if self._unreachable and not self.registered.is_set() \
            else "starting"
        return {"state": state, "ready": ready}

    def _on_registered(self, worker_id: str, server_info) -> None:
        self.registered.set()
        log.info("LiveKit agent worker registered with %s as %s", self.settings.livekit_url, worker_id)

    async def _run(self, server) -> None:
        try:
            await server.run(devmode=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("the in-process LiveKit agent worker stopped: %s", exc)

    async def _probe_server(self) -> None:
        """One clear line when the server cannot be reached (the framework retries quietly)."""
        url = urlparse(self.settings.livekit_url or "")
        scheme = "https" if url.scheme in ("wss", "https") else "http"
        try:
            async with httpx.AsyncClient(timeout=3.0) as client:
                await client.get(f"{scheme}://{url.netloc}/")
        except httpx.HTTPError as exc:
            self._unreachable = True
            log.warning("the LiveKit agent cannot reach the LiveKit server at %s (%s: %s); LiveKit rooms get "
                        "no agent until it can. It keeps trying in the background.",
                        self.settings.livekit_url, type(exc).__name__, exc)

    async def _stop_worker(self) -> None:
        if self.server is None:
            return
        server, self.server = self.server, None
        if self._probe is not None:
            self._probe.cancel()
        # A worker still setting up is let finish first: it can only be drained and closed once started.
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait([started, self._task], timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._started.is_set():
            try:
                await server.drain(timeout=DRAIN_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("conversations still running after %.0f s: ending them", DRAIN_TIMEOUT_S)
            await server.aclose()  # which ends run()
            await asyncio.wait([self._task], timeout=5.0)
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._adopted:
            runtime.release(self.services)
        log.info("LiveKit agent worker stopped")
