"""The language model: ``LLMService`` over a local (llama.cpp) or remote (OpenAI-compatible) backend."""

from app.services.llm.gate import LLMGate
from app.services.llm.service import LLMService
from app.services.llm.types import ChatMessage, GenerationParams, Usage

__all__ = ["ChatMessage", "GenerationParams", "LLMGate", "LLMService", "Usage"]
