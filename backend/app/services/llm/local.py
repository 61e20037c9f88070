"""The local backend: llama.cpp models (GGUF) in this process, behind a bounded, fair queue.

Each llama.cpp instance is entered by one thread at a time. Requests wait FIFO for a free instance;
past ``llm_queue_size`` waiters they are refused with 503 + Retry-After instead of piling up.

The model is time-sliced: a generation that has written ``llm_slice_tokens`` tokens while others
wait saves its KV cache, hands the instance to the next in line and queues again, so one long reply
does not hold back everyone else's first words. Resuming restores the cache, so only the last token
or two are evaluated again.

Generation runs in a worker thread and checks a cancel flag between tokens, so a client that goes
away (or a timeout) stops it within a token.

The model itself, its prompt format and its KV state are ``llama_model._Instance``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence, TypeVar

import numpy as np

from app.config.settings import Settings
from app.models import resolve_llm
from app.services.base import BadRequest, ServiceOverloaded, ServiceUnavailable
from app.services.llm.gate import LLMGate
from app.services.llm.kv_cache import RESTORE_MIN_GAIN, _KVState, _StateCache, common_prefix
from app.services.llm.llama_model import _Instance
from app.services.llm.types import ChatMessage, GenerationParams, Usage

log = logging.getLogger("app.services.llm")

T = TypeVar("T")
# How long the model waits, at text a TTS is about to start on (``pause_after``), for the gate to close.
EXPECTED_PAUSE_WAIT_S = 0.02
# The most tokens a read-ahead evaluates (normally the template's few between the reply and the user's words).
READ_AHEAD_MAX_TOKENS = 32


async def _within(deadline: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or ServiceUnavailable once the request's ``deadline`` (loop time) has passed."""
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline - asyncio.get_running_loop().time()))
    except asyncio.TimeoutError:
        raise ServiceUnavailable("generation timed out", retry_after=5) from None


