"""Gemma's own turn format, for a GGUF with no chat template of its own."""

from __future__ import annotations

from typing import Sequence

from app.services.llm.types import ChatMessage

GEMMA_STOP = ["<end_of_turn>", "<start_of_turn>"]


def gemma_prompt(messages: Sequence[ChatMessage]) -> str:
    """Gemma's turn format. It has no system role: system text is folded into the first user turn."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns = [m for m in messages if m.role != "system"]
    parts: list[str] = []
    pending_system = system
    for m in turns:
        role = "model" if m.role == "assistant" else "user"
        text = m.content
        if role == "user" and pending_system:
            text, pending_system = f"{pending_system}\n\n{text}", ""
        parts.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    if pending_system:  # a system prompt with no user turn yet
        parts.append(f"<start_of_turn>user\n{pending_system}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts)
