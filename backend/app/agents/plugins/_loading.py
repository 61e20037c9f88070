"""Waiting for a plugin's model: a session may be made, and used, while the models still load (a job
that starts as the worker starts), and its turns wait for them instead of failing."""

from __future__ import annotations

import time

from livekit.agents import APIStatusError

from app.services.base import ModelService, ServiceUnavailable


class ModelLoadWait:
    """Waits until a service's model has loaded: at most ``timeout`` seconds in all, counted from the
    first wait. A model that did not load in that time fails every later call at once (it is no nearer
    loaded a turn later); one whose load failed fails them as soon as it did."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what  # "the language model": what the error names
        self.timeout = timeout
        self._deadline: float | None = None

    async def __call__(self, service: ModelService) -> None:
        """Returns once ``service`` is ready; else a non-retryable ``APIStatusError`` that says why.

        A model server that stopped answering is not waited for: the request tries it (with its retries) and
        fails the turn with the server's error if it is still away."""
        if service.state in ("ready", "unreachable"):
            return
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.timeout
        try:
            await service.wait_ready(max(0.0, self._deadline - now))
            return
        except ServiceUnavailable:
            pass
        if service.state == "failed":
            message = f"{self.what} failed to load: {service.error}"
        elif service.state == "closed":
            message = f"{self.what} is shut down"
        else:
            message = f"{self.what} did not load within {self.timeout:g} s"
        # Not retryable: the framework's retries (seconds apart) would only repeat the same answer.
        raise APIStatusError(message, status_code=503, body={"code": "model_unavailable"}, retryable=False)