class _Generation:
    """One request's reply, written in slices on whichever instance it holds.

    ``run_slice`` runs in a worker thread and reports to the caller's loop through ``events``:
    ``("text", piece)`` per piece, then ``("end", None)``, ``("pause", state)`` when the slice hands the
    model on to a waiting request (a slice ends after ``llm_slice_tokens`` tokens, or while ``gate`` is
    clear), or ``("error", exc)``. Setting ``cancel`` stops it within a token.
    """

    def __init__(self, service: LlamaCppBackend, messages: Sequence[ChatMessage], params: GenerationParams,
                 usage: Usage, gate: LLMGate | None, loop: asyncio.AbstractEventLoop,
                 pause_after: Callable[[str], bool] | None = None):
        self.service = service
        self.messages, self.params, self.usage, self.gate = messages, params, usage, gate
        self.pause_after = pause_after if gate is not None else None
        self.loop = loop
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancel = threading.Event()
        self.written: list[str] = []  # the reply so far: a resumed slice continues after it
        self.started: float | None = None  # when the first slice began, for the time to first token

    def emit(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def run_slice(self, inst: _Instance, paused: _KVState | None) -> None:
        try:
            tokens, stop = self._prompt(inst)
            n_ctx = self.service.settings.llm_n_ctx
            room = n_ctx - len(tokens)
            if room < 8:
                raise BadRequest(f"the conversation ({len(tokens)} tokens) does not fit the {n_ctx}-token context")
            if paused is None:
                self.usage.prompt_tokens = len(tokens)
                self.started = time.perf_counter()
                self.service._restore_longest_prefix(inst, tokens)
                if log.isEnabledFor(logging.DEBUG):
                    held = common_prefix(inst.llama.input_ids[:inst.llama.n_tokens], np.asarray(tokens, np.intc))
                    log.debug("prompt of %d tokens, %d of them new to the KV cache", len(tokens), len(tokens) - held)
            else:
                inst.restore(paused)
            stream: Iterable[dict] = inst.llama.create_completion(
                tokens, max_tokens=min(self.params.max_tokens - self.usage.completion_tokens, room),
                temperature=self.params.temperature, top_p=self.params.top_p,
                repeat_penalty=self.params.repeat_penalty, stop=stop + list(self.params.stop),
                stream=True, seed=self.params.seed,
            )
            try:
                hand_on = self._write(stream)
            finally:
                getattr(stream, "close", lambda: None)()
            if hand_on:
                self.emit("pause", inst.save())
                return
            self.emit("end", None)
            # After the reply's end has been sent: these cost a few ms each.
            if self.params.read_ahead and self.usage.finish_reason != "cancelled":
                self.read_ahead(inst)
            if self.service._states is not None:
                self.service._states.put(inst.save())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's task
            self.emit("error", exc)

    def read_ahead(self, inst: _Instance) -> None:
        """The conversation's next prompt will hold this reply, then the template's opening of the user's next
        turn (``<|im_end|>\n<|im_start|>user\n``): read those now, while the user listens, so that the next
        turn reads only the user's words (a third fewer tokens for a short question)."""
        reply = "".join(self.written).strip()
        if not reply or self.service._waiting:
            return
        messages = [*self.messages, ChatMessage("assistant", reply), ChatMessage("user", "")]
        tokens, _ = inst.encode(messages, until_last_content=True)
        llama = inst.llama
        held = common_prefix(llama.input_ids[:llama.n_tokens], np.asarray(tokens, np.intc))
        new = tokens[held:]
        if new and len(new) <= READ_AHEAD_MAX_TOKENS and len(tokens) < self.service.settings.llm_n_ctx - 8:
            # No public call drops evaluated tokens without sampling: like Llama.generate itself (0.3.36, pinned),
            # mark only the common prefix as evaluated; eval() then drops the KV cache past it and reads on.
            llama.n_tokens = held
            llama.eval(new)

    def _prompt(self, inst: _Instance) -> tuple[list[int], list[str]]:
        """The prompt's tokens (with the reply so far, when resuming) and its stop strings."""
        tokens, stop = inst.encode(self.messages)
        if self.written:
            tokens += inst._tokenize("".join(self.written), special=False, first=False)
        return tokens, stop

    def _write(self, stream: Iterable[dict]) -> bool:
        """Pass the generated pieces on; True when this slice ends to hand the model on."""
        usage = self.usage
        count = 0
        for chunk in stream:
            if self.cancel.is_set():
                usage.finish_reason = "cancelled"
                return False
            choice = chunk["choices"][0]
            text = choice.get("text") or ""
            if text or not choice.get("finish_reason"):  # the closing chunk carries no token of its own
                usage.completion_tokens += 1
            count += 1
            if usage.first_token_s is None:
                usage.first_token_s = time.perf_counter() - self.started
            if text:
                self.written.append(text)
                self.emit("text", text)
                if self.pause_after is not None and self.pause_after(text):
                    self._expect_pause()
            if choice.get("finish_reason"):
                usage.finish_reason = choice["finish_reason"]
            elif text and self._should_hand_on(count):  # after whole characters only: the text resumes from here
                return True
            self._hold_while_gated()  # before the next token is written
        return False

    def _expect_pause(self) -> None:
        """The text so far ends a piece a TTS is about to start on: give it a moment to close the gate, so that
        the model pauses before writing another token rather than after (the two would share the CPU).
        With others waiting, the slice hands the model on instead."""
        self.gate.wait_closed(EXPECTED_PAUSE_WAIT_S, unless=self._stop_waiting)

    def _hold_while_gated(self) -> None:
        # Paused only while no other request waits: a paused reply must not keep the model idle.
        if self.gate is not None:
            self.gate.wait_open(unless=self._stop_waiting)

    def _stop_waiting(self) -> bool:
        return self.cancel.is_set() or bool(self.service._waiting)

    def stop(self) -> None:
        """Stop within a token, even while held at the gate."""
        self.cancel.set()
        if self.gate is not None:
            self.gate.wake()

    def _should_hand_on(self, count: int) -> bool:
        slice_tokens = self.service.settings.llm_slice_tokens
        if not slice_tokens or not self.service._waiting:
            return False
        if self.usage.completion_tokens >= self.params.max_tokens:
            return False  # done: a slice resumed with 0 tokens left would run on (llama.cpp's 0 is "no limit")
        return count >= slice_tokens or (self.gate is not None and not self.gate.is_set())


class LlamaCppBackend:
    """GGUF models loaded here (``LLM_MODEL_PATH``, ``LLM_HF_REPO``/``LLM_HF_FILE`` or the embedded one)."""

    engine = "llama.cpp"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model_name = "unknown"
        self.model_path: str | None = None
        self._free: list[_Instance] = []
        self._instances: list[_Instance] = []  # loaded, free or not
        self._tokenizer: _Instance | None = None
        self._waiters: deque[asyncio.Future[_Instance]] = deque()  # first come, first served
        self._active = 0
        self._idle = asyncio.Event()  # set while no generation holds an instance
        self._gated: set[_Generation] = set()  # generations that may be held at their gate
        self._idle.set()
        self._states = _StateCache(settings.llm_state_cache_mb * 1_000_000) if settings.llm_state_cache_mb else None
        self._executor = ThreadPoolExecutor(max_workers=settings.llm_instances, thread_name_prefix="llm")

    @property
    def _waiting(self) -> int:
        return len(self._waiters)

    async def load(self) -> None:
        source = await asyncio.to_thread(resolve_llm, self.settings)
        self.model_name, self.model_path = source.name, str(source.path)
        for _ in range(self.settings.llm_instances):
            inst = await asyncio.to_thread(_Instance, source, self.settings)
            self._instances.append(inst)
            self._tokenizer = self._tokenizer or inst
            self._release(inst, active=False)

    # Counting needs only the vocabulary, which generation never changes: any instance will do, busy or not.
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The prompt length of ``messages`` in tokens, as ``stream`` would send them."""
        return len(self._loaded_tokenizer().encode(messages)[0])

    def count_text_tokens(self, text: str) -> int:
        return self._loaded_tokenizer().count(text)

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """The start of ``text`` that fits in ``max_tokens``."""
        return self._loaded_tokenizer().truncate(text, max_tokens)

    def _loaded_tokenizer(self) -> _Instance:
        if self._tokenizer is None:
            raise ServiceUnavailable("the language model is not loaded yet", retry_after=5)
        return self._tokenizer

    async def wait_idle(self, timeout: float) -> None:
        """Return once no generation holds an instance (a finished reply's state is kept by then);
        TimeoutError after ``timeout`` seconds."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    def status(self) -> dict[str, Any]:
        return {"backend": "embedded", "engine": self.engine, "model": self.model_name, "path": self.model_path,
                "instances": self.settings.llm_instances, "active": self._active, "waiting": self._waiting,
                "state_cache": self._states.status() if self._states else None}

    async def _acquire(self, *, admitted: bool = False) -> _Instance:
        """A free instance, or a place at the back of the line. ``admitted``: a paused generation
        coming back, never refused."""
        if self._free and not self._waiters:
            inst = self._free.pop()
        else:
            if not admitted and self._waiting >= self.settings.llm_queue_size:
                raise ServiceOverloaded("the language model is busy; try again shortly", retry_after=2)
            turn: asyncio.Future[_Instance] = asyncio.get_running_loop().create_future()
            self._waiters.append(turn)
            for held in self._gated:  # a reply held at its gate hands the model on instead
                held.gate.wake()
            try:
                inst = await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release(turn.result(), active=False)  # handed over just as we gave up
                elif turn in self._waiters:  # (a release may already have skipped and dropped it)
                    self._waiters.remove(turn)
                raise
        self._active += 1
        self._idle.clear()
        return inst

    def _release(self, inst: _Instance, *, active: bool = True) -> None:
        """Hand the instance straight to the first waiter (so nobody can jump the line), else park it."""
        if active:
            self._active -= 1
            if not self._active:
                self._idle.set()
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(inst)
                return
        self._free.append(inst)

    def _restore_longest_prefix(self, inst: _Instance, tokens: list[int]) -> None:
        """Load the kept state that shares more of the prompt than the instance's own KV cache does."""
        if self._states is None:
            return
        prompt = np.asarray(tokens, dtype=np.intc)
        kept, length = self._states.best(prompt)
        held = common_prefix(inst.llama.input_ids[:inst.llama.n_tokens], prompt)
        if kept is not None and length > held + RESTORE_MIN_GAIN:
            inst.restore(kept)
            self._states.hits += 1

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage, *,
                     gate: LLMGate | None = None,
                     pause_after: Callable[[str], bool] | None = None) -> AsyncIterator[str]:
        """Yield text pieces as they are generated. Closing the iterator stops generation.

        The reply is written in slices (see ``_Generation``); between slices it goes to the back of the
        line with its saved state. ``gate``: while it is clear, generation pauses between tokens, or gives
        the model to a waiting request (a voice reply clears it so its first sentence is synthesized with
        the whole CPU; the model writes far faster than speech). ``pause_after``: called in the generating
        thread with each new piece of text; True when the text so far ends a piece the TTS will start on, so
        the model waits briefly for the gate to close before its next token (ignored without a ``gate``).
        """
        loop = asyncio.get_running_loop()
        generation = _Generation(self, messages, params, usage, gate, loop, pause_after)
        deadline = loop.time() + self.settings.llm_request_timeout
        inst: _Instance | None = await self._acquire()
        paused: _KVState | None = None
        try:
            while True:
                future = loop.run_in_executor(self._executor, generation.run_slice, inst, paused)
                if gate is not None:
                    self._gated.add(generation)
                try:
                    while (event := await _within(deadline, generation.events.get()))[0] == "text":
                        yield event[1]
                finally:
                    self._gated.discard(generation)
                    generation.stop()
                    held, inst = inst, None
                    # The instance is only free again once its thread has really stopped.
                    future.add_done_callback(lambda _f, held=held: loop.call_soon_threadsafe(self._release, held))
                kind, value = event
                if kind == "error":
                    raise value
                if kind == "end":
                    return
                paused = value  # "pause": back of the line; the saved state travels with us
                generation.cancel.clear()
                inst = await _within(deadline, self._acquire(admitted=True))
        finally:
            if inst is not None:  # holding an instance no slice ran on (starting the slice failed)
                self._release(inst)

    async def close(self) -> None:
        """Stops queued work, waits (briefly) for running generation, and frees the models."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(self._executor.shutdown, wait=True), 10)
            for inst in self._instances:  # not while a generation may still run on one
                inst.close()
            self._instances.clear()
            self._free.clear()
            self._tokenizer = None
