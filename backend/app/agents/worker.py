"""The LiveKit agent worker: ``python -m app.agents.worker dev | start | console | connect | download-files``.

The worker registers with the LiveKit server under ``LIVEKIT_AGENT_NAME``; user tokens from
``POST /v1/livekit/token`` dispatch that name, so the agent joins when the user does. Each job (one
conversation) runs in its own process whose models were loaded before the job arrived (prewarm).
``start`` drains on SIGTERM: it stops taking jobs and lets running conversations finish.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, cli
from livekit.agents.voice.room_io import AudioInputOptions, RoomOptions
from livekit.agents.worker import ServerEnvOption, _DefaultLoadCalc

from app.agents.runtime import get_services, prewarm_services
from app.agents.voice_agent import GemmaVoiceAgent, create_agent_session
from app.audio.codec import WHISPER_RATE
from app.config.settings import Settings, get_settings

log = logging.getLogger("app.agents.worker")

# Loading the models happens here, in prewarm; bigger models than the embedded ones take a while.
INITIALIZE_PROCESS_TIMEOUT_S = 120.0
# Every job process holds its own copy of the models: keep one warm, not one per core.
NUM_IDLE_PROCESSES = 1
# Conversations one worker takes before it reports itself full, whatever the CPU says.
MAX_JOBS = 2
# On SIGTERM, how long running conversations may go on (compose's stop_grace_period should exceed it).
DRAIN_TIMEOUT_S = 600
SERVER_COMMANDS = {"start", "dev", "connect"}
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
    # 16 kHz input is all the VAD and Whisper use; pre-connect audio keeps what the user said
    # while the agent was still joining.
    return RoomOptions(audio_input=AudioInputOptions(sample_rate=WHISPER_RATE, pre_connect_audio=True))


def worker_load(server: AgentServer) -> float:
    """The busier of the CPU (the framework's own measure) and the job slots, so LiveKit spreads jobs."""
    return max(_DefaultLoadCalc.get_load(server), len(server.active_jobs) / MAX_JOBS)


def build_server(settings: Settings) -> AgentServer:
    secret = settings.livekit_api_secret.get_secret_value() if settings.livekit_api_secret else None
    server = AgentServer(
        ws_url=settings.livekit_url, api_key=settings.livekit_api_key, api_secret=secret,
        setup_fnc=prewarm, load_fnc=worker_load,
        # dev never refuses a job; start refuses past LIVEKIT_WORKER_LOAD_THRESHOLD.
        load_threshold=ServerEnvOption(dev_default=math.inf, prod_default=settings.livekit_worker_load_threshold),
        num_idle_processes=ServerEnvOption(dev_default=0, prod_default=NUM_IDLE_PROCESSES),
        initialize_process_timeout=INITIALIZE_PROCESS_TIMEOUT_S, drain_timeout=DRAIN_TIMEOUT_S,
    )
    server.rtc_session(entrypoint, agent_name=settings.livekit_agent_name, on_request=on_request)
    return server


# The functions below run in the job processes: module-level, so they can be sent there.

async def on_request(request: JobRequest) -> None:
    name = get_settings().livekit_agent_name
    await request.accept(name=name, identity=f"agent-{name}-{request.id}")


async def entrypoint(ctx: JobContext) -> None:
    settings = get_settings()
    options = job_options(ctx.job.metadata, settings)
    services = await get_services(settings)  # loaded in prewarm; a TTS server is checked here
    session = create_agent_session(services, voice=options.get("voice"))
    # The user left (or the session failed): end the job, which frees this process.
    session.on("close", lambda ev: ctx.shutdown(reason=f"session closed: {ev.reason}"))
    await session.start(GemmaVoiceAgent(instructions=options.get("instructions"), settings=settings),
                        room=ctx.room, room_options=room_options())


def prewarm(proc: JobProcess) -> None:
    started = time.perf_counter()
    services = prewarm_services(get_settings())
    failed = {name: c.error for name, c in services.components.items() if c.state == "failed"}
    if failed:
        raise RuntimeError(f"models failed to load: {failed}")
    proc.userdata["prewarm_s"] = time.perf_counter() - started
    log.info("models ready in %.1f s", proc.userdata["prewarm_s"])


def missing_settings(settings: Settings, argv: list[str]) -> list[str]:
    """The LiveKit settings a server command lacks (a command-line flag counts as set)."""
    given = {"LIVEKIT_URL": settings.livekit_url, "LIVEKIT_API_KEY": settings.livekit_api_key,
             "LIVEKIT_API_SECRET": settings.livekit_api_secret}
    return [name for name, value in given.items()
            if not value and not any(a == _FLAGS[name] or a.startswith(_FLAGS[name] + "=") for a in argv)]


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    settings = get_settings()
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
    sys.argv = [sys.argv[0], *argv]
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    sys.exit(main())
