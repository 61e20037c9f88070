"""The one model is time-sliced: a long reply does not hold back the next request's first words."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from typing import Callable

import httpx
import numpy as np
import pytest

from app.config.settings import Settings
from app.models import resolve_llm
from app.services.llm import ChatMessage, GenerationParams, LLMService, Usage
from app.services.llm.kv_cache import common_prefix
from app.services.llm.llama_model import LLAMA_CPP_VERSION, _Instance

BACKEND = Path(__file__).resolve().parents[1]
LONG = {"prompt": "Write a very long story about a dragon who learns to cook.", "max_tokens": 200,
        "temperature": 0.0}


async def stream(c: httpx.AsyncClient, body: dict, on_token=None) -> tuple[dict, float]:
    """Streams /v1/generate_stream; returns the done event and when its first token arrived."""
    first = None
    async with c.stream("POST", "/v1/generate_stream", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "token" and first is None:
                first = time.monotonic()
                if on_token:
                    on_token()
            if event["type"] in ("done", "error"):
                return {**event, "ended": time.monotonic()}, first
    raise AssertionError("the stream ended without a done event")


async def test_a_long_reply_shares_the_model(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
        alone = (await c.post("/v1/generate", json=LONG)).json()
        long_started = asyncio.Event()

        async def short_request():
            await long_started.wait()
            return await stream(c, {"prompt": "Say hello.", "max_tokens": 8})

        (long_reply, _), (short_reply, short_first) = await asyncio.gather(
            stream(c, LONG, on_token=long_started.set), short_request())

    assert long_reply["type"] == short_reply["type"] == "done", (long_reply, short_reply)
    assert long_reply["usage"]["completion_tokens"] > 3 * server.services.settings.llm_slice_tokens
    # The short request spoke while the long one was still being written, and finished first.
    assert short_first < long_reply["ended"] and short_reply["ended"] < long_reply["ended"]
    # The long reply resumed from its saved state: greedy decoding wrote the same words as alone.
    assert long_reply["text"] == alone["text"]


def test_a_conversation_gets_its_context_back_after_another_used_the_model(server, client):
    llm = server.services.llm

    def turn(history: list[dict]) -> dict:
        r = client.post("/v1/generate", json={"messages": history, "max_tokens": 24, "temperature": 0.0})
        assert r.status_code == 200, r.text
        server.call(llm.wait_idle(30), timeout=35)  # the reply's state is kept just after the reply is sent
        return r.json()

    story = [{"role": "system", "content": "You are a patient teacher. " * 12},
             {"role": "user", "content": "Explain what a rainbow is."}]
    story += [{"role": "assistant", "content": turn(story)["text"]}, {"role": "user", "content": "Why is it curved?"}]
    turn([{"role": "user", "content": "Name three fruits."}])  # another conversation takes the model's KV cache
    hits = llm.status()["state_cache"]["hits"]
    assert turn(story)["text"]
    assert llm.status()["state_cache"]["hits"] == hits + 1


@pytest.fixture(scope="module")
def instance():
    """The embedded model, loaded by itself (no service around it)."""
    settings = Settings(app_env="test", _env_file=None)
    inst = _Instance(resolve_llm(settings), settings)
    yield inst
    inst.close()


def rainbow(inst: _Instance) -> tuple[list[int], Callable[[], str]]:
    """A prompt's tokens, and its greedy continuation (24 tokens) from whatever the KV cache holds."""
    prompt, _ = inst.render([ChatMessage("system", "You are a patient teacher."),
                             ChatMessage("user", "Explain what a rainbow is.")])
    tokens = inst.llama.tokenize(prompt.encode(), add_bos=False, special=True)

    def greedy() -> str:
        return inst.llama.create_completion(tokens, max_tokens=24, temperature=0.0)["choices"][0]["text"]

    return tokens, greedy


def test_a_restored_state_continues_exactly_as_the_original(instance):
    inst = instance
    _, greedy = rainbow(inst)
    inst.llama.reset()
    original = greedy()
    kept = inst.save()
    inst.llama.reset()
    inst.llama.eval(inst.llama.tokenize(b"Something else entirely, to overwrite the cache."))
    inst.restore(kept)
    assert greedy() == original
    inst.llama.reset()
    assert greedy() == original  # and the same as from scratch


def test_a_restored_state_holding_the_whole_prompt_is_read_again_before_sampling(instance):
    """A kept state is restored without its logits (``_requires_eval``): with the prompt all in the state, the
    next completion must still evaluate its last token rather than sample from whatever was evaluated last."""
    inst = instance
    tokens, greedy = rainbow(inst)
    inst.llama.reset()
    original = greedy()
    inst.llama.reset()
    inst.llama.eval(tokens)
    kept = inst.save()
    assert len(kept.input_ids) == len(tokens)
    inst.llama.reset()
    inst.llama.eval(inst.llama.tokenize(b"Something else entirely, to leave other logits behind."))
    inst.restore(kept)
    assert greedy() == original


def test_llama_cpp_is_the_pinned_version():
    """save() / restore() and the read-ahead set llama-cpp-python's bookkeeping by hand (llama_model.py)."""
    import llama_cpp

    pin = f"llama-cpp-python=={LLAMA_CPP_VERSION}"
    assert llama_cpp.__version__ == LLAMA_CPP_VERSION, (
        f"llama-cpp-python {llama_cpp.__version__} is installed; llama_model.py relies on the internals of "
        f"{LLAMA_CPP_VERSION}: check them (the tests here) before moving LLAMA_CPP_VERSION and the pins")
    assert f'"{pin}"' in (BACKEND / "pyproject.toml").read_text()
    assert pin in (BACKEND.parent / "Makefile").read_text()


