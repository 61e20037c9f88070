"""GemmaLLM: LiveKit Agents' LLM interface over the project's ``LLMService`` (llama.cpp, or a model server).

The service owns the model, its queue and its prompt format (the model's chat template, or Gemma's
turn format); this plugin only turns a ``ChatContext`` into chat messages and the service's text
stream into ``ChatChunk``s.
"""

from __future__ import annotations

import logging
from typing import Any

from livekit.agents import APIConnectOptions, NotGivenOr, llm, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN

from app.agents.plugins._errors import api_error
from app.agents.plugins._loading import ModelLoadWait
from app.agents.runtime import LOAD_WAIT_S, shared_services
from app.agents.sentences import FirstPieceEnd
from app.services.base import ServiceError
from app.services.container import Services
from app.services.llm import ChatMessage, GenerationParams, LLMGate, LLMService, Usage

log = logging.getLogger("app.agents.llm")


def chat_messages(chat_ctx: llm.ChatContext) -> list[ChatMessage]:
    """A ChatContext as the service's messages: text only; tool calls and results rendered as text."""
    messages: list[ChatMessage] = []
    provider_messages, _ = chat_ctx.to_provider_format("openai")
    for message in provider_messages:
        role = message["role"]
        text = _text(message.get("content"))
        if role == "developer":
            role = "system"
        elif role == "tool":  # small chat templates know no tool role
            role, text = "user", f"[tool result] {text}"
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            text = f"{text}\n[called {fn['name']}({fn['arguments']})]".strip()
        # Spaces around a message mean nothing, but change the prompt's tokens (a leading space on a question
        # was enough to change the embedded model's answer from the one its history gave).
        if text := text.strip():
            messages.append(ChatMessage(role=role, content=text))
    return messages


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    # a list of parts (images and text): only the text reaches a text model
    return "".join(part.get("text", "") for part in content or [] if part.get("type") == "text")


class GemmaLLM(llm.LLM):
    def __init__(self, *, services: Services | None = None, temperature: float | None = None,
                 max_tokens: int | None = None, top_p: float = 0.95,
                 llm_gate: LLMGate | None = None, load_timeout: float = LOAD_WAIT_S) -> None:
        """``services``: default, the process-wide ones (``app.agents.runtime``).
        ``temperature``: default ``VOICE_TEMPERATURE``.
        ``max_tokens``: default ``VOICE_MAX_REPLY_TOKENS``: spoken replies are short.
        ``llm_gate``: while it is clear, generation pauses (see ``OpenAudioTTS``).
        ``load_timeout``: how long requests wait for a model that is still loading (``ModelLoadWait``)."""
        super().__init__()
        self._services = services or shared_services()
        self.llm_gate = llm_gate
        self._loaded = ModelLoadWait("the language model", load_timeout)
        if temperature is None:
            temperature = self._services.settings.voice_temperature
        if not 0.0 <= temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")
        self._params = GenerationParams(
            max_tokens=max_tokens or self._services.settings.voice_max_reply_tokens,
            temperature=temperature, top_p=top_p,
            repeat_penalty=self._services.settings.voice_repeat_penalty, read_ahead=True)
        self._warned_tools = False

    @property
    def max_tokens(self) -> int:
        """The longest reply, in tokens: the room a conversation leaves in the context."""
        return self._params.max_tokens

    @property
    def temperature(self) -> float:
        return self._params.temperature

    @property
    def service(self) -> LLMService:
        return self._services.llm

    async def wait_loaded(self) -> None:
        """Until the model has loaded; a non-retryable ``APIStatusError`` if it failed to, or took too long."""
        await self._loaded(self.service)

    @property
    def model(self) -> str:
        return self.service.model_name

    @property
    def provider(self) -> str:
        return self.service.engine  # llama.cpp, or an OpenAI-compatible server

    def update_options(self, *, temperature: float | None = None, max_tokens: int | None = None) -> None:
        if temperature is not None:
            self._params.temperature = temperature
        if max_tokens is not None:
            self._params.max_tokens = max_tokens

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> GemmaLLMStream:
        if tools and not self._warned_tools:
            self._warned_tools = True
            log.warning("GemmaLLM ignores tools: the local models have no tool-calling format")
        return GemmaLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options,
                              params=GenerationParams(**vars(self._params)))


class GemmaLLMStream(llm.LLMStream):
    def __init__(self, gemma: GemmaLLM, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool],
                 conn_options: APIConnectOptions, params: GenerationParams) -> None:
        super().__init__(gemma, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._gemma = gemma
        self._params = params
        self.usage = Usage()  # of the latest attempt: tokens, time to first token, finish reason

    async def _run(self) -> None:
        request_id = utils.shortuuid("gemma_")
        self.usage = usage = Usage()
        await self._gemma.wait_loaded()
        # Where the TTS will start on the first piece (and close the gate): the model pauses right there.
        pieces = self._gemma.service.stream_chat(chat_messages(self.chat_ctx), self._params, usage,
                                                 gate=self._gemma.llm_gate, pause_after=FirstPieceEnd())
        sent = False
        try:
            async for piece in pieces:
                self._event_ch.send_nowait(
                    llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece)))
                sent = True
        except ServiceError as exc:
            raise api_error(exc, output_sent=sent) from exc
        finally:
            # Also on cancellation (the user interrupted): closing the stream stops generation.
            await pieces.aclose()
        self._event_ch.send_nowait(llm.ChatChunk(id=request_id, usage=llm.CompletionUsage(
            completion_tokens=usage.completion_tokens, prompt_tokens=usage.prompt_tokens,
            total_tokens=usage.total_tokens)))
