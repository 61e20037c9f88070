"""Each plugin alone, over the real embedded models."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from agent_helpers import rms, transcribe, until
from helpers import QUESTION, QUESTION_WORDS, words
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, llm, stt
from livekit.agents.stt import SpeechEventType
from livekit.agents.utils import combine_frames

from app.agents.plugins import GemmaLLM, OpenAudioTTS, SpeculativeSTT, WhisperSTT
from app.agents.plugins.gemma_llm import chat_messages
from app.agents.sentences import FirstPieceEnd, SpokenSentenceTokenizer
from app.audio.codec import resample_pcm
from app.audio.vad import load_vad
from app.services.base import ServiceOverloaded, UpstreamError
from app.services.llm import ChatMessage, GenerationParams, LLMGate, Usage
from app.agents.sentences import SentenceChunker
from bench.offline_io import voiced_end

NO_RETRY = APIConnectOptions(max_retry=0)


def chat(*turns: tuple[str, str]) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    for role, text in turns:
        ctx.add_message(role=role, content=text)
    return ctx


def frames_of(pcm: bytes, rate: int, ms: int = 20) -> list[rtc.AudioFrame]:
    """PCM s16le mono cut into frames of ``ms`` (a partial last frame is dropped)."""
    size = rate * ms // 1000 * 2
    return [rtc.AudioFrame(data=pcm[i:i + size], sample_rate=rate, num_channels=1, samples_per_channel=size // 2)
            for i in range(0, len(pcm) - size + 1, size)]


def trimmed(pcm: bytes, rate: int) -> bytes:
    """The voiced part of a TTS clip, without the silence it starts and ends with."""
    samples = np.frombuffer(pcm, dtype="<i2")
    start = len(samples) - voiced_end(samples[::-1], rate)
    return samples[start:voiced_end(samples, rate)].tobytes()


class OverloadedLLMDouble:
    """Stands in for an LLMService whose queue is full (hard to provoke with the real one on cue)."""

    model_name = engine = "overloaded-double"
    state = "ready"  # a loaded service

    def __init__(self):
        self.calls = 0

    async def stream_chat(self, messages, params, usage=None, *, gate=None, pause_after=None):
        self.calls += 1
        raise ServiceOverloaded("the language model is busy; try again shortly", retry_after=2)
        yield  # an async generator, like the real one


class FailingMidReplyLLMDouble:
    """Stands in for an LLMService that fails after its first words (a timeout mid-reply, say)."""

    model_name = engine = "failing-double"
    state = "ready"  # a loaded service

    def __init__(self):
        self.calls = 0

    async def stream_chat(self, messages, params, usage=None, *, gate=None, pause_after=None):
        self.calls += 1
        yield "Once upon a time"
        raise ServiceOverloaded("the language model is busy; try again shortly", retry_after=2)


class FailingMidSentenceTTSDouble:
    """Stands in for a TTS engine whose server drops the connection after the first audio chunk."""

    engine = "failing-double"
    state = "ready"  # a loaded service
    sample_rate = 22050

    def __init__(self):
        self.calls = 0

    async def stream(self, text, *, voice=None):
        self.calls += 1
        yield b"\0\0" * 2205
        raise UpstreamError("the TTS server closed the connection")


class ProbedWhisperSTT(WhisperSTT):
    """The real WhisperSTT, noting the length of each utterance it is asked to recognize."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: list[float] = []

    async def _recognize_impl(self, buffer, **kwargs):
        self.calls.append(combine_frames(buffer).duration)
        return await super()._recognize_impl(buffer, **kwargs)


