"""Agent jobs as threads of one process: each on an event loop of its own, all on one set of models."""

from __future__ import annotations

import asyncio
import threading

import pytest
from helpers import QUESTION_WORDS, until

from app.agents import runtime
from app.agents.runtime import OnLoop
from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.config.settings import Settings
from app.services.base import BadRequest, ModelService
from app.services.container import Services
from app.services.llm import ChatMessage, GenerationParams, LLMService, Usage


def on_threads(count: int, job) -> list:
    """Run ``job(i)`` (a coroutine function) on ``count`` threads, each with its own event loop, as the
    framework's thread executor runs jobs; returns their results (or raises the first failure)."""
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = asyncio.run(job(i))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"test-job-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def test_jobs_on_their_own_loops_share_the_process_models(services, question_pcm):
    async def job(i: int):
        shared = await runtime.get_services()
        assert isinstance(shared.llm, OnLoop) and shared.llm._target is services.llm  # a view, one model
        assert runtime.shared_services().stt._target is services.stt
        pcm, rate = question_pcm
        heard = await shared.stt.transcribe(pcm16_to_float(resample_pcm(pcm, rate, WHISPER_RATE)), language="en")
        usage = Usage()
        reply = "".join([piece async for piece in shared.llm.stream_chat(
            [ChatMessage("user", heard.text)], GenerationParams(max_tokens=24, temperature=0.0), usage)])
        audio = await shared.tts.synthesize("Spiders have eight legs.")
        return heard.text, reply, usage.completion_tokens, len(audio)

    # The services' own loop (this one) must stay free to run their work.
    results = await asyncio.to_thread(on_threads, 3, job)
    for heard, reply, tokens, audio_bytes in results:
        assert QUESTION_WORDS <= set(heard.lower().replace("?", "").split()), heard
        assert reply.strip() and tokens > 0
        assert audio_bytes > services.tts.sample_rate  # more than half a second of speech


async def test_closing_a_stream_from_another_loop_stops_the_generation(services):
    async def job(i: int) -> Usage:
        shared = await runtime.get_services()
        usage = Usage()
        pieces = shared.llm.stream_chat([ChatMessage("user", "Tell me a very long story about the sea.")],
                                        GenerationParams(max_tokens=300, temperature=0.7), usage)
        count = 0
        async for _ in pieces:
            count += 1
            if count == 3:
                break
        await pieces.aclose()
        return usage

    usage, = await asyncio.to_thread(on_threads, 1, job)
    # The model's thread sees the cancellation between two tokens; the model is free once that thread ended.
    await until(lambda: services.llm.status()["active"] == 0, 60, "the model's thread to end")
    assert usage.finish_reason == "cancelled" and usage.completion_tokens < 20, usage


async def test_cancelling_a_job_cancels_its_call_on_the_services_loop(services):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Slow:
        async def wait(self) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    view = OnLoop(Slow(), asyncio.get_running_loop())

    async def job(i: int) -> None:
        call = asyncio.create_task(view.wait())
        await until(started.is_set, 10, "the call to run on the services' loop")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    await asyncio.to_thread(on_threads, 1, job)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert started.is_set()


async def test_a_view_passes_plain_attributes_and_errors_through(services):
    async def job(i: int):
        shared = await runtime.get_services()
        assert shared.llm.model_name == services.llm.model_name and shared.llm.state == "ready"
        with pytest.raises(BadRequest, match="empty"):
            async for _ in shared.llm.stream_chat([ChatMessage("user", " ")], GenerationParams(max_tokens=8)):
                pass
        with pytest.raises(BadRequest, match="empty"):
            await shared.tts.synthesize("")
        return True

    assert await asyncio.to_thread(on_threads, 1, job) == [True]


def test_only_one_set_of_services_per_process(services):
    other = Services.create(Settings(app_env="test", _env_file=None))
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="already has agent services"):
            runtime.adopt(other, loop)
    finally:
        loop.close()
    assert runtime.models_ready()


class LoadsOnCue(ModelService):
    """A TEST DOUBLE of a model service: its load ends when the test says (``finish``), or never."""

    def __init__(self, component: str) -> None:
        self.component = component
        super().__init__()
        self.finish = asyncio.Event()

    async def _load(self) -> None:
        await self.finish.wait()


async def test_settling_waits_on_each_load_and_names_those_still_loading_at_its_deadline(tmp_path):
    settings = Settings(app_env="test", _env_file=None, llm_model_path=tmp_path / "missing.gguf")
    loaded, stuck = LoadsOnCue("tts"), LoadsOnCue("stt")
    services = Services(settings=settings, llm=LLMService(settings), stt=stuck, tts=loaded)
    starts = [asyncio.ensure_future(c.start()) for c in services.components.values()]
    try:
        settling = asyncio.ensure_future(runtime.wait_settled(services, timeout=2.0))
        await until(lambda: services.llm.state == "failed", 10, "the LLM's load to fail")
        assert not settling.done()  # one load ended (failed): the others are still waited for
        loaded.finish.set()
        # The LLM's load failed (settled too), the TTS's ended; the STT's never does.
        with pytest.raises(TimeoutError, match=r"^the models did not finish loading within 2 s: stt \(loading\)$"):
            await asyncio.wait_for(settling, 20)
        assert (services.llm.state, loaded.state) == ("failed", "ready")

        # Once every load has ended, ready or failed, it returns then, not at its deadline.
        stuck.finish.set()
        await asyncio.wait_for(runtime.wait_settled(services, timeout=600), 10)
        failing = Services(settings=settings, llm=LLMService(settings), stt=loaded, tts=loaded)
        settling = asyncio.ensure_future(runtime.wait_settled(failing, timeout=600))
        await failing.llm.start()
        await asyncio.wait_for(settling, 10)
        assert failing.llm.state == "failed"
    finally:
        for start in starts:
            start.cancel()
