"""The services' typed failures as the errors LiveKit Agents retries (or not) by itself."""

from __future__ import annotations

from livekit.agents import APIStatusError

from app.services.base import ServiceError


def api_error(exc: ServiceError, *, output_sent: bool = False) -> APIStatusError:
    """503 (overloaded, still loading, timed out) and 502 are worth a retry; 4xx never are, nor a model
    server's failure (its service has retried already), and nothing is once output went out: the framework
    would start the reply (or sentence) again and the listener would hear its beginning twice."""
    retryable = exc.status >= 500 if exc.retryable is None else exc.retryable
    return APIStatusError(str(exc), status_code=exc.status, body={"code": exc.code},
                          retryable=retryable and not output_sent)