def test_chat_context_becomes_text_messages():
    ctx = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("developer", "Use English."))
    ctx.insert(llm.FunctionCall(call_id="c1", name="weather", arguments='{"city": "Paris"}'))
    ctx.insert(llm.FunctionCallOutput(call_id="c1", name="weather", output="sunny", is_error=False))
    ctx.add_message(role="user", content=["Look:", llm.ImageContent(image="https://example.com/x.png")])

    assert chat_messages(ctx) == [
        ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"),
        ChatMessage("system", "Use English."), ChatMessage("assistant", '[called weather({"city": "Paris"})]'),
        ChatMessage("user", "[tool result] sunny"), ChatMessage("user", "Look:"),
    ]


async def test_llm_streams_assistant_text_then_usage(services):
    gemma = GemmaLLM(services=services, temperature=0.0, max_tokens=40)
    chunks = [c async for c in gemma.chat(chat_ctx=chat(("system", "Answer in one short sentence."),
                                                          ("user", QUESTION)))]

    text_chunks = [c for c in chunks if c.delta and c.delta.content]
    assert len(text_chunks) > 1  # streamed, not one blob
    assert {c.delta.role for c in text_chunks} == {"assistant"}
    assert "".join(c.delta.content for c in text_chunks).strip()
    assert chunks[-1].usage is not None and chunks[-1].delta is None
    assert chunks[-1].usage.prompt_tokens > 5
    assert 0 < chunks[-1].usage.completion_tokens <= 40
    assert gemma.model == services.llm.model_name


def repeated_phrases(text: str, n: int = 4) -> set[tuple[str, ...]]:
    said = [w.strip(".,:;!?\"'").lower() for w in text.split()]
    grams = [tuple(said[i:i + n]) for i in range(len(said) - n + 1)]
    return {g for g in grams if grams.count(g) > 1}


async def test_spoken_replies_take_the_voice_repeat_penalty(services):
    """VOICE_REPEAT_PENALTY reaches the model (the greedy reply changes with it), and with the default a spoken
    reply repeats no four-word phrase (the small model, greedy, loops without one)."""
    settings = services.settings

    async def reply(penalty: float) -> str:
        tuned = dataclasses.replace(services, settings=settings.model_copy(update={"voice_repeat_penalty": penalty}))
        gemma = GemmaLLM(services=tuned, temperature=0.0, max_tokens=60)
        chunks = [c async for c in gemma.chat(chat_ctx=chat(("system", settings.voice_instructions),
                                                              ("user", "What should I cook for dinner?")))]
        return "".join(c.delta.content for c in chunks if c.delta and c.delta.content)

    default = await reply(settings.voice_repeat_penalty)
    assert settings.voice_repeat_penalty > 1.0 and not repeated_phrases(default), default
    assert await reply(1.0) != default


async def test_closing_the_stream_stops_generation(services):
    gemma = GemmaLLM(services=services, temperature=0.0, max_tokens=1000)
    stream = gemma.chat(chat_ctx=chat(("user", "Count from 1 to 500, separated by commas.")))
    received = 0
    async for chunk in stream:
        received += bool(chunk.delta and chunk.delta.content)
        if received == 3:
            break
    await stream.aclose()  # what the framework does when the user interrupts

    # The generating thread stops at its next token.
    await until(lambda: services.llm.status()["active"] == 0, 10, "the generation to stop")
    assert stream.usage.finish_reason == "cancelled"
    assert stream.usage.completion_tokens < 1000


async def test_overload_is_a_retryable_status_error(services):
    double = OverloadedLLMDouble()
    gemma = GemmaLLM(services=dataclasses.replace(services, llm=double))
    stream = gemma.chat(chat_ctx=chat(("user", "Hi")),
                        conn_options=APIConnectOptions(max_retry=1, retry_interval=0.0))
    with pytest.raises(APIConnectionError) as raised:  # the framework retried, then gave up
        await stream.collect()

    cause = raised.value.__cause__
    assert isinstance(cause, APIStatusError) and cause.status_code == 503 and cause.retryable
    assert double.calls == 2


