"""A model on a server of its own: what the LLM, STT and TTS services share when one is set
(``LLM_BASE_URL``, ``STT_BASE_URL``, ``TTS_BASE_URL``; OpenAI-compatible servers).

``ModelServer`` holds the address, the key and one HTTP client, says whether the server answers, and
runs every request's first try through the same bounded retry:

- until the server first answers, its service is "loading" and its ``error`` says why (the worker takes no
  room meanwhile); the server is asked every ``REMOTE_PROBE_INTERVAL_S`` seconds;
- a request that fails before any output with a connection error or a 5xx is tried again up to
  ``REMOTE_RETRIES`` times with exponential backoff; then it fails with an error that names the server, and
  the service is "unreachable" until a probe or a request gets an answer again;
- a failure once output has flowed is not retried: replaying would repeat words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from app.config.settings import Settings
from app.services.base import ModelService, ServiceOverloaded, ServiceUnavailable, UpstreamError

log = logging.getLogger("app.services.remote")

T = TypeVar("T")
# While the server answers, it is asked how it is this many probe intervals apart (requests tell us sooner).
HEALTHY_PROBE_EVERY = 5


class ServerUnreachable(ServiceUnavailable):
    """The model server could not be reached (after the retries)."""

    code = "model_server_unavailable"
    retryable = False


class ServerBusy(ServiceOverloaded):
    """The model server said it is busy (429, 503): LiveKit's own retries, spaced out, may get through."""

    code = "model_server_busy"


