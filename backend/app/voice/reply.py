"""One spoken reply: stream the LLM, cut sentences, synthesize each as soon as it is complete.

Generation and synthesis overlap: while sentence N is being spoken, sentence N+1 is being written.
The caller reads events from ``SpokenReply.events()``; closing it (or cancelling the reading task)
stops both generation and synthesis at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Sequence, Union

from app.services.container import Services
from app.services.llm import ChatMessage, GenerationParams, Usage
from app.voice.sentences import SentenceChunker


@dataclass
class TextDelta:
    text: str


@dataclass
class AudioChunk:
    pcm: bytes
    sentence: int


@dataclass
class SentenceSpoken:
    index: int
    text: str
    seconds: float


ReplyEvent = Union[TextDelta, AudioChunk, SentenceSpoken]
_DONE = object()


@dataclass
class ReplyTimings:
    started: float = field(default_factory=time.perf_counter)
    llm_first_token_s: float | None = None
    first_sentence_s: float | None = None
    tts_first_audio_s: float | None = None  # from the first sentence being ready to its first audio
    first_audio_s: float | None = None  # from start to first audio

    def as_ms(self) -> dict[str, float | None]:
        def ms(v):
            return None if v is None else round(v * 1000, 1)
        return {"llm_first_token_ms": ms(self.llm_first_token_s), "first_sentence_ms": ms(self.first_sentence_s),
                "tts_first_audio_ms": ms(self.tts_first_audio_s), "reply_first_audio_ms": ms(self.first_audio_s)}


class SpokenReply:
    def __init__(self, services: Services, messages: Sequence[ChatMessage], params: GenerationParams,
                 *, voice: str | None = None):
        self.services = services
        self.messages = messages
        self.params = params
        self.voice = voice
        self.text = ""
        self.usage = Usage()
        self.timings = ReplyTimings()
        self.spoken: list[SentenceSpoken] = []
        # Cleared while the first sentence is synthesized: on a small CPU the model and the TTS slow each
        # other down, and the first audio is what the listener waits for.
        self._llm_gate = threading.Event()
        self._llm_gate.set()

    async def _write(self, sentences: asyncio.Queue, out: asyncio.Queue) -> None:
        chunker = SentenceChunker()
        tokens = self.services.llm.stream_chat(self.messages, self.params, self.usage, gate=self._llm_gate)
        try:
            async for piece in tokens:
                if self.timings.llm_first_token_s is None:
                    self.timings.llm_first_token_s = time.perf_counter() - self.timings.started
                self.text += piece
                await out.put(TextDelta(piece))
                for sentence in chunker.push(piece):
                    self._sentence_ready()
                    await sentences.put(sentence)
            for sentence in chunker.flush():
                self._sentence_ready()
                await sentences.put(sentence)
        finally:
            await tokens.aclose()
            await sentences.put(None)

    def _sentence_ready(self) -> None:
        if self.timings.first_sentence_s is None:
            self.timings.first_sentence_s = time.perf_counter() - self.timings.started

    async def _speak(self, sentences: asyncio.Queue, out: asyncio.Queue) -> None:
        rate = self.services.tts.sample_rate
        index = 0
        while (sentence := await sentences.get()) is not None:
            samples = 0
            ready = time.perf_counter()
            if index == 0:
                self._llm_gate.clear()
            try:
                async for pcm in self.services.tts.stream(sentence, voice=self.voice):
                    if self.timings.first_audio_s is None:
                        now = time.perf_counter()
                        self.timings.first_audio_s = now - self.timings.started
                        self.timings.tts_first_audio_s = now - ready
                        self._llm_gate.set()
                    samples += len(pcm) // 2
                    await out.put(AudioChunk(pcm, index))
            finally:
                self._llm_gate.set()
            spoken = SentenceSpoken(index, sentence, samples / rate)
            self.spoken.append(spoken)
            await out.put(spoken)
            index += 1

    async def events(self) -> AsyncIterator[ReplyEvent]:
        sentences: asyncio.Queue = asyncio.Queue()
        out: asyncio.Queue = asyncio.Queue()
        writer = asyncio.create_task(self._write(sentences, out))
        speaker = asyncio.create_task(self._speak(sentences, out))
        # The speaker ends after the writer's last sentence; a failure of either ends the reply too.
        speaker.add_done_callback(lambda _t: out.put_nowait(_DONE))
        writer.add_done_callback(lambda t: t.cancelled() or t.exception() is None or out.put_nowait(_DONE))
        try:
            while (event := await out.get()) is not _DONE:
                yield event
            for task in (writer, speaker):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in (writer, speaker):
                task.cancel()
            await asyncio.gather(writer, speaker, return_exceptions=True)

    def heard_text(self, heard_seconds: float) -> str:
        """What a listener heard after ``heard_seconds`` of playback: whole sentences, then a share of the next."""
        words: list[str] = []
        elapsed = 0.0
        for sentence in self.spoken:
            if elapsed + sentence.seconds <= heard_seconds:
                words.extend(sentence.text.split())
                elapsed += sentence.seconds
                continue
            share = max(0.0, heard_seconds - elapsed) / sentence.seconds if sentence.seconds else 0.0
            parts = sentence.text.split()
            words.extend(parts[:int(len(parts) * share)])
            break
        return " ".join(words)