async def test_a_reply_that_failed_after_its_first_words_is_not_started_again(services):
    double = FailingMidReplyLLMDouble()
    gemma = GemmaLLM(services=dataclasses.replace(services, llm=double))
    stream = gemma.chat(chat_ctx=chat(("user", "Hi")), conn_options=APIConnectOptions(max_retry=2, retry_interval=0.0))
    with pytest.raises(APIStatusError) as raised:
        await stream.collect()
    assert not raised.value.retryable
    assert double.calls == 1  # a retry would have said "Once upon a time" twice


async def test_a_sentence_that_failed_after_its_first_audio_is_not_spoken_again(services):
    double = FailingMidSentenceTTSDouble()
    voice = OpenAudioTTS(services=dataclasses.replace(services, tts=double))
    stream = voice.synthesize("Hello there.", conn_options=APIConnectOptions(max_retry=2, retry_interval=0.0))
    with pytest.raises(APIStatusError) as raised:
        async for _ in stream:
            pass
    assert not raised.value.retryable
    assert double.calls == 1


async def test_empty_conversation_is_a_client_error(services):
    gemma = GemmaLLM(services=services)
    with pytest.raises(APIStatusError) as raised:
        await gemma.chat(chat_ctx=chat(("system", "Be brief.")), conn_options=NO_RETRY).collect()
    assert raised.value.status_code == 400 and not raised.value.retryable


async def test_tts_synthesizes_audio_at_the_engine_rate(services):
    tts = OpenAudioTTS(services=services)
    frames = [ev.frame async for ev in tts.synthesize("Hello there. The weather is lovely today.")]

    assert tts.sample_rate == services.tts.sample_rate
    assert {f.sample_rate for f in frames} == {services.tts.sample_rate}
    assert {f.num_channels for f in frames} == {1}
    audio = combine_frames(frames)
    assert 1.0 < audio.duration < 10.0
    assert rms(audio) > 300  # speech, not silence
    assert "weather" in words(await transcribe(services, audio))


async def test_stt_recognizes_room_rate_frames(services, question_pcm):
    pcm, rate = question_pcm
    frames = frames_of(resample_pcm(pcm, rate, 48000), 48000, ms=10)  # as a room delivers them

    event = await WhisperSTT(services=services).recognize(frames)

    data = event.alternatives[0]
    assert QUESTION_WORDS <= words(data.text)
    assert data.language == "en"
    assert 0.3 < data.confidence <= 1.0
    assert data.end_time == pytest.approx(len(frames) / 100, abs=0.05)


async def test_stt_refuses_an_empty_buffer(services):
    silence = rtc.AudioFrame(data=b"", sample_rate=48000, num_channels=1, samples_per_channel=0)
    with pytest.raises(APIStatusError) as raised:
        await WhisperSTT(services=services).recognize(silence, conn_options=NO_RETRY)
    assert raised.value.status_code == 400


async def test_a_short_window_view_shares_its_recognizer_and_the_language_heard_last(services, question_pcm,
                                                                                       monkeypatch):
    """The early passes' view: a shorter encoder window, the main recognizer's options, and no language
    detection on half a second of audio once the user has been heard."""
    pcm, rate = question_pcm
    start = frames_of(trimmed(pcm, rate), rate, ms=10)[:50]  # the first half second of speech
    asked: list[tuple[str | None, float | None]] = []
    transcribe = services.stt.transcribe

    async def noted(audio, **kwargs):  # the real service, noting what it was asked for
        asked.append((kwargs.get("language"), kwargs.get("min_window_s")))
        return await transcribe(audio, **kwargs)

    monkeypatch.setattr(services.stt, "transcribe", noted)
    whisper = WhisperSTT(services=services)
    early = whisper.short_window(3.0)

    await early.recognize(start)  # nothing heard yet: it detects
    event = await whisper.recognize(frames_of(pcm, rate, ms=10))
    assert event.alternatives[0].language == "en"
    await early.recognize(start)
    whisper.update_options(language="fr")  # a client sets the language: both follow
    await early.recognize(start)
    await whisper.recognize(start)
    assert asked == [(None, 3.0), (None, None), ("en", 3.0), ("fr", 3.0), ("fr", None)]