class ServerFailed(UpstreamError):
    """The model server answered with an error status, or with a stream that is not what its API says."""

    code = "model_server_error"
    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def public_url(url: str) -> str:
    """``url`` without user:password or query (where a key may hide), for messages, logs and health."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def connection_failed(exc: BaseException) -> bool:
    """A failure to reach the server at all (as opposed to an answer we did not like)."""
    import openai

    return isinstance(exc, (httpx.TransportError, openai.APIConnectionError))


class ModelServer:
    """One OpenAI-compatible model server, as one service (``service``) uses it."""

    def __init__(self, service: ModelService, what: str, base_url: str, api_key: SecretStr | None,
                 settings: Settings):
        self.service = service
        self.what = what  # "LLM server": how errors and logs name it
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.api_key = api_key.get_secret_value() if api_key is not None else None
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(settings.remote_read_timeout_s, connect=settings.remote_connect_timeout_s),
            # One connection per conversation's request: nobody waits for a pooled one.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )
        self.models: list[str] = []  # what the server said it serves, at its last answer to /models
        self._watch: asyncio.Task | None = None

    def describe(self) -> str:
        return f"the {self.what} at {public_url(self.base_url)}"

    def openai(self):
        """An ``openai`` SDK client over this server's HTTP client. Its own retries are off: first tries are
        retried by ``first_try``, the same way for the three services."""
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "none", http_client=self.client,
                                  max_retries=0)

    def status(self) -> dict:
        return {"backend": "remote", "engine": "openai-compatible", "url": public_url(self.base_url)}

    def scrub(self, text: str) -> str:
        """``text`` (an error, what a server said) without this server's key in it."""
        return text.replace(self.api_key, "***") if self.api_key else text

    async def probe(self) -> str | None:
        """None when the server answers; else why not, in words."""
        try:
            timeout = httpx.Timeout(5.0, connect=self.settings.remote_connect_timeout_s)
            response = await self.client.get("/models", timeout=timeout)
        except httpx.ConnectError as exc:
            return self.scrub(f"{self.describe()} is not answering ({exc or type(exc).__name__})")
        except httpx.ConnectTimeout:
            return f"{self.describe()} did not accept a connection within {self.settings.remote_connect_timeout_s:g} s"
        except httpx.TimeoutException:
            return None  # connected, but busy (llama-cpp-python's server answers /models between replies only)
        except httpx.HTTPError as exc:
            return self.scrub(f"{self.describe()} failed: {exc or type(exc).__name__}")
        if response.status_code in (401, 403):
            return f"{self.describe()} refused the API key ({response.status_code})"
        if response.status_code >= 500:
            return f"{self.describe()} answered {response.status_code}"
        if response.status_code == 200:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self.models = [m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]
        return None

    async def wait_answering(self) -> None:
        """The service's load: returns once the server answers, asking it every probe interval; meanwhile the
        service's ``error`` says why it does not (health shows it)."""
        reason: str | None = None
        while (found := await self.probe()) is not None:
            if found != reason:
                log.warning("%s: %s; asking again every %g s", self.service.component, found,
                            self.settings.remote_probe_interval_s)
            reason = self.service.error = found
            await asyncio.sleep(self.settings.remote_probe_interval_s)
        if self._watch is None:
            self._watch = asyncio.create_task(self._keep_watching(), name=f"watch-{self.what}")

    async def _keep_watching(self) -> None:
        """Once it has answered: notice that it stopped (no new conversation is taken then) and came back."""
        interval = self.settings.remote_probe_interval_s
        while self.service.state != "closed":
            await asyncio.sleep(interval if self.service.state == "unreachable" else interval * HEALTHY_PROBE_EVERY)
            try:
                reason = await self.probe()
            except Exception:  # noqa: BLE001 - the watch must outlive any surprise, or a worker never recovers
                log.exception("%s: probing %s failed", self.service.component, self.describe())
                continue
            if reason is None:
                self.service.mark_answering()
            else:
                self.service.mark_unreachable(reason)

    async def first_try(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` (a request up to its first output), tried again on connection failures, 5xx and 429.

        Raises ``ServerUnreachable`` or ``ServerFailed``, naming the server, once the tries are spent."""
        try:
            async for retry in AsyncRetrying(stop=stop_after_attempt(self.settings.remote_retries + 1),
                                             wait=wait_exponential(multiplier=0.25, max=2.0),
                                             retry=retry_if_exception(_worth_retrying), reraise=True):
                with retry:
                    result = await attempt()
        except (ServerFailed, ServerBusy):
            raise
        except Exception as exc:
            failure = self.failure(exc)
            if connection_failed(exc) and not _timed_out(exc):  # a slow server is busy, not gone
                self.service.mark_unreachable(str(failure))
            raise failure from exc
        self.service.mark_answering()
        return result

    def failure(self, exc: BaseException) -> ServerUnreachable | ServerFailed | ServerBusy:
        """``exc`` (from httpx or the openai SDK) as an error that names the server and says what happened
        (never its key)."""
        import openai

        if isinstance(exc, (ServerUnreachable, ServerFailed, ServerBusy)):
            return exc
        if _timed_out(exc):
            return ServerUnreachable(f"{self.describe()} timed out ({type(exc).__name__})", retry_after=5)
        if connection_failed(exc):
            return ServerUnreachable(self.scrub(f"{self.describe()} is not answering ({_cause(exc)})"),
                                     retry_after=5)
        if isinstance(exc, openai.APIStatusError):
            message = self.scrub(f"{self.describe()} answered {exc.status_code}: {_detail(exc)}")
            if exc.status_code in (429, 503):
                return ServerBusy(message, retry_after=_retry_after(exc.response))
            return ServerFailed(message, status_code=exc.status_code)
        return ServerFailed(self.scrub(f"{self.describe()} sent something its API does not allow: "
                                       f"{type(exc).__name__}: {str(exc)[:200]}"))

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.client.aclose()


def _timed_out(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException))


def _retry_after(response: httpx.Response | None) -> float:
    try:
        return max(1.0, float(response.headers.get("retry-after", 2))) if response is not None else 2.0
    except ValueError:
        return 2.0


def _worth_retrying(exc: BaseException) -> bool:
    """Connection failures and the server's own errors (5xx, 429); not its refusals, nor a slow first token."""
    import openai

    if isinstance(exc, ServerFailed):
        return exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429)
    if isinstance(exc, (openai.APITimeoutError, httpx.ReadTimeout)):
        return False  # connected but slow: another try would only queue behind itself
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code == 429
    return connection_failed(exc)


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    return str(inner or exc) or type(inner or exc).__name__


def _detail(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:300]
    return (str(getattr(exc, "message", "")) or str(exc))[:300]
