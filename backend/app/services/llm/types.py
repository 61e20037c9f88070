"""What every LLM backend takes and gives: chat messages, generation parameters, usage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    repeat_penalty: float = 1.0  # llama.cpp's, over the last 64 tokens; 1.0 is off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # A conversation's turn: once the reply is written, read the opening of the user's next turn (see
    # ``_Generation.read_ahead``).
    read_ahead: bool = False


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None
    finish_reason: str = "stop"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}
