"""The remote backend: chat completions streamed from an OpenAI-compatible server (``LLM_BASE_URL``: vLLM,
llama.cpp's ``llama-server``, Ollama's ``/v1``, llama-cpp-python's server, another GemmaVoice API).

Nothing is loaded here. The server owns the model, its prompt format and its batching; this backend sends
the messages with the ``openai`` SDK and passes the streamed text on. Closing the stream (a reply the user
talked over) closes the HTTP response, and the server stops generating when it sees its client gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, AsyncIterator, Callable, Sequence

import openai

from app.config.settings import Settings
from app.services.base import ModelService
from app.services.llm.gate import LLMGate
from app.services.llm.types import ChatMessage, GenerationParams, Usage
from app.services.remote import ModelServer, ServerFailed

log = logging.getLogger("app.services.llm")

# The server's tokenizer is not ours to call (no OpenAI route for it): a context is budgeted at this many
# UTF-8 bytes a token, fewer than the ~4 English takes in most vocabularies, so a conversation cut to fit
# the estimate fits the server's context too (set LLM_N_CTX to the server's).
BYTES_PER_TOKEN = 3
PER_MESSAGE_TOKENS = 8


class OpenAICompatibleBackend:
    engine = "openai-compatible"

    def __init__(self, settings: Settings, service: ModelService):
        assert settings.llm_base_url
        self.settings = settings
        self.server = ModelServer(service, "LLM server", settings.llm_base_url, settings.llm_api_key, settings)
        self.client = self.server.openai()
        self.model_name = settings.llm_model or "default"
        self.active = 0  # replies streaming from the server now

    async def load(self) -> None:
        await self.server.wait_answering()
        if not self.settings.llm_model and self.server.models:
            self.model_name = self.server.models[0]
        log.info("llm: chat completions from %s, model %r", self.server.describe(), self.model_name)

    def count_text_tokens(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_text_tokens(m.content) + PER_MESSAGE_TOKENS for m in messages)

    def truncate_text(self, text: str, max_tokens: int) -> str:
        return text.encode("utf-8")[:max(0, max_tokens) * BYTES_PER_TOKEN].decode("utf-8", "ignore")

    async def wait_idle(self, timeout: float) -> None:
        return None  # nothing is kept here between requests

    def status(self) -> dict[str, Any]:
        return {**self.server.status(), "model": self.model_name, "served_models": self.server.models,
                "active": self.active}

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name, "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "stream": True, "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repeat_penalty != 1.0:  # llama.cpp's servers (and llama-cpp-python's) read it; others ignore it
            body["extra_body"] = {"repeat_penalty": params.repeat_penalty}
        return body

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage, *,
                     gate: LLMGate | None = None,
                     pause_after: Callable[[str], bool] | None = None) -> AsyncIterator[str]:
        """Text pieces as the server streams them. ``gate``/``pause_after`` hold a local model for the TTS;
        a server's model runs elsewhere, so they do not apply."""
        started = time.perf_counter()
        stream, first = await self.server.first_try(lambda: self._open(self._request(messages, params)))
        usage.first_token_s = time.perf_counter() - started
        # A server that trickles (a token every few seconds, each within the read timeout) still ends in time.
        deadline = started + self.settings.llm_request_timeout
        self.active += 1
        try:
            for piece in self._pieces(first, usage):
                yield piece
            try:
                async for chunk in stream:
                    for piece in self._pieces(chunk, usage):
                        yield piece
                    if time.perf_counter() > deadline:
                        raise ServerFailed(f"{self.server.describe()} did not finish the reply within "
                                           f"{self.settings.llm_request_timeout:g} s (LLM_REQUEST_TIMEOUT)")
            except (openai.APIError, ValueError, KeyError, TypeError) as exc:  # after output: no retry
                raise self.server.failure(exc) from exc
        finally:
            self.active -= 1
            await stream.close()  # also on a barge-in: the server sees its client go and stops

    async def _open(self, body: dict[str, Any]):
        """The stream, and its first chunk that carries text (or ends the reply), within the first-token timeout
        (which covers a server that queues the request before it answers at all)."""
        timeout = self.settings.llm_first_token_timeout_s
        stream = None
        try:
            async with asyncio.timeout(timeout):
                stream = await self.client.chat.completions.create(**body)
                async for chunk in stream:
                    if chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
                        return stream, chunk
                    if chunk.usage is not None:
                        return stream, chunk
        except TimeoutError:
            if stream is not None:
                await stream.close()
            raise ServerFailed(f"{self.server.describe()} sent no token within {timeout:g} s "
                               "(LLM_FIRST_TOKEN_TIMEOUT_S)") from None
        except BaseException:
            if stream is not None:
                await stream.close()
            raise
        await stream.close()
        raise ServerFailed(f"{self.server.describe()} ended the stream before any text")

    @staticmethod
    def _pieces(chunk, usage: Usage) -> list[str]:
        if chunk.usage is not None:
            usage.prompt_tokens = chunk.usage.prompt_tokens or usage.prompt_tokens
            usage.completion_tokens = chunk.usage.completion_tokens or usage.completion_tokens
        if not chunk.choices:
            return []
        choice = chunk.choices[0]
        if choice.finish_reason:
            usage.finish_reason = choice.finish_reason
        text = choice.delta.content or ""
        if text and chunk.usage is None:
            usage.completion_tokens += 1  # a server that reports no usage: a chunk is about a token
        return [text] if text else []

    async def close(self) -> None:
        await self.server.close()
