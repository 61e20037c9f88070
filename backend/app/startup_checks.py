"""Refuse to serve when the configuration would leave the API open to others.

- ``APP_ENV=production`` needs ``API_KEY``.
- Without ``API_KEY`` (development, test), the server must listen on a loopback address only.

The check runs at the ASGI ``lifespan.startup`` event, before the models load. The address is the one the
server really binds: under uvicorn (``make run``, ``uvicorn app.main:app --host ...``, ``python -m app``) it is
read from the configuration of the uvicorn server running the lifespan; under another ASGI server it falls back
to the ``HOST`` setting. A refusal
is reported with ``lifespan.startup.failed``: uvicorn logs the message and exits with status 3.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from app.config.settings import Settings

MAKE_A_KEY = "python -c \"import secrets; print(secrets.token_urlsafe(32))\""


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a host name: every address it resolves to must be loopback
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _uvicorn_config():
    """The uvicorn ``Config`` running this lifespan: found on the await chain (uvicorn's ``LifespanOn.main`` has it as
    ``self.config``), whatever middleware or framework wraps ``receive`` in between."""
    try:
        from uvicorn.config import Config
    except ImportError:  # pragma: no cover - uvicorn is a dependency
        return None
    frame = sys._getframe(1)
    while frame is not None:
        config = getattr(frame.f_locals.get("self"), "config", None)
        if isinstance(config, Config):
            return config
        frame = frame.f_back
    return None


def bound_host(settings: Settings) -> str | None:
    """The host the server binds: uvicorn's own config when uvicorn runs the lifespan, else ``HOST``.

    None for a Unix socket or an inherited file descriptor (not reachable over the network by itself)."""
    config = _uvicorn_config()
    if config is None:
        return settings.host
    if config.uds or config.fd is not None:
        return None
    return str(config.host)


def startup_problem(settings: Settings, host: str | None) -> str | None:
    if settings.api_key is not None:
        return None
    if settings.app_env == "production":
        return ("refusing to start in production without an API key: set API_KEY (in the environment or .env) to a "
                f"long random value, for example the output of: {MAKE_A_KEY}")
    if host is not None and not is_loopback(host):
        return (f"refusing to serve on {host} without an API key: anyone who can reach this machine could use the "
                f"API. Set API_KEY (for example the output of: {MAKE_A_KEY}), or listen on 127.0.0.1 only.")
    return None


class StartupGuard:
    """ASGI middleware: answers ``lifespan.startup`` with a failure when :func:`startup_problem` finds one."""

    def __init__(self, app, *, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        first = await receive()
        if first["type"] == "lifespan.startup":
            problem = startup_problem(self.settings, bound_host(self.settings))
            if problem:  # uvicorn logs the message, then exits
                await send({"type": "lifespan.startup.failed", "message": problem})
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)
