"""create_app(): the lifespan starts the services in the background, routers and the web client are mounted."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.agents.inprocess import LiveKitAlongside
from app.api import health
from app.api.deps import require_api_key
from app.api.errors import APIError, install_error_handlers
from app.api.limits import BodySizeLimitMiddleware
from app.api.ratelimit import RateLimitMiddleware
from app.api.v1 import conversation, generation, livekit, openai_compat, realtime, speech
from app.config.settings import Settings, get_settings
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.logging_redaction import install_log_redaction
from app.services.container import Services
from app.services.room_keeper import RoomKeeper
from app.services.room_store import open_room_store
from app.startup_checks import StartupGuard

log = logging.getLogger("app")
API_PREFIXES = {"v1", "health", "metrics", "docs", "openapi.json"}


def _mount_web_client(app: FastAPI, dist: Path) -> None:
    index = dist / "index.html"
    if not index.is_file():
        log.info("web client not built (%s missing): serving the API only", index)
        return
    if (dist / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False)
    async def web_client(path: str):
        if path.split("/", 1)[0] in API_PREFIXES:
            raise APIError(404, "not_found", f"no route /{path}")
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and dist.resolve() in candidate.parents:
            return FileResponse(candidate)
        return FileResponse(index)  # client-side routes


async def start_room_keeper(settings: Settings) -> RoomKeeper | None:
    """The room keeper, where there are LiveKit rooms to keep (never stops the API from serving)."""
    if not (settings.livekit_configured and settings.livekit_keeper):
        return None
    try:
        keeper = RoomKeeper(settings, await asyncio.to_thread(open_room_store, settings))
        await keeper.start()
    except Exception as exc:  # noqa: BLE001
        log.error("no room keeper: rooms whose agent dies stay without one (%s)", exc)
        return None
    return keeper


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction(settings)  # no secret in any log line, uvicorn's access log and tracebacks included
    services = services or Services.create(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Models load in the background: the server answers (health, 503 + Retry-After) while they do.
        loading = asyncio.create_task(services.start())
        app.state.loading = loading
        # LiveKit beside the API (in-process agent, local server on a developer machine), when configured.
        app.state.livekit = livekit = LiveKitAlongside(settings, services)
        await livekit.start()
        # What the API serves with: ``settings``, or a copy of them pointing at the local LiveKit server.
        app.state.settings = livekit.settings
        app.state.room_keeper = keeper = await start_room_keeper(livekit.settings)
        try:
            yield
        finally:
            if keeper is not None:
                await keeper.stop()
            await livekit.stop()
            app.state.settings = settings
            loading.cancel()
            await services.close()

    app = FastAPI(title="GemmaVoice", version="0.1.0", lifespan=lifespan,
                  description="Self-hosted real-time voice assistant: Gemma LLM, Whisper STT, OpenAudio TTS.")
    app.state.services = services
    app.state.settings = settings  # LiveKit's part may be a local server's while the lifespan runs (above)
    app.state.room_keeper = None  # started by the lifespan where LiveKit is configured
    app.state.voice_conversations = {}  # the open WS /v1/conversation/ws and /v1/realtime conversations, by id
    install_error_handlers(app)

    @app.middleware("http")
    async def record(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, name, str(response.status_code)).inc()
        HTTP_LATENCY.labels(request.method, name).observe(time.perf_counter() - started)
        return response

    # Inside CORS (so a 429 carries CORS headers): per-client rate limits; the exposure check at startup.
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(StartupGuard, settings=settings)
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_credentials=False,
                       allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept"],
                       expose_headers=["X-Sample-Rate", "Retry-After"])
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)

    app.include_router(health.router)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
    for module in (generation, speech, conversation, openai_compat, livekit):
        v1.include_router(module.router)
    app.include_router(v1)
    # The WebSocket checks Origin and key itself, before accepting (browsers offer the key as a subprotocol).
    app.include_router(conversation.ws_router, prefix="/v1")
    app.include_router(realtime.ws_router, prefix="/v1")
    app.include_router(livekit.webhook_router, prefix="/v1")  # signed by LiveKit, not the API key
    _mount_web_client(app, settings.web_dist_dir)
    return app


def run() -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())


app = create_app()
