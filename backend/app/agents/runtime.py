"""The one ``Services`` of an agent process, shared by every plugin and session in it.

A LiveKit job process runs one conversation: its models are loaded once (in the worker's prewarm,
before any job arrives) and every plugin built without explicit services uses them.
"""

from __future__ import annotations

import asyncio

from app.config.settings import Settings, get_settings
from app.services.container import Services

# How long a caller of get_services() waits for models another caller is still loading.
LOAD_WAIT_S = 600.0

_services: Services | None = None
_loading: asyncio.Task | None = None


def shared_services(settings: Settings | None = None) -> Services:
    """The process-wide services, created on first use.

    Called inside a running event loop, this also starts loading them in the background, so a
    plugin built with no arguments is usable a moment later. ``settings`` only matter on the first call.
    """
    global _services, _loading
    if _services is None:
        _services = Services.create(settings or get_settings())
    if _loading is None and _idle(_services):
        try:
            _loading = asyncio.get_running_loop().create_task(_services.start(), name="services-start")
        except RuntimeError:  # no running loop: whoever awaits get_services() starts them
            pass
    return _services


async def get_services(settings: Settings | None = None) -> Services:
    """The process-wide services, loaded and ready; raises ServiceUnavailable if a model failed."""
    services = shared_services(settings)
    await services.start()  # returns at once while another caller's load is in progress...
    # ...so wait for every component to finish, whoever started it.
    await asyncio.gather(*(c.wait_ready(LOAD_WAIT_S) for c in services.components.values()))
    return services


def prewarm_services(settings: Settings | None = None) -> Services:
    """Load the models synchronously, before the process has an event loop (the worker's prewarm).

    A network-backed TTS engine (OpenAudio) only health-checks its server when it starts, and its
    HTTP client belongs to the loop it first connects on, so it is started later, on the job's loop,
    by ``get_services()``.
    """
    services = shared_services(settings)
    local = [c for c in services.components.values() if not _remote(c)]
    asyncio.run(_start_all(local))
    return services


async def _start_all(components) -> None:
    await asyncio.gather(*(c.start() for c in components))


def _idle(services: Services) -> bool:
    return all(c.state == "idle" for c in services.components.values())


def _remote(component) -> bool:
    from app.services.openaudio import OpenAudioService

    return isinstance(component, OpenAudioService)
