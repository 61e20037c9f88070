"""Health, readiness and Prometheus metrics (no /v1 prefix, never behind the API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ServicesDep
from app.metrics import MODEL_READY, REGISTRY

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live():
    return {"status": "alive"}


def _components(services) -> dict:
    return {name: svc.status() for name, svc in services.components.items()}


@router.get("/health/ready")
async def ready(services: ServicesDep):
    components = _components(services)
    ok = services.ready
    return JSONResponse({"status": "ready" if ok else "not_ready", "components": components},
                        status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "5"})


@router.get("/health")
async def health(services: ServicesDep):
    return {"status": "ok" if services.ready else "degraded", "components": _components(services),
            "livekit_configured": services.settings.livekit_configured}


def _one(services, name: str) -> JSONResponse:
    status = services.components[name].status()
    return JSONResponse(status, status_code=200 if status["ready"] else 503)


@router.get("/health/llm")
async def health_llm(services: ServicesDep):
    return _one(services, "llm")


@router.get("/health/stt")
async def health_stt(services: ServicesDep):
    return _one(services, "stt")


@router.get("/health/tts")
async def health_tts(services: ServicesDep):
    return _one(services, "tts")


@router.get("/metrics")
async def metrics(services: ServicesDep):
    for name, svc in services.components.items():
        MODEL_READY.labels(component=name).set(1 if svc.state == "ready" else 0)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
