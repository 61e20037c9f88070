"""Health, readiness and Prometheus metrics (no /v1 prefix, never behind the API key).

Open to anyone, they say what is ready and nothing more: each component's ``state`` and ``ready``. The details
(model names and files, the OpenAudio URL, load errors, queue figures) need the API key, like ``/v1``
(or are shown to all when no API_KEY is set, which is only allowed on a loopback address).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ServicesDep, api_key_ok
from app.metrics import MODEL_READY, REGISTRY

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live():
    return {"status": "alive"}


PUBLIC_FIELDS = ("state", "ready")


def _status(svc, detailed: bool) -> dict:
    status = svc.status()
    return status if detailed else {k: status[k] for k in PUBLIC_FIELDS if k in status}


def _detailed(request: Request, services) -> bool:
    return api_key_ok(request, services.settings)


def _components(services, detailed: bool) -> dict:
    return {name: _status(svc, detailed) for name, svc in services.components.items()}


def _livekit_agent(request: Request) -> dict | None:
    """The in-process LiveKit agent's status, where the API runs one (``make run``): part of readiness."""
    livekit = getattr(request.app.state, "livekit", None)
    return livekit.agent_status() if livekit is not None else None


@router.get("/health/ready")
async def ready(request: Request, services: ServicesDep):
    components = _components(services, _detailed(request, services))
    ok = services.ready
    if (agent := _livekit_agent(request)) is not None:  # LiveKit mode is served from here: ready once it can be
        components["livekit_agent"] = agent
        # (A LiveKit server that can't be reached doesn't hold the rest of the API back: the agent keeps trying.)
        ok = ok and (agent["ready"] or agent["state"] == "unreachable")
    return JSONResponse({"status": "ready" if ok else "not_ready", "components": components},
                        status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "5"})


@router.get("/health")
async def health(request: Request, services: ServicesDep):
    return {"status": "ok" if services.ready else "degraded",
            "components": _components(services, _detailed(request, services)),
            "livekit_configured": request.app.state.settings.livekit_configured}


def _one(request: Request, services, name: str) -> JSONResponse:
    status = _status(services.components[name], _detailed(request, services))
    return JSONResponse(status, status_code=200 if status["ready"] else 503)


@router.get("/health/llm")
async def health_llm(request: Request, services: ServicesDep):
    return _one(request, services, "llm")


@router.get("/health/stt")
async def health_stt(request: Request, services: ServicesDep):
    return _one(request, services, "stt")


@router.get("/health/tts")
async def health_tts(request: Request, services: ServicesDep):
    return _one(request, services, "tts")


@router.get("/metrics")
async def metrics(services: ServicesDep):
    for name, svc in services.components.items():
        MODEL_READY.labels(component=name).set(1 if svc.state == "ready" else 0)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
