"""The services' typed failures as the errors LiveKit Agents retries (or not) by itself."""

from __future__ import annotations

from livekit.agents import APIStatusError

from app.services.base import ServiceError


def api_error(exc: ServiceError) -> APIStatusError:
    """503 (overloaded, still loading, timed out) and 502 are worth a retry; 4xx never are."""
    return APIStatusError(str(exc), status_code=exc.status, body={"code": exc.code},
                          retryable=exc.status >= 500)
