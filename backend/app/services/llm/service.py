"""LLMService: the one language-model service every adapter uses, over a backend that is either local
(llama.cpp in this process, ``app.services.llm.local``) or remote (an OpenAI-compatible server,
``app.services.llm.remote``, when ``LLM_BASE_URL`` is set).

The service checks requests, waits for the model, and keeps the load state health reports; the backend
writes the reply.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

from app.config.settings import Settings
from app.services.base import BadRequest, ModelService
from app.services.llm.gate import LLMGate
from app.services.llm.types import ChatMessage, GenerationParams, Usage


class LLMBackend(Protocol):
    engine: str  # "llama.cpp" | "openai-compatible"
    model_name: str

    async def load(self) -> None: ...

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage, *,
               gate: LLMGate | None = None, pause_after: Callable[[str], bool] | None = None
               ) -> AsyncIterator[str]: ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int: ...

    def count_text_tokens(self, text: str) -> int: ...

    def truncate_text(self, text: str, max_tokens: int) -> str: ...

    async def wait_idle(self, timeout: float) -> None: ...

    def status(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def create_backend(settings: Settings, service: ModelService) -> LLMBackend:
    if settings.llm_base_url:
        from app.services.llm.remote import OpenAICompatibleBackend

        return OpenAICompatibleBackend(settings, service)
    from app.services.llm.local import LlamaCppBackend

    return LlamaCppBackend(settings)


class LLMService(ModelService):
    component = "llm"

    def __init__(self, settings: Settings, backend: LLMBackend | None = None):
        super().__init__()
        self.settings = settings
        self.backend = backend or create_backend(settings, self)

    @property
    def engine(self) -> str:
        return self.backend.engine

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def server(self):
        return getattr(self.backend, "server", None)

    async def _load(self) -> None:
        await self.backend.load()

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The prompt length of ``messages`` in tokens, as ``stream_chat`` would send them (estimated for a
        remote model)."""
        return self.backend.count_tokens(messages)

    def count_text_tokens(self, text: str) -> int:
        return self.backend.count_text_tokens(text)

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """The start of ``text`` that fits in ``max_tokens``."""
        return self.backend.truncate_text(text, max_tokens)

    async def wait_idle(self, timeout: float) -> None:
        """Return once no generation holds a local model (its reply's state is kept by then); TimeoutError after
        ``timeout`` seconds."""
        await self.backend.wait_idle(timeout)

    def status(self) -> dict[str, Any]:
        return {**super().status(), **self.backend.status()}

    def _check(self, messages: Sequence[ChatMessage], params: GenerationParams) -> None:
        if not messages or not any(m.content.strip() for m in messages if m.role != "system"):
            raise BadRequest("the prompt is empty")
        if sum(len(m.content) for m in messages) > self.settings.max_prompt_chars:
            raise BadRequest(f"the prompt is longer than {self.settings.max_prompt_chars} characters")
        if params.max_tokens > self.settings.max_tokens_cap:
            raise BadRequest(f"max_tokens may be at most {self.settings.max_tokens_cap}")

    async def stream_chat(self, messages: Sequence[ChatMessage], params: GenerationParams,
                          usage: Usage | None = None, *, gate: LLMGate | None = None,
                          pause_after: Callable[[str], bool] | None = None) -> AsyncIterator[str]:
        """Yield text pieces as they are generated. Closing the iterator stops generation.

        ``gate``: while it is clear, a local model pauses between tokens (a voice reply clears it so its first
        sentence is synthesized with the whole CPU). ``pause_after``: called with each new piece; True when the
        text so far ends a piece the TTS will start on, so a local model waits briefly for the gate to close.
        """
        self._check(messages, params)
        await self.wait_usable(self.settings.ready_wait_seconds)
        pieces = self.backend.stream(messages, params, usage if usage is not None else Usage(), gate=gate,
                                     pause_after=pause_after)
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                yield piece

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> tuple[str, Usage]:
        usage = Usage()
        pieces = [piece async for piece in self.stream_chat(messages, params, usage)]
        return "".join(pieces).strip(), usage

    async def close(self) -> None:
        """Stops queued work, waits (briefly) for running generation, and frees a local model."""
        await self.backend.close()
        self.closed()
