"""One llama.cpp model in this process (``_Instance``): loading it, its prompt format (the GGUF's chat template,
or Gemma's turn format), tokenizing, and saving and restoring its KV state.

Saving and restoring take llama.cpp's state through its public C API (``llama_state_get_data`` /
``llama_state_set_data`` on ``Llama.ctx``), but have to set the Python wrapper's bookkeeping of the evaluated
tokens by hand: ``input_ids`` / ``n_tokens`` (public attributes, no setter) and ``_requires_eval`` (private).
``Llama.save_state`` / ``load_state`` do all of it publicly but copy the logits too (megabytes a turn, on every
slice and every turn). So llama-cpp-python is pinned (``LLAMA_CPP_VERSION``: pyproject.toml and the Makefile
install it; a model loaded on another version logs an error), and ``tests/test_llm_sharing.py`` checks the
attributes and the behaviour relied on.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import io
import logging
import re
import weakref
from typing import Sequence

from app.config.settings import Settings
from app.models import LLMSource
from app.services.llm.kv_cache import _KVState
from app.services.llm.prompt import GEMMA_STOP, gemma_prompt
from app.services.llm.types import ChatMessage

log = logging.getLogger("app.services.llm")

# The llama-cpp-python whose internals save() / restore() and the read-ahead rely on (see above).
LLAMA_CPP_VERSION = "0.3.36"

# Stand-ins for message texts while a chat template is rendered (private-use characters no text carries).
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")


# Models still loaded at exit are freed while llama-cpp-python still can: left to the garbage collector,
# its free function is already gone and every shutdown prints a TypeError traceback.
_loaded: weakref.WeakSet[_Instance] = weakref.WeakSet()


@atexit.register
def _free_models_at_exit() -> None:
    for inst in list(_loaded):
        inst.close()


class _Instance:
    """One llama.cpp model plus how to turn messages into its prompt."""

    def __init__(self, source: LLMSource, settings: Settings):
        import llama_cpp
        from llama_cpp import Llama

        if llama_cpp.__version__ != LLAMA_CPP_VERSION:
            log.error("llama-cpp-python %s is installed, but this code is written against %s (`make setup` installs "
                      "it): restored KV states may give wrong replies; tests/test_llm_sharing.py says whether they do",
                      llama_cpp.__version__, LLAMA_CPP_VERSION)

        # Not verbose=False: that points the whole process's stdout and stderr (the file descriptors) at
        # /dev/null while the model loads, and every other thread's log lines of that time are lost (a worker's
        # registration with LiveKit, say). What the load prints goes to this module's debug log instead.
        with contextlib.redirect_stderr(io.StringIO()) as load_log:
            self.llama = Llama(model_path=str(source.path), n_ctx=settings.llm_n_ctx,
                               n_threads=settings.llm_n_threads, n_threads_batch=settings.llm_n_threads,
                               verbose=True)
        self.llama.verbose = False  # no prints to stderr per request
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's own log: errors only
        log.debug("llama.cpp loaded %s:\n%s", source.path, load_log.getvalue())
        template = self.llama.metadata.get("tokenizer.chat_template")
        if source.has_chat_template is False:
            template = None
        self.formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = self.llama.detokenize([self.llama.token_eos()]).decode("utf-8", "ignore")
            bos = self.llama.detokenize([self.llama.token_bos()]).decode("utf-8", "ignore")
            self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self.chat_format = "gguf-template" if self.formatter else "gemma"
        _loaded.add(self)

    def close(self) -> None:
        _loaded.discard(self)
        self.llama.close()

    def save(self) -> _KVState:
        """The evaluated tokens and their KV cache (llama.cpp's state: a few MB for a short chat)."""
        import llama_cpp

        ctx = self.llama.ctx
        buffer = (ctypes.c_uint8 * llama_cpp.llama_state_get_size(ctx))()
        used = llama_cpp.llama_state_get_data(ctx, buffer, len(buffer))
        n = self.llama.n_tokens
        return _KVState(state=ctypes.string_at(buffer, used), input_ids=self.llama.input_ids[:n].copy())

    def restore(self, kept: _KVState) -> None:
        import llama_cpp

        state = (ctypes.c_uint8 * len(kept.state)).from_buffer_copy(kept.state)
        if llama_cpp.llama_state_set_data(self.llama.ctx, state, len(kept.state)) != len(kept.state):
            raise RuntimeError("llama.cpp refused the saved state")
        # No public API sets these without restoring logits too (Llama.load_state): written as load_state writes
        # them (llama-cpp-python 0.3.36; tests/test_llm_sharing.py checks both).
        n = len(kept.input_ids)
        self.llama.input_ids[:n] = kept.input_ids
        self.llama.n_tokens = n
        # Private: the logits are not restored, so the next completion must re-evaluate a token before sampling,
        # even for a prompt the state holds whole.
        self.llama._requires_eval = True

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        if self.formatter is None:
            return gemma_prompt(messages), list(GEMMA_STOP)
        result = self.formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        stop = result.stop if isinstance(result.stop, list) else [result.stop]
        return result.prompt, [s for s in stop if s]  # an empty stop string would end every reply at once

    def encode(self, messages: Sequence[ChatMessage], *,
               until_last_content: bool = False) -> tuple[list[int], list[str]]:
        """The prompt's tokens and stop strings. Only the template's own text may become control tokens:
        what the messages say is tokenized as plain text, so a user who types ``<end_of_turn>`` or
        ``<|im_end|>`` cannot close their turn and write the model's. ``until_last_content``: only the tokens
        before the last message's text (its turn's opening)."""
        marked = [ChatMessage(m.role, f"{_MARK_OPEN}{i}{_MARK_CLOSE}") for i, m in enumerate(messages)]
        prompt, stop = self.render(marked)
        tokens: list[int] = []
        position = 0
        for found in _MARK.finditer(prompt):
            tokens += self._tokenize(prompt[position:found.start()], special=True, first=not tokens)
            if until_last_content and int(found.group(1)) == len(messages) - 1:
                return tokens, stop
            tokens += self._tokenize(messages[int(found.group(1))].content, special=False, first=not tokens)
            position = found.end()
        tokens += self._tokenize(prompt[position:], special=True, first=not tokens)
        return tokens, stop

    def _tokenize(self, text: str, *, special: bool, first: bool) -> list[int]:
        add_bos = first and self.formatter is None  # a chat template writes its own BOS
        if not text and not add_bos:
            return []
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def count(self, text: str) -> int:
        return len(self._tokenize(text, special=False, first=False))

    def truncate(self, text: str, max_tokens: int) -> str:
        tokens = self._tokenize(text, special=False, first=False)[:max(0, max_tokens)]
        return self.llama.detokenize(tokens).decode("utf-8", "ignore")
