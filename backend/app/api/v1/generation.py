"""Text generation: ``/v1/generate`` and ``/v1/generate_stream`` (SSE)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from app.api.deps import ServicesDep
from app.api.sse import sse_event, sse_response, started
from app.metrics import LLM_FIRST_TOKEN, LLM_TOKENS
from app.services.base import ServiceError
from app.services.llm import ChatMessage, GenerationParams, Usage

router = APIRouter(tags=["generation"])


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(BaseModel):
    prompt: str | None = None
    messages: list[Message] | None = None
    system: str | None = None
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    stop: list[str] | str | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _one_input(self) -> "GenerateRequest":
        if not (self.prompt and self.prompt.strip()) and not self.messages:
            raise ValueError("send a non-empty `prompt` or a `messages` list")
        return self

    def chat_messages(self) -> list[ChatMessage]:
        out = [ChatMessage("system", self.system)] if self.system else []
        if self.messages:
            out += [ChatMessage(m.role, m.content) for m in self.messages]
        if self.prompt and self.prompt.strip():
            out.append(ChatMessage("user", self.prompt))
        return out

    def params(self) -> GenerationParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                                stop=stop, seed=self.seed)


class GenerateResponse(BaseModel):
    text: str
    usage: dict
    model: str
    finish_reason: str


def record_usage(usage: Usage) -> None:
    LLM_TOKENS.inc(usage.completion_tokens)
    if usage.first_token_s is not None:
        LLM_FIRST_TOKEN.observe(usage.first_token_s)


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, services: ServicesDep) -> GenerateResponse:
    text, usage = await services.llm.chat(body.chat_messages(), body.params())
    record_usage(usage)
    return GenerateResponse(text=text, usage=usage.as_dict(), model=services.llm.model_name,
                            finish_reason=usage.finish_reason)


@router.post("/generate_stream")
async def generate_stream(body: GenerateRequest, services: ServicesDep):
    usage = Usage()
    tokens = await started(services.llm.stream_chat(body.chat_messages(), body.params(), usage))

    async def events():
        begun = time.perf_counter()
        pieces: list[str] = []
        try:
            async for piece in tokens:
                pieces.append(piece)
                yield sse_event({"type": "token", "text": piece})
            record_usage(usage)
            yield sse_event({"type": "done", "text": "".join(pieces), "usage": usage.as_dict(),
                             "finish_reason": usage.finish_reason, "model": services.llm.model_name,
                             "seconds": round(time.perf_counter() - begun, 3)})
        except ServiceError as exc:
            yield sse_event({"type": "error", "code": exc.code, "message": str(exc)})
        finally:
            await tokens.aclose()

    return sse_response(events())