async def test_plugins_need_no_arguments(services):
    """Built with nothing, they use the process-wide services (the ones loaded for these tests)."""
    assert GemmaLLM().service is services.llm
    assert WhisperSTT().service is services.stt
    assert OpenAudioTTS().engine is services.tts


async def test_speculative_stt_starts_at_the_first_pause_and_redoes_a_stale_guess(services):
    rate = services.tts.sample_rate
    first = trimmed(await services.tts.synthesize("How many legs"), rate)
    second = trimmed(await services.tts.synthesize("does a spider have?"), rate)
    # A VAD that waits 500 ms of silence; the pause is longer than the guess's 150 ms and shorter than that.
    settings = services.settings.model_copy(update={"vad_min_silence_ms": 500})
    pause, tail = b"\0\0" * int(rate * 0.35), b"\0\0" * rate
    whisper = ProbedWhisperSTT(services=services, language="en")
    adapter = SpeculativeSTT(stt=whisper, vad=load_vad(settings), speculate_after_s=0.15)

    events = []  # (event, how many recognitions had begun when it came)
    async with adapter.stream() as stream:
        for frame in frames_of(resample_pcm(first + pause + second + tail, rate, 48000), 48000):
            stream.push_frame(frame)
        stream.end_input()
        async for event in stream:
            events.append((event, len(whisper.calls)))

    assert [e.type for e, _ in events] == [SpeechEventType.START_OF_SPEECH, SpeechEventType.END_OF_SPEECH,
                                           SpeechEventType.FINAL_TRANSCRIPT]
    assert len(whisper.calls) >= 2  # a guess at the pause, dropped when the speech went on...
    assert events[1][1] == len(whisper.calls)  # ...and the whole utterance, begun before its end was confirmed
    assert QUESTION_WORDS <= words(events[2][0].alternatives[0].text)


async def test_speculative_stt_offers_its_guess_before_the_end_of_speech_is_confirmed(services, question_pcm):
    """In real time, Whisper starts at the first window the VAD scores as silence and its transcript is offered
    as a preflight (the session may start the reply on it) while the VAD still confirms the silence."""
    pcm, rate = question_pcm
    settings = services.settings.model_copy(update={"vad_min_silence_ms": 800})  # room for Whisper to finish
    whisper = ProbedWhisperSTT(services=services, language="en")
    adapter = SpeculativeSTT(stt=whisper, vad=load_vad(settings), speculate_after_s=0.032)
    speech = trimmed(pcm, rate)
    audio = resample_pcm(speech + b"\0\0" * int(rate * 1.5), rate, 48000)

    events: list[tuple[SpeechEventType, str, float]] = []
    async with adapter.stream() as stream:
        async def listen() -> None:
            async for event in stream:
                text = event.alternatives[0].text if event.alternatives else ""
                events.append((event.type, text, asyncio.get_running_loop().time()))

        listener = asyncio.create_task(listen())
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, frame in enumerate(frames_of(audio, 48000)):
            stream.push_frame(frame)
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - loop.time()))  # real time
        voice_ended = started + voiced_end(np.frombuffer(speech, "<i2"), rate) / rate
        stream.end_input()
        await listener

    kinds = [kind for kind, _, _ in events]
    assert kinds == [SpeechEventType.START_OF_SPEECH, SpeechEventType.PREFLIGHT_TRANSCRIPT,
                     SpeechEventType.END_OF_SPEECH, SpeechEventType.FINAL_TRANSCRIPT]
    (_, preflight, preflight_at), (_, final, _) = events[1], events[3]
    assert preflight == final and QUESTION_WORDS <= words(final)
    assert len(whisper.calls) == 1  # the guess became the final transcript
    assert voice_ended < preflight_at < events[2][2]