def test_the_llama_internals_the_kv_state_relies_on(instance):
    """What save() / restore() and the read-ahead read and write on the Llama object, as they expect it."""
    import llama_cpp

    llama = instance.llama
    assert llama.ctx and llama_cpp.llama_state_get_size(llama.ctx) > 0  # the handle the state functions take
    assert isinstance(llama.input_ids, np.ndarray) and llama.input_ids.dtype == np.intc
    assert llama.input_ids.shape == (llama.n_ctx(),)
    tokens = llama.tokenize(b"Three small words")
    llama.reset()
    assert llama.n_tokens == 0 and llama._requires_eval is True
    llama.eval(tokens)
    assert isinstance(llama.n_tokens, int) and llama.n_tokens == len(tokens)
    assert list(llama.input_ids[:llama.n_tokens]) == tokens and llama._requires_eval is False
    llama.n_tokens = 1  # the read-ahead's truncation: eval() reads on from there
    llama.eval(tokens[1:])
    assert llama.n_tokens == len(tokens) and list(llama.input_ids[:len(tokens)]) == tokens


async def test_after_a_reply_only_the_users_next_words_are_left_to_read():
    """A conversation's reply is followed by the template's opening of the next user turn, read at once, so the
    next turn reads only the user's words, and the model sees the same as if it read the whole prompt."""
    service = LLMService(Settings(app_env="test", _env_file=None, llm_instances=1, llm_state_cache_mb=0))
    await service.start()
    await service.wait_ready(60)
    try:
        inst = service.backend._free[0]
        llama = inst.llama
        history = [ChatMessage("system", "You are brief."), ChatMessage("user", "What is the capital of France?")]

        async def reply(read_ahead: bool) -> str:
            text, _ = await service.chat(history, GenerationParams(max_tokens=24, temperature=0.0,
                                                                    read_ahead=read_ahead))
            await service.wait_idle(10)
            return text

        def already_read(first_reply: str) -> tuple[int, list[int], list[int]]:
            following = [*history, ChatMessage("assistant", first_reply), ChatMessage("user", "And of Spain?")]
            tokens, _ = inst.encode(following)
            opening, _ = inst.encode(following, until_last_content=True)
            return common_prefix(llama.input_ids[:llama.n_tokens], np.asarray(tokens, np.intc)), opening, tokens

        held, opening, _ = already_read(await reply(read_ahead=False))
        assert held < len(opening)  # without it, the opening is left for the next turn
        llama.reset()
        held, opening, tokens = already_read(await reply(read_ahead=True))
        assert held == len(opening)

        import llama_cpp

        def next_token_logits() -> np.ndarray:
            llama.eval(tokens[llama.n_tokens:])
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llama.ctx), shape=(llama.n_vocab(),)).copy()

        continued = next_token_logits()
        llama.reset()
        from_scratch = next_token_logits()
        p, q = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in (from_scratch, continued))
        assert continued.argmax() == from_scratch.argmax()
        assert float(np.sum(p * np.log(p / q))) < 0.05  # the same odds, up to batching's rounding (KL ~0.002)
    finally:
        await service.close()


async def test_a_reply_that_reaches_its_length_while_others_wait_ends_there():
    """A reply that has written all its tokens just as its slice ends is done: it must not come back for a slice
    of "0 tokens", which llama.cpp reads as no limit (a 32-token chat once ran for 90 s beside two others)."""
    service = LLMService(Settings(app_env="test", _env_file=None, llm_instances=1, llm_slice_tokens=4))
    await service.start()
    await service.wait_ready(60)
    try:
        async def story() -> Usage:
            usage = Usage()
            async for _ in service.stream_chat([ChatMessage("user", "Write a very long story about a dragon.")],
                                               GenerationParams(max_tokens=4, temperature=0.0), usage):
                pass
            return usage

        for usage in await asyncio.gather(story(), story(), story()):
            assert usage.finish_reason == "length" and usage.completion_tokens <= 5, usage
    finally:
        await service.close()


LOAD_WHILE_ANOTHER_THREAD_WRITES = """
import os, threading, time
from app.config.settings import Settings
from app.models import resolve_llm
from app.services.llm.llama_model import LLAMA_CPP_VERSION, _Instance

stop, written = threading.Event(), []

def write():
    while not stop.is_set():
        os.write(2, b"line %d\\n" % len(written))
        written.append(1)
        time.sleep(0.002)

writer = threading.Thread(target=write)
writer.start()
settings = Settings(app_env="test", _env_file=None)
kept = _Instance(resolve_llm(settings), settings)  # loaded until the process exits
stop.set()
writer.join()
print(len(written))
"""


def test_loading_the_model_loses_no_other_threads_output():
    """A worker's log lines while its model loads (its LiveKit registration, say) reach its stderr: the load
    does not point the process's file descriptors elsewhere, and prints nothing of its own there; nor does
    the process's exit with the model still loaded."""
    run = subprocess.run([sys.executable, "-c", LOAD_WHILE_ANOTHER_THREAD_WRITES], cwd=BACKEND,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.splitlines()
    assert len(lines) == int(run.stdout) > 10
    assert all(line.startswith("line ") for line in lines), [line for line in lines if not line.startswith("line ")][:5]
