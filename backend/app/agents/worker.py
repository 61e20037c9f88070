"""The LiveKit agent worker: ``python -m app.agents.worker dev | start | console | connect | download-files``.

The worker registers with the LiveKit server under ``LIVEKIT_AGENT_NAME``; user tokens from
``POST /v1/livekit/token`` dispatch that name, so the agent joins when the user does.

Every job (one conversation) runs as a thread of the worker process, and all of them share the
process's one set of models (``app.agents.runtime``): the LLM's fair queue and time-slicing already
share one model between many conversations. The models load once, when the worker starts.

The load the worker reports to LiveKit answers "can this worker take one more conversation?": its
busy job slots (``LIVEKIT_WORKER_MAX_JOBS``) and its free memory, not the CPU, which its own models
saturate by design whenever anyone is answered. ``start`` drains on SIGTERM: it stops taking jobs
and lets running conversations finish.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest, cli
from livekit.agents.voice.room_io import AudioInputOptions, RoomOptions

from app.agents import runtime
from app.agents.room_memory import RoomMemory
from app.agents.turn_trace import TurnTrace
from app.agents.voice_agent import GemmaVoiceAgent, create_agent_session
from app.audio.codec import WHISPER_RATE
from app.config.settings import Settings, get_settings
from app.logging_redaction import install_log_redaction
from app.services.livekit_tokens import agent_identity

log = logging.getLogger("app.agents.worker")

# A job runner's start-up; the models load beside it (the load reads "full" until they are ready).
INITIALIZE_PROCESS_TIMEOUT_S = 30.0
# On SIGTERM, how long running conversations may go on (compose's stop_grace_period should exceed it).
DRAIN_TIMEOUT_S = 600
# What LiveKit reads as "no room at all": models not ready, or too little memory for one more conversation.
FULL = 1.0
SERVER_COMMANDS = {"start", "dev", "connect"}
PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
ROOM_FRAME_MS = 20  # the user's audio reaches the session in frames of this length
_FLAGS = {"LIVEKIT_URL": "--url", "LIVEKIT_API_KEY": "--api-key", "LIVEKIT_API_SECRET": "--api-secret"}


def job_options(metadata: str | None, settings: Settings) -> dict[str, str]:
    """``instructions`` and ``voice`` from a job's metadata (a JSON string from the user's token), if any.

    Anything else in it, or metadata that isn't a JSON object, is ignored: it comes from the client.
    """
    try:
        data = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        log.warning("job metadata is not JSON; ignoring it")
        return {}
    if not isinstance(data, dict):
        return {}
    options = {}
    for key in ("instructions", "voice"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            options[key] = value.strip()[:settings.max_text_chars]
    return options


def room_options() -> RoomOptions:
    # 16 kHz input is all the VAD and Whisper use. Pre-connect audio: what the browser recorded while
    # the agent was still joining (sent on the byte stream `lk.agent.pre-connect-audio-buffer` for a
    # track published with the TF_PRECONNECT_BUFFER feature) is played into the session first.
    # 20 ms frames, as WebRTC receives them (one Opus packet each): the framework's default of 50 ms
    # held the end of each utterance back by ~30 ms more on its way to the VAD (bench.room_latency).
    # The output stays at the framework's 24 kHz: piper's 22.05 kHz is no whole number of samples per
    # 10 ms, and handing it to WebRTC as it is made the audio arrive ~15 ms later.
    return RoomOptions(audio_input=AudioInputOptions(sample_rate=WHISPER_RATE, frame_size_ms=ROOM_FRAME_MS,
                                                     pre_connect_audio=True))


def available_memory_mb() -> float:
    """Memory this process could still take: the machine's, or its cgroup's (a container) if less."""
    available = psutil.virtual_memory().available
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available / 1_000_000


def worker_load(server: AgentServer, *, settings: Settings) -> float:
    """The load this worker reports: its busy job slots, scaled so that all busy reads as the threshold.

    ``LIVEKIT_WORKER_LOAD_THRESHOLD`` x busy / ``LIVEKIT_WORKER_MAX_JOBS``: below the threshold (and
    the server's target_load) while a slot is free, at it when none is; ``FULL`` while the models are
    not ready or free memory is under ``LIVEKIT_JOB_MEMORY_MB``. The CPU plays no part: the models
    use all of it whenever they answer anyone, and sharing them is what the queues are for.
    """
    why = runtime.models_not_ready()
    _say_why_full(why)
    if why is not None:
        return FULL
    busy = len(server.active_jobs)
    if busy < settings.livekit_worker_max_jobs and available_memory_mb() < settings.livekit_job_memory_mb:
        return FULL
    return settings.livekit_worker_load_threshold * min(1.0, busy / settings.livekit_worker_max_jobs)


def _reported_load(server: AgentServer, *, settings: Settings,
                   on_load: Callable[[float], None] | None) -> float:
    load = worker_load(server, settings=settings)
    if on_load is not None:
        on_load(load)
    return load


_last_reason: list[str | None] = [None]


def _say_why_full(why: str | None) -> None:
    """Log, once each time it changes, why the worker takes no room (a model loading, its server away)."""
    if why == _last_reason[0]:
        return
    if why is not None:
        log.warning("taking no room: %s", why)
    elif _last_reason[0] is not None:
        log.info("every model is ready: taking rooms")
    _last_reason[0] = why


def health_port(port: int) -> int:
    """``port`` if it is free, else 0 (any free port): a second worker on the host must still start."""
    if port == 0:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the framework's server binds it
        try:
            probe.bind(("", port))
        except OSError:
            log.warning("health port %d is taken (another worker?): this one serves its health check on a "
                        "free port instead (see its 'HTTP server listening' line)", port)
            return 0
    return port


def build_server(settings: Settings, *, in_process: bool = False,
                 on_load: Callable[[float], None] | None = None) -> AgentServer:
    """The worker. ``in_process``: inside the API (health on a loopback port of its own, never gives up
    reaching LiveKit); otherwise the standalone ``python -m app.agents.worker``. ``on_load``: told each load
    the worker reports (the framework sends it to the server as it is computed)."""
    secret = settings.livekit_api_secret.get_secret_value() if settings.livekit_api_secret else None
    # The framework preloads its local end-of-turn model (~250 MB) into every worker; the sessions here use
    # silero's VAD and no end-of-turn model unless asked (create_agent_session(turn_detector=True) loads it).
    os.environ.setdefault(PRELOAD_LOCAL_INFERENCE, "0")
    options: dict[str, Any] = (
        {"host": "127.0.0.1", "port": 0, "max_retry": sys.maxsize} if in_process
        else {"port": health_port(settings.livekit_worker_port)}
    )
    server = AgentServer(
        ws_url=settings.livekit_url, api_key=settings.livekit_api_key, api_secret=secret,
        # Jobs are threads of this process and share its models.
        job_executor_type=JobExecutorType.THREAD,
        setup_fnc=prewarm, load_fnc=functools.partial(_reported_load, settings=settings, on_load=on_load),
        # The same in `dev` and `start`: the load itself says when the worker is full.
        load_threshold=settings.livekit_worker_load_threshold,
        # A warm job thread per slot (they cost a thread and an event loop, no models).
        num_idle_processes=settings.livekit_worker_max_jobs,
        initialize_process_timeout=INITIALIZE_PROCESS_TIMEOUT_S, drain_timeout=DRAIN_TIMEOUT_S,
        **options,
    )
    server.rtc_session(entrypoint, agent_name=settings.livekit_agent_name,
                       on_request=functools.partial(on_request, agent_name=settings.livekit_agent_name))
    return server


# The functions below run in the job threads, each on an event loop of its own.

async def on_request(request: JobRequest, *, agent_name: str) -> None:
    await request.accept(name=agent_name, identity=agent_identity(agent_name, request.id))


async def entrypoint(ctx: JobContext) -> None:
    services = await runtime.get_services()  # the process's models, usable from this job's loop
    settings = services.settings
    # The room's conversation so far (a worker before this one died, the user rejoined), and its lease.
    memory = RoomMemory(settings, ctx.job.room.name, agent_identity(settings.livekit_agent_name, ctx.job.id))
    chat_ctx = await memory.join()
    if chat_ctx is None:  # a second dispatch (the room keeper and the user's token at once): one agent is enough
        log.info("room %s already has its agent: this job leaves", ctx.job.room.name)
        ctx.shutdown(reason="the room already has its agent")
        return
    ctx.add_shutdown_callback(memory.leave)
    options = job_options(ctx.job.metadata, settings)
    session = create_agent_session(services, voice=options.get("voice"))
    memory.attach(session, on_lost=lambda: ctx.shutdown(reason="the room was given to another agent"))
    # The user left (or the session failed): end the job, which frees its slot.
    session.on("close", lambda ev: ctx.shutdown(reason=f"session closed: {ev.reason}"))
    # A connection made anew after its LiveKit node went away (the room is a new one of the same name): this agent
    # was seen staying there without hearing the user. It leaves; the room keeper sends a fresh one, with the history.
    ctx.room.on("reconnected", lambda: ctx.shutdown(reason="its connection to LiveKit was made anew"))
    agent = GemmaVoiceAgent(instructions=options.get("instructions"), settings=settings, chat_ctx=chat_ctx)
    trace = TurnTrace(session, settings.voice_turn_trace) if settings.voice_turn_trace else None
    if trace is not None:
        agent.on_moment = trace.mark
    await session.start(agent, room=ctx.room, room_options=room_options())
    if trace is not None:
        trace.tap_input()


def prewarm(proc: JobProcess) -> None:
    """A job thread's start-up: the process's models start loading if nothing has started them yet.

    It does not wait for them: until they are ready the worker reports itself full, so no job comes.
    """
    runtime.start_services(get_settings())


def missing_settings(settings: Settings, argv: list[str]) -> list[str]:
    """The LiveKit settings a server command lacks (a command-line flag counts as set)."""
    given = {"LIVEKIT_URL": settings.livekit_url, "LIVEKIT_API_KEY": settings.livekit_api_key,
             "LIVEKIT_API_SECRET": settings.livekit_api_secret}
    return [name for name, value in given.items()
            if not value and not any(a == _FLAGS[name] or a.startswith(_FLAGS[name] + "=") for a in argv)]


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    settings = get_settings()
    install_log_redaction(settings)  # the worker holds model servers' keys and LiveKit's secret too
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in SERVER_COMMANDS and (missing := missing_settings(settings, argv)):
        print(f"error: `{command}` needs a LiveKit server, but {', '.join(missing)} "
              f"{'is' if len(missing) == 1 else 'are'} not set (environment or .env). "
              "`console` runs the agent locally without one.", file=sys.stderr)
        return 2
    if command == "download-files":
        from app.models import ModelUnavailable, prepare

        try:
            prepare(settings)  # the embedded models; the framework then fetches what its plugins need
        except ModelUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("the models in the settings are ready", file=sys.stderr)
    if command in SERVER_COMMANDS:
        runtime.start_services(settings)  # load the models while the worker registers
    sys.argv = [sys.argv[0], *argv]
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    sys.exit(main())
