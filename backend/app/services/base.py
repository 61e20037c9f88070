"""What every model service shares: background loading with a visible state, and typed failures."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any


class ServiceError(RuntimeError):
    """A failure the API turns into a JSON error with this status and code."""

    status = 500
    code = "internal_error"
    # Whether trying again may help; None: as the status says (5xx). False once the service has retried.
    retryable: bool | None = None

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(ServiceError):
    status = 503
    code = "service_unavailable"


class ServiceOverloaded(ServiceError):
    status = 503
    code = "overloaded"


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class UpstreamError(ServiceError):
    status = 502
    code = "upstream_error"


class ModelService:
    """Loads its model in the background; requests that come too early wait briefly, then get 503.

    A model on a server of its own (``app.services.remote``) is "loading" until the server first answers
    (``error`` says why it doesn't), and "unreachable" while a server that answered before does not."""

    component = "model"
    server = None  # the ModelServer behind a remote model (app.services.remote); None: the model is here

    def __init__(self) -> None:
        # idle -> loading -> ready | failed; ready <-> unreachable (a model server); closed once freed
        self.state = "idle"
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._load_ended = asyncio.Event()  # set when a load has ended, ready or failed
        self._answering = asyncio.Event()  # set while ready
        self.log = logging.getLogger(f"app.services.{self.component}")

    async def _load(self) -> None:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    async def start(self) -> None:
        if self.state in ("loading", "ready", "unreachable"):  # unreachable: loaded; its server is watched
            return
        self.state = "loading"
        self._load_ended.clear()
        self.log.info("%s: loading", self.component)
        started = time.perf_counter()
        try:
            await self._load()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self.log.error("%s: failed to load: %s", self.component, self.error)
            self._load_ended.set()
            return
        self.load_seconds = time.perf_counter() - started
        self.state, self.error = "ready", None
        self._answering.set()
        self._load_ended.set()
        self.log.info("%s: ready in %.2f s", self.component, self.load_seconds)

    async def wait_ready(self, timeout: float) -> None:
        """Until the model is ready; ServiceUnavailable as soon as its load fails, or after ``timeout``
        seconds if it is still loading (or nobody has started it)."""
        if self.state in ("idle", "loading", "unreachable"):
            until = self._answering if self.state == "unreachable" else self._load_ended
            try:
                await asyncio.wait_for(until.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if self.state == "ready":
            return
        if self.state == "failed":
            raise ServiceUnavailable(f"{self.component} failed to load: {self.error}")
        if self.state == "closed":
            raise ServiceUnavailable(f"{self.component} is shut down")
        if self.state == "unreachable":
            raise ServiceUnavailable(f"{self.component} is not answering: {self.error}", retry_after=5)
        why = f": {self.error}" if self.error else ""
        raise ServiceUnavailable(f"{self.component} is still loading{why}", retry_after=5)

    async def wait_usable(self, timeout: float) -> None:
        """As ``wait_ready``, except that a model server that stopped answering is not waited for: the request
        tries it at once (with its retries) and fails with the server's error if it is still away."""
        if self.state != "unreachable":
            await self.wait_ready(timeout)

    def mark_unreachable(self, reason: str) -> None:
        """Its model server stopped answering (a failed request or health probe)."""
        if self.state == "ready":
            self.log.warning("%s: %s", self.component, reason)
            self.state, self.error = "unreachable", reason
            self._answering.clear()

    def mark_answering(self) -> None:
        """Its model server answers again."""
        if self.state == "unreachable":
            self.log.info("%s: the server answers again", self.component)
            self.state, self.error = "ready", None
            self._answering.set()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "ready": self.state == "ready", "error": self.error,
                "load_seconds": self.load_seconds}

    def closed(self) -> None:
        """The model is freed (or its server's client closed): every later request is refused, no waiter waits."""
        self.state = "closed"
        self._load_ended.set()
        self._answering.set()

    async def close(self) -> None:
        return None