class ScriptedWordsSTTDouble(stt.STT):
    """Test double for Whisper: answers each recognition with ``texts(n)`` for its n-th call, at once."""

    def __init__(self, texts) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.texts = texts
        self.calls = 0

    async def _recognize_impl(self, buffer, **kwargs) -> stt.SpeechEvent:
        self.calls += 1
        return stt.SpeechEvent(type=SpeechEventType.FINAL_TRANSCRIPT,
                               alternatives=[stt.SpeechData(language="en", text=self.texts(self.calls))])


async def speak_in_real_time(adapter: SpeculativeSTT, pcm: bytes,
                             rate: int) -> list[tuple[SpeechEventType, str, float]]:
    """The clip, then 1 s of silence, pushed at the pace of a microphone; the events with their loop times."""
    events: list[tuple[SpeechEventType, str, float]] = []
    loop = asyncio.get_running_loop()
    async with adapter.stream() as stream:
        async def listen() -> None:
            async for event in stream:
                events.append((event.type, event.alternatives[0].text if event.alternatives else "", loop.time()))

        listener = asyncio.create_task(listen())
        started = loop.time()
        for index, frame in enumerate(frames_of(resample_pcm(pcm + b"\0\0" * rate, rate, 48000), 48000)):
            stream.push_frame(frame)
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - loop.time()))
        stream.end_input()
        await listener
    return events


async def test_speculative_stt_sends_early_words_while_the_user_still_talks(services, question_pcm):
    """While the session wants them (a reply is paused for the user's voice), the utterance so far is
    transcribed as it grows, and words two passes agree on come as an interim transcript before it ends."""
    pcm, rate = question_pcm
    speech = trimmed(pcm, rate)
    whisper = ProbedWhisperSTT(services=services)
    adapter = SpeculativeSTT(stt=whisper, vad=load_vad(services.settings), speculate_after_s=0.032)
    adapter.early_words_wanted = lambda: True
    started = asyncio.get_running_loop().time()
    events = await speak_in_real_time(adapter, speech, rate)
    voice_ended = started + voiced_end(np.frombuffer(speech, "<i2"), rate) / rate

    interims = [(text, at) for kind, text, at in events if kind == SpeechEventType.INTERIM_TRANSCRIPT]
    assert interims, events
    first_text, first_at = interims[0]
    # While the user still talks (how long before the end is a speed, bench.voice_bench's: a 0.5 s margin here
    # failed on a busy machine by 20 ms).
    assert first_at < voice_ended, (first_at - started, voice_ended - started)
    assert first_text.split()[0].strip("?,.!").lower() == "how"  # "How many legs does a spider have?"
    assert events[-1][0] == SpeechEventType.FINAL_TRANSCRIPT and QUESTION_WORDS <= words(events[-1][1])


async def test_early_words_count_once_two_passes_begin_alike(services, question_pcm):
    pcm, rate = question_pcm
    speech = trimmed(pcm, rate)
    # Noise as Whisper hears it: another word at every pass ("Sniep!", "Ścież?", "Стесли."): never words.
    changing = ScriptedWordsSTTDouble(lambda n: f"sound{n}")
    adapter = SpeculativeSTT(stt=changing, vad=load_vad(services.settings), speculate_after_s=0.032)
    adapter.early_words_wanted = lambda: True
    events = await speak_in_real_time(adapter, speech, rate)
    assert changing.calls >= 4  # passes ran, as the utterance grew
    assert SpeechEventType.INTERIM_TRANSCRIPT not in [kind for kind, _, _ in events]

    # Speech: the first word stays as the words grow.
    growing = ScriptedWordsSTTDouble(lambda n: " ".join(["What", "is", "the", "capital"][:min(n, 4)]))
    adapter = SpeculativeSTT(stt=growing, vad=load_vad(services.settings), speculate_after_s=0.032)
    adapter.early_words_wanted = lambda: True
    events = await speak_in_real_time(adapter, speech, rate)
    interims = [text for kind, text, _ in events if kind == SpeechEventType.INTERIM_TRANSCRIPT]
    assert interims and all(text.startswith("What is") for text in interims), events

    # Not wanted (no reply waits): no early passes, one recognition of the whole utterance.
    quiet = ScriptedWordsSTTDouble(lambda n: "What is it")
    adapter = SpeculativeSTT(stt=quiet, vad=load_vad(services.settings), speculate_after_s=0.032)
    events = await speak_in_real_time(adapter, speech, rate)
    # (at most a guess at a pause within it besides)
    assert quiet.calls <= 2 and SpeechEventType.INTERIM_TRANSCRIPT not in [kind for kind, _, _ in events]


