"""Refuse to serve when the configuration would leave the API open to others.

- ``APP_ENV=production`` needs ``API_KEY``.
- Without ``API_KEY`` (development, test), the server must listen on a loopback address only.

The check runs at the ASGI ``lifespan.startup`` event, before the models load. The address is the one the
server binds: under the uvicorn command line (``make run``, ``uvicorn app.main:app --host ...``, ``python -m
uvicorn ...``, and the worker processes its ``--workers`` and ``--reload`` start) it is read from that command
line, parsed by uvicorn's own (public) click command, ``UVICORN_*`` environment variables included. Otherwise
(``python -m app``, which passes ``HOST`` to ``uvicorn.run``; a program embedding uvicorn; another ASGI server)
it is the ``HOST`` setting, which such a program must bind. A refusal is reported with
``lifespan.startup.failed``: uvicorn logs the message and exits with status 3.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

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


def uvicorn_command_line(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The options of the uvicorn command line this process runs, by name (``host``, ``uds``, ``fd``...); None
    when it is not uvicorn's command line. The worker processes uvicorn spawns (``--workers``, ``--reload``)
    get their parent's ``sys.argv``, so they find the same command line."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return None
    program = Path(argv[0])
    if not (program.stem == "uvicorn" or (program.name == "__main__.py" and program.parent.name == "uvicorn")):
        return None
    from uvicorn import main as uvicorn_cli  # the click command behind the `uvicorn` program

    with uvicorn_cli.make_context("uvicorn", list(argv[1:]), resilient_parsing=True) as context:
        return dict(context.params)


def bound_host(settings: Settings, argv: list[str] | None = None) -> str | None:
    """The host the server binds: the uvicorn command line's when uvicorn's command line runs, else ``HOST``.

    None for a Unix socket or an inherited file descriptor (not reachable over the network by itself)."""
    options = uvicorn_command_line(argv)
    if options is None:
        return settings.host
    if options.get("uds") or options.get("fd") is not None:
        return None
    return str(options.get("host"))


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
