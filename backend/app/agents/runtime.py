"""The one ``Services`` of a process, and the one event loop they belong to.

Agent jobs run as threads of one process (``JobExecutorType.THREAD``), each thread with an event loop
of its own, and they all share one set of models. The services are asyncio code (fair queues,
futures, locks) and must only run on one loop, their *home*:

- in the FastAPI process (``LIVEKIT_IN_PROCESS_AGENT``), the app's own loop: ``adopt()``;
- in a standalone worker, a small thread of its own, started by ``start_services()``;
- in tests and scripts with one loop, whichever loop first asked for them.

``get_services()`` returns them ready for the calling loop: the services themselves on their home
loop, or a view (``OnLoop``) whose coroutines and async generators run on the home loop and whose
results come back to the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from typing import Any, AsyncIterator

from app.config.settings import Settings, get_settings
from app.services.base import ServiceUnavailable
from app.services.container import Services

log = logging.getLogger("app.agents.runtime")

# How long a caller of get_services() waits for models another caller is still loading.
LOAD_WAIT_S = 600.0

_lock = threading.Lock()
_services: Services | None = None
_home: asyncio.AbstractEventLoop | None = None
_loading: Any = None  # the load on the home loop: its task there, or a concurrent future from elsewhere


def shared_services(settings: Settings | None = None) -> Services:
    """The process-wide services, created on first use, as the calling loop may use them.

    Called inside a running event loop when they have no home yet, that loop becomes their home and
    they start loading in the background, so a plugin built with no arguments is usable a moment
    later. On any other loop than their home this is an ``OnLoop`` view of them. ``settings`` only
    matter on the first call.
    """
    global _services
    with _lock:
        if _services is None:
            _services = Services.create(settings or get_settings())
        services = _services
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no running loop: start_services() or get_services() starts them
        return services
    with _lock:
        if _home is None or _home.is_closed():
            _set_home(loop)
        home = _home
    _start_loading()
    return services if loop is home else OnLoop.services(services, home)


def adopt(services: Services, loop: asyncio.AbstractEventLoop) -> bool:
    """Make ``services``, which belong to ``loop``, this process's (the API's in-process agent worker).

    False if they already were. Refused if the process already uses other services: two sets of
    models in one process is what this module is here to prevent.
    """
    global _services
    with _lock:
        if _services is services and _home is loop:
            return False
        if _services is not None:
            raise RuntimeError("this process already has agent services of its own")
        _services = services
        _set_home(loop)
        return True


def release(services: Services) -> None:
    """Forget ``services`` (adopted ones whose owner is shutting down); a later call starts afresh."""
    global _services, _home, _loading
    with _lock:
        if _services is services:
            _services, _home, _loading = None, None, None


async def get_services(settings: Settings | None = None) -> Services:
    """The process-wide services, loaded and usable from the calling loop.

    Raises ``ServiceUnavailable`` if a model failed to load.
    """
    services = shared_services(settings)  # (a view of them off their home loop)
    await _wait_ready(services)
    return services


def start_services(settings: Settings | None = None) -> Services:
    """Start loading the models on their home loop, if nobody has; returns at once (the worker's start)."""
    services = shared_services(settings)
    _home_loop()
    _start_loading()
    return services


def prewarm_services(settings: Settings | None = None) -> Services:
    """Load the models and block until each has loaded or failed (scripts that measure the models);
    ``TimeoutError`` if they are still loading after ``LOAD_WAIT_S``.

    Called from a thread with no running loop. The services load on their home loop.
    """
    services = start_services(settings)
    asyncio.run_coroutine_threadsafe(wait_settled(services), _home_loop()).result()
    return services


def models_ready() -> bool:
    """Whether the process's services exist and every model in them is ready."""
    return models_not_ready() is None


def models_not_ready() -> str | None:
    """Why not every model is ready ("llm unreachable: the LLM server at ... is not answering"), or None."""
    services = _services
    if services is None:
        return "the models are not created yet"
    waiting = [f"{name} {c.state}" + (f": {c.error}" if c.error else "")
               for name, c in services.components.items() if c.state != "ready"]
    return "; ".join(waiting) or None


async def _wait_ready(services: Services) -> None:
    await services.start()  # returns at once while another caller's load is in progress...
    # ...so wait for every component to finish, whoever started it (a server that stopped answering is tried
    # by the turns themselves, which end in an apology while it is away).
    await asyncio.gather(*(c.wait_usable(LOAD_WAIT_S) for c in services.components.values()))


async def wait_settled(services: Services, timeout: float = LOAD_WAIT_S) -> None:
    """Until every component's load has ended, ready or failed (each says so itself); ``TimeoutError``,
    naming those still loading, after ``timeout`` seconds."""

    async def settled(component) -> None:
        with contextlib.suppress(ServiceUnavailable):  # failed: settled too (its state says so)
            await component.wait_ready(timeout)

    await asyncio.gather(*(settled(c) for c in services.components.values()))
    pending = {name: c.state for name, c in services.components.items() if c.state in ("idle", "loading")}
    if pending:
        raise TimeoutError(f"the models did not finish loading within {timeout:g} s: "
                           + ", ".join(f"{name} ({state})" for name, state in pending.items()))


def _set_home(loop: asyncio.AbstractEventLoop) -> None:
    global _home
    if _home is not None and _home is not loop and not _home.is_closed():
        raise RuntimeError("the agent services already belong to another event loop")
    _home = loop


def _home_loop() -> asyncio.AbstractEventLoop:
    """The services' loop; a thread of their own when nothing gave them one."""
    with _lock:
        if _home is None or _home.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="agent-services", daemon=True).start()
            _set_home(loop)
        return _home


