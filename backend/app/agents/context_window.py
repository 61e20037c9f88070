"""What part of a long conversation the model reads, so that every turn fits its context.

A voice session can last hours. The agent keeps the whole conversation; the model gets the
instructions plus as many recent turns as fit in ``LLM_N_CTX`` (a voice turn: ``VOICE_CONTEXT_TOKENS``) with
room for a reply. Old turns are
dropped in steps, not one per turn: when the conversation no longer fits, it is cut to about half
the room, and that starting point then stays put for many turns. A window that slid every turn
would change the prompt's beginning every turn, and llama.cpp could reuse none of the evaluated
prompt (first token 0.06 s -> 0.35 s, field notes).
"""

from __future__ import annotations

import logging

from livekit.agents import llm

from app.agents.plugins.gemma_llm import chat_messages
from app.services.llm import LLMService

log = logging.getLogger("app.agents.context")

# Tokens a message costs beyond its text (turn markers, role), and a little slack for the template.
PER_MESSAGE_TOKENS = 8
SLACK_TOKENS = 16
# After a cut, the kept turns fill this share of the room: the next cut is many turns away.
KEEP_AFTER_CUT = 0.5


class ContextWindow:
    def __init__(self, service: LLMService, *, reply_tokens: int, max_tokens: int | None = None) -> None:
        """``max_tokens``: read at most this much of the context (default all of ``LLM_N_CTX``)."""
        self._service = service
        context = min(service.settings.llm_n_ctx, max_tokens or service.settings.llm_n_ctx)
        self.budget = context - reply_tokens - SLACK_TOKENS
        self._first_kept: str | None = None  # id of the oldest turn the model still reads
        self.cuts = 0

    def fit(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        fixed = [item for item in chat_ctx.items if _is_instructions(item)]
        turns = [item for item in chat_ctx.items if not _is_instructions(item)]
        ids = [item.id for item in turns]
        if self._first_kept in ids:
            turns = turns[ids.index(self._first_kept):]
        fixed = self._fit_instructions(fixed)
        if self._tokens(fixed + turns) > self.budget:
            turns = self._cut(fixed, turns)
        if len(turns) and self._tokens(fixed + turns) > self.budget:
            turns = turns[:-1] + [self._shorten(turns[-1], self.budget - self._tokens(fixed + turns[:-1]))]
        return llm.ChatContext(items=fixed + turns)

    def _cut(self, fixed: list[llm.ChatItem], turns: list[llm.ChatItem]) -> list[llm.ChatItem]:
        target = KEEP_AFTER_CUT * self.budget
        fixed_cost = self._tokens(fixed)
        costs = [self._item_tokens(item) for item in turns]
        start = 0
        while start < len(turns) - 1 and fixed_cost + sum(costs[start:]) > target:
            start += 1
        # A conversation the model reads starts with the user speaking.
        while start < len(turns) - 1 and _role(turns[start]) != "user":
            start += 1
        self._first_kept = turns[start].id
        self.cuts += 1
        log.info("conversation trimmed to its last %d of %d items (%d-token room)",
                 len(turns) - start, len(turns), self.budget)
        return turns[start:]

    def _fit_instructions(self, fixed: list[llm.ChatItem]) -> list[llm.ChatItem]:
        """Instructions may take half the room at most (a client can set long ones)."""
        room = self.budget // 2
        if not fixed or self._tokens(fixed) <= room:
            return fixed
        return [self._shorten(item, room // len(fixed)) for item in fixed]

    def _shorten(self, item: llm.ChatItem, room: int) -> llm.ChatItem:
        """The message cut to the start that fits ``room`` tokens (a huge typed turn, huge instructions)."""
        if not isinstance(item, llm.ChatMessage):
            return item
        text = self._service.truncate_text(item.text_content or "", max(1, room - PER_MESSAGE_TOKENS))
        log.info("a %s message was cut to %d tokens to fit the context", item.role, room)
        return item.model_copy(update={"content": [text]})

    def _tokens(self, items: list[llm.ChatItem]) -> int:
        messages = chat_messages(llm.ChatContext(items=list(items)))
        return self._service.count_tokens(messages) if messages else 0

    def _item_tokens(self, item: llm.ChatItem) -> int:
        text = item.text_content if isinstance(item, llm.ChatMessage) else str(item)
        return self._service.count_text_tokens(text or "") + PER_MESSAGE_TOKENS


def _is_instructions(item: llm.ChatItem) -> bool:
    return isinstance(item, llm.ChatMessage) and item.role in ("system", "developer")


def _role(item: llm.ChatItem) -> str | None:
    return item.role if isinstance(item, llm.ChatMessage) else None