async def test_replies_are_spoken_from_the_first_clause_on():
    stream = SpokenSentenceTokenizer().stream()
    for delta in ["The sky on a sunny", " day is blue, with", " a hint of **pink**. It", " is lovely."]:
        stream.push_text(delta)
    stream.flush()  # a new segment: its first clause goes early again
    stream.push_text("Well, I think so too, really.")
    stream.end_input()

    assert [t.token async for t in stream] == [
        "The sky on a sunny day is blue,", "with a hint of pink.", "It is lovely.",
        "Well, I think so too,", "really."]


async def test_the_model_pauses_where_the_first_piece_ends(services):
    """The TTS closes the gate as it starts on the reply's first piece; the model stops at that piece's last
    token rather than writing one more beside the TTS, and goes on once the gate opens."""
    gate = LLMGate()
    usage = Usage()
    at_piece_end: list[int] = []
    watch = FirstPieceEnd()

    def pause_after(text: str) -> bool:
        ends = watch(text)
        if ends:
            at_piece_end.append(usage.completion_tokens)
        return ends

    pieces, first_piece, paused = [], SentenceChunker(), False
    stream = services.llm.stream_chat(
        [ChatMessage("user", "Describe Paris in three sentences.")],
        GenerationParams(max_tokens=60, temperature=0.0), usage, gate=gate, pause_after=pause_after)
    async for piece in stream:
        pieces.append(piece)
        if not paused and first_piece.push(piece):
            paused = True
            # The TTS starts on it a few milliseconds later (in a session the text passes a few tasks first).
            asyncio.get_running_loop().call_later(0.005, gate.clear)
            await until(lambda: gate.held, 10, "the model held at the gate")  # while the piece is synthesized
            assert usage.completion_tokens == at_piece_end[0]
            gate.set()
    assert paused and len(at_piece_end) == 1, "".join(pieces)
    assert usage.completion_tokens > at_piece_end[0] + 3, "".join(pieces)


async def test_a_reply_held_at_its_gate_lets_others_through_and_stops_when_closed(services):
    """A voice reply whose TTS never opens the gate again neither keeps the model from others nor outlives
    its stream: a waiting request and the stream's close both wake it where it is held."""
    gate = LLMGate()
    gate.clear()  # the TTS starts the first piece and, say, hangs: the reply is held after its first token
    held = services.llm.stream_chat([ChatMessage("user", "Write a long story about a lighthouse.")],
                                    GenerationParams(max_tokens=200, temperature=0.0), Usage(), gate=gate)
    first = asyncio.Event()

    async def listen() -> None:  # as the session reads the reply
        async for _ in held:
            first.set()

    reader = asyncio.create_task(listen())
    await asyncio.wait_for(first.wait(), 60)
    await until(lambda: gate.held, 10, "the reply to wait at its gate")

    text, usage = await asyncio.wait_for(
        services.llm.chat([ChatMessage("user", "Say hello.")], GenerationParams(max_tokens=8, temperature=0.0)), 60)
    assert text and usage.completion_tokens > 0
    await until(lambda: gate.held, 30, "the reply to wait at its gate again")

    reader.cancel()  # the session drops the reply
    await until(lambda: services.llm.status()["active"] == 0, 10, "the held reply to stop")
