"""Memory of one agent worker process with 1, 2 and 3 conversations at once, all on one set of models.

    cd backend && .venv/bin/python -m bench.worker_memory            # 3 conversations
    cd backend && .venv/bin/python -m bench.worker_memory --sessions 4 --output ../bench-results/x.json
    cd backend && .venv/bin/python -m bench.worker_memory --remote   # a light worker: every model on a server

``--remote`` starts the model servers first (llama-cpp-python's server for the LLM, a second GemmaVoice API for
STT and TTS, ``bench.model_servers``) and measures a worker that loads no model and uses them.

Each conversation runs the way the worker runs a job (``JobExecutorType.THREAD``): a thread of its
own with its own event loop, the process's services through ``runtime.get_services()``, an
``AgentSession`` from ``create_agent_session()``. Instead of a LiveKit room (``bench.room_latency`` measures one) it
hears the spoken test question through ``ClipMicrophone`` and answers into ``RecordingSpeaker``; once
its reply has been spoken it stays open while the next conversation starts. RSS and USS are read
after start-up, with the models loaded, and with each conversation open.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import threading
import time
from pathlib import Path

import psutil

from app.agents import runtime
from app.agents.voice_agent import GemmaVoiceAgent, create_agent_session
from app.config.settings import get_settings
from bench.common import RESULTS
from bench.offline_io import ClipMicrophone, RecordingSpeaker

QUESTION = "How many legs does a spider have?"
REPLY_TIMEOUT_S = 180.0


def memory_mb() -> dict[str, float]:
    gc.collect()
    info = psutil.Process().memory_full_info()
    return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)}


class Conversation(threading.Thread):
    """One conversation on a thread and event loop of its own; ``answered`` is set once its reply has
    been spoken, and it stays open until ``close`` is set."""

    def __init__(self, number: int, question: tuple[bytes, int]) -> None:
        super().__init__(name=f"conversation-{number}", daemon=True)
        self.question = question
        self.answered = threading.Event()
        self.close = threading.Event()
        self.error: BaseException | None = None
        self.reply_s: float | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._converse())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.answered.set()

    async def _converse(self) -> None:
        services = await runtime.get_services()
        session = create_agent_session(services)
        session.input.audio = mic = ClipMicrophone(sample_rate=48000)
        session.output.audio = speaker = RecordingSpeaker(speed=4.0)
        async with session:
            await session.start(GemmaVoiceAgent())
            await asyncio.sleep(0.5)
            started = time.perf_counter()
            mic.play(*self.question)
            deadline = started + REPLY_TIMEOUT_S
            while not (speaker.segments and speaker.segments[0].interrupted is not None):
                if time.perf_counter() > deadline:
                    raise TimeoutError("no spoken reply")
                await asyncio.sleep(0.1)
            self.reply_s = time.perf_counter() - started
            self.answered.set()
            while not self.close.is_set():
                await asyncio.sleep(0.2)


async def speak(text: str) -> bytes:
    return await (await runtime.get_services()).tts.synthesize(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--remote", action="store_true", help="every model on a server of its own (a light worker)")
    args = parser.parse_args(argv)
    args.output = args.output or RESULTS / ("worker_memory_remote.json" if args.remote else "worker_memory.json")
    if not args.remote:
        return measure(args)
    from bench.model_servers import GemmaVoiceAPIProcess, LlamaCppServer

    with LlamaCppServer() as llm, GemmaVoiceAPIProcess(env={"LLM_BASE_URL": llm.url}) as speech:
        os.environ.update(LLM_BASE_URL=llm.url, STT_BASE_URL=speech.url, TTS_BASE_URL=speech.url)
        get_settings.cache_clear()
        measure(args)


def measure(args) -> None:
    settings = get_settings()
    stages = [{"stage": "started (no models)", **memory_mb()}]
    services = runtime.prewarm_services(settings)
    if not services.ready:
        raise SystemExit(f"models failed to load: {services.components}")
    question = (asyncio.run(speak(QUESTION)), services.tts.sample_rate)
    stages.append({"stage": "models loaded", **memory_mb()})
    print(f"{'stage':<26}{'RSS MB':>9}{'USS MB':>9}")
    for s in stages:
        print(f"{s['stage']:<26}{s['rss_mb']:>9}{s['uss_mb']:>9}")

    conversations: list[Conversation] = []
    try:
        for n in range(1, args.sessions + 1):
            conversation = Conversation(n, question)
            conversations.append(conversation)
            conversation.start()
            conversation.answered.wait(REPLY_TIMEOUT_S + 60)
            if conversation.error is not None:
                raise SystemExit(f"conversation {n} failed: {conversation.error!r}")
            time.sleep(1.0)
            stage = {"stage": f"{n} conversation{'s' if n > 1 else ''} open", "threads": threading.active_count(),
                     "reply_s": round(conversation.reply_s, 2), **memory_mb()}
            stages.append(stage)
            print(f"{stage['stage']:<26}{stage['rss_mb']:>9}{stage['uss_mb']:>9}   (reply after {stage['reply_s']} s)")
    finally:
        for conversation in conversations:
            conversation.close.set()
        for conversation in conversations:
            conversation.join(30)

    models = stages[1]["rss_mb"]
    report = {
        "what": "RSS/USS of one process: models loaded once, conversations as threads with their own loops",
        "command": "cd backend && .venv/bin/python -m bench.worker_memory --sessions %d%s"
                   % (args.sessions, " --remote" if args.remote else ""),
        "config": {"llm": services.llm.model_name, "stt": services.stt.model_name, "tts": services.tts.engine,
                   "backend": "remote" if args.remote else "embedded"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "stages": stages,
        "per_conversation_mb": [round(b["rss_mb"] - a["rss_mb"], 1) for a, b in zip(stages[1:], stages[2:])],
        "models_mb": round(models - stages[0]["rss_mb"], 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"per conversation: {report['per_conversation_mb']} MB; models: {report['models_mb']} MB -> {args.output}")


if __name__ == "__main__":
    main()