def _start_loading() -> None:
    """Start loading the models on their home loop, once (a second start() would be harmless too)."""
    global _loading
    with _lock:
        if _loading is not None or _services is None or _home is None:
            return
        services, home = _services, _home
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home:
            _loading = home.create_task(_load(services), name="services-start")
        else:
            _loading = asyncio.run_coroutine_threadsafe(_load(services), home)


async def _load(services: Services) -> None:
    started = time.perf_counter()
    await services.start()
    try:
        await wait_settled(services)  # (parts somebody else started may still be loading)
    except TimeoutError as exc:
        log.error("%s; no agent job can run here until they have", exc)
        return
    failed = {name: c.error for name, c in services.components.items() if c.state == "failed"}
    if failed:
        log.error("models failed to load: %s; no agent job can run here", failed)
    else:
        log.info("models ready in %.1f s", time.perf_counter() - started)


async def _on_loop(loop: asyncio.AbstractEventLoop, awaitable) -> Any:
    """Await ``awaitable`` on ``loop`` (directly when that is the running loop)."""
    if asyncio.get_running_loop() is loop:
        return await awaitable
    # Cancelling the caller cancels the task on the other loop too (asyncio chains the two futures).
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_await(awaitable), loop))


async def _await(awaitable) -> Any:
    return await awaitable


_END = object()


async def _next(iterator) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


async def _close(iterator) -> None:
    try:
        await iterator.aclose()
    except RuntimeError:  # still running: the cancellation that stopped its caller is ending it
        pass


class OnLoop:
    """A view of an object that lives on ``loop``, for code running on other loops (job threads).

    Its coroutine methods run on ``loop``, and so does every step of its async-generator methods;
    the results come back to the caller's loop. Closing such a stream, or cancelling the caller,
    closes the generator on its loop, so generation stops as it would for a local caller. Plain
    attributes and methods are the object's own.
    """

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    @classmethod
    def services(cls, services: Services, loop: asyncio.AbstractEventLoop) -> Services:
        return Services(settings=services.settings, llm=cls(services.llm, loop), stt=cls(services.stt, loop),
                        tts=cls(services.tts, loop))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.isasyncgenfunction(value):
            return functools.wraps(value)(functools.partial(self._stream, value))
        if inspect.iscoroutinefunction(value):
            return functools.wraps(value)(functools.partial(self._call, value))
        return value

    def __repr__(self) -> str:
        return f"OnLoop({self._target!r})"

    async def _call(self, method, *args, **kwargs) -> Any:
        return await _on_loop(self._loop, method(*args, **kwargs))

    async def _stream(self, method, *args, **kwargs) -> AsyncIterator[Any]:
        iterator = method(*args, **kwargs)  # creating it runs none of its code
        if asyncio.get_running_loop() is self._loop:
            async for item in iterator:
                yield item
            return
        finished = False
        try:
            while (item := await _on_loop(self._loop, _next(iterator))) is not _END:
                yield item
            finished = True
        finally:
            if not finished:
                await _on_loop(self._loop, _close(iterator))
