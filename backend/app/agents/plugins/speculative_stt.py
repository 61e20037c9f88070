"""SpeculativeSTT: a non-streaming STT (Whisper) made streaming by a VAD, transcribing early.

LiveKit's own ``stt.StreamAdapter`` starts recognizing an utterance only once the VAD has confirmed
the silence after it (``VAD_MIN_SILENCE_MS``). This one starts at the first pause that may end the
utterance, so the transcription runs while the silence is still being confirmed: once the VAD has
scored ``speculate_after_s`` of audio below its speech threshold. That is earlier than the VAD's own
silence count, which starts only when the score has sunk below the lower threshold that ends speech
(silero's score stays high for ~100 ms after the last voiced sample, and sinks over two or three more
windows): on the benchmark clips, the first window below the speech threshold comes 112 ms after the
end of the voice at p50, the VAD's second silent window 198 ms after it. If the user speaks on (the
score rises back towards speech), the guess is dropped (the Whisper service lets the real transcription
start at once, beside it) and the utterance is recognized again when it really ends.

Early words: while ``early_words_wanted()`` says so (the session paused its reply for the user's voice, see
``voice_agent.BargeIn``), the utterance so far is transcribed over and over as it grows, one pass at a
time, and words found are sent as an interim transcript: the reply can stop as soon as the user's first
words are heard instead of when the user stops talking. The passes go through the same filters as the
final transcript, and words count only once two passes in a row begin with the same word: Whisper writes
words for a noise too (backwards speech came out as "Sniep!", then "Ścież?", then "Стесли."), but seldom
the same twice, while speech keeps its first word as it grows ("What is", "What is the").

It supports a manual flush: the session flushes at its VAD's end of speech, and
``session.commit_user_turn()`` flushes to cut a turn that never ends (``TurnLengthLimit``); either way,
what was said so far is the utterance.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from livekit import rtc
from livekit.agents import APIConnectOptions, NotGivenOr, stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
from livekit.agents.vad import VADEventType



WORD = re.compile(r"[\w']+")


class SpeculativeSTT(stt.STT):
    def __init__(self, *, stt: stt.STT, vad: vad.VAD, speculate_after_s: float,
                 speech_threshold: float = 0.5, early_words_step_s: float = 0.1,
                 early_stt: stt.STT | None = None) -> None:
        """``speculate_after_s``: how much trailing audio the VAD must score below ``speech_threshold`` (its
        activation threshold, ``VAD_ACTIVATION_THRESHOLD``) before a guess starts (``VOICE_SPECULATE_AFTER_MS``;
        one window, 32 ms, starts at the first such window). ``early_words_step_s``: how much the utterance
        must have grown since the last early pass before the next one. ``early_stt``: what makes the early
        passes (default ``stt``): they need only the first words, so a faster setting of the same model."""
        super().__init__(capabilities=stt_capabilities(stt))
        self._stt = stt
        self._vad = vad
        self.speculate_after_s = speculate_after_s
        self.speech_threshold = speech_threshold
        self.early_words_step_s = early_words_step_s
        self._early_stt = early_stt or stt
        # Asked at each VAD window of an utterance: are its words wanted before it ends? (None: never.)
        self.early_words_wanted: Callable[[], bool] | None = None
        # A score rising back to this is the user speaking on (silero's own end-of-speech threshold).
        self.resume_threshold = max(speech_threshold - 0.15, 0.01)
        self._stt.on("metrics_collected", self._forward_metrics)

    @property
    def wrapped_stt(self) -> stt.STT:
        return self._stt

    @property
    def model(self) -> str:
        return self._stt.model

    @property
    def provider(self) -> str:
        return self._stt.provider

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.SpeechEvent:
        return await self._stt.recognize(buffer=buffer, language=language, conn_options=conn_options)

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.RecognizeStream:
        return _SpeculativeStream(self, language=language, conn_options=conn_options)

    def _forward_metrics(self, *args, **kwargs) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    async def aclose(self) -> None:
        self._stt.off("metrics_collected", self._forward_metrics)


def stt_capabilities(wrapped: stt.STT) -> stt.STTCapabilities:
    return stt.STTCapabilities(streaming=True, interim_results=True, manual_flush=True,
                               offline_recognize=wrapped.capabilities.offline_recognize)


class _SpeculativeStream(stt.RecognizeStream):
    def __init__(self, owner: SpeculativeSTT, *, language: NotGivenOr[str], conn_options: APIConnectOptions) -> None:
        super().__init__(stt=owner, conn_options=conn_options)
        self._owner = owner
        self._language = language

    async def _run(self) -> None:
        vad_stream = self._owner._vad.stream()
        speech: list[rtc.AudioFrame] = []  # the utterance so far (since its start or the last commit)
        speaking = False
        last_voiced_at: float | None = None  # wall time of the latest voiced VAD window
        guess: asyncio.Task[stt.SpeechEvent] | None = None
        early: asyncio.Task[stt.SpeechEvent] | None = None  # the early-words pass under way
        early_heard_s = 0.0  # how much of the utterance the last early pass heard
        early_first_word: str | None = None  # the first word the last early pass found
        finals: asyncio.Queue[tuple[asyncio.Task[stt.SpeechEvent], float] | None] = asyncio.Queue()

        def recognize(frames: list[rtc.AudioFrame], model: stt.STT | None = None) -> asyncio.Task[stt.SpeechEvent]:
            return asyncio.create_task((model or self._owner.wrapped_stt).recognize(
                buffer=utils.merge_frames(frames), language=self._language, conn_options=self._conn_options))

        def start_guess(frames: list[rtc.AudioFrame]) -> None:
            nonlocal guess
            guess = recognize(frames)
            guess.add_done_callback(preflight)

        def preflight(task: asyncio.Task[stt.SpeechEvent]) -> None:
            # A guess done while the VAD still confirms the silence: the session may start the reply on it
            # (preemptive generation); the final transcript, from this same guess, then confirms it.
            if task is guess and not task.cancelled() and task.exception() is None:
                result = task.result()
                if result.alternatives and result.alternatives[0].text:
                    self._event_ch.send_nowait(stt.SpeechEvent(
                        type=stt.SpeechEventType.PREFLIGHT_TRANSCRIPT, alternatives=[result.alternatives[0]]))

        def drop_guess() -> None:
            nonlocal guess
            if guess is not None:
                guess.cancel()
                guess = None

        def early_words() -> None:
            # One pass at a time, each on more of the utterance than the last; none once a guess runs (it
            # has all of it) or nobody waits for them.
            nonlocal early, early_heard_s
            wanted = self._owner.early_words_wanted
            if early is not None or guess is not None or wanted is None or not wanted():
                return
            heard_s = sum(f.duration for f in speech)
            if heard_s - early_heard_s < self._owner.early_words_step_s:
                return
            early, early_heard_s = recognize(list(speech), self._owner._early_stt), heard_s
            early.add_done_callback(early_done)

        def early_done(task: asyncio.Task[stt.SpeechEvent]) -> None:
            nonlocal early, early_first_word
            if task is not early:
                return
            early = None
            if task.cancelled() or task.exception() is not None or not speaking:
                return
            result = task.result()
            text = result.alternatives[0].text if result.alternatives else ""
            first_word = next(iter(WORD.findall(text.lower())), None)
            if first_word is not None and first_word == early_first_word:
                self._event_ch.send_nowait(stt.SpeechEvent(
                    type=stt.SpeechEventType.INTERIM_TRANSCRIPT, alternatives=[result.alternatives[0]]))
            early_first_word = first_word

        def drop_early() -> None:
            nonlocal early, early_heard_s, early_first_word
            if early is not None:
                early.cancel()
                early = None
            early_heard_s, early_first_word = 0.0, None

        def end_utterance(speech_end_time: float, frames: list[rtc.AudioFrame]) -> None:
            nonlocal guess
            drop_early()
            self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.END_OF_SPEECH,
                                                       speech_end_time=speech_end_time))
            task, guess = guess or recognize(frames), None
            speech.clear()
            finals.put_nowait((task, speech_end_time))

        async def forward_input() -> None:
            nonlocal speaking
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    # The session's own VAD saw the end of speech, or a commit cut the turn: what was said
                    # so far is the utterance. Our VAD may still be a window behind; until it sees speech
                    # start again, what it reports belongs to this utterance.
                    if speech:
                        end_utterance(last_voiced_at or time.time(), list(speech))
                    speaking = False
                    continue
                vad_stream.push_frame(item)
            vad_stream.end_input()

        async def follow_vad() -> None:
            nonlocal guess, speaking, last_voiced_at
            owner = self._owner
            quiet_s = 0.0  # trailing audio scored below the speech threshold, this window included
            previous = 0.0  # the previous window's score
            async for event in vad_stream:
                if event.type == VADEventType.START_OF_SPEECH:
                    drop_guess()
                    drop_early()
                    speaking, quiet_s = True, 0.0
                    speech[:] = event.frames  # includes the padding before the speech
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                elif event.type == VADEventType.INFERENCE_DONE and speaking:
                    speech.extend(event.frames)
                    score, window_s = event.probability, sum(f.duration for f in event.frames)
                    if event.raw_accumulated_silence == 0:
                        last_voiced_at = time.time() - event.inference_duration
                    if score >= owner.speech_threshold or (score > previous and score >= owner.resume_threshold):
                        quiet_s = 0.0
                        drop_guess()  # speaking (again): a guess would miss the rest
                    else:  # a decaying score is the tail of what was said, not more of it
                        quiet_s += window_s
                        if quiet_s >= owner.speculate_after_s - 1e-3 and guess is None and speech:
                            drop_early()  # the guess hears it all, and sooner without a pass beside it
                            start_guess(list(speech))
                    previous = score
                    early_words()
                elif event.type == VADEventType.END_OF_SPEECH and speaking:
                    speaking = False
                    if speech:
                        end_utterance(time.time() - event.silence_duration - event.inference_duration,
                                      list(speech))
            finals.put_nowait(None)

        async def send_finals() -> None:
            # In order, and without holding up the VAD: the next utterance may start meanwhile.
            while (item := await finals.get()) is not None:
                task, speech_end_time = item
                result = await task
                if result.alternatives and result.alternatives[0].text:
                    self._event_ch.send_nowait(stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[result.alternatives[0]],
                        speech_end_time=result.speech_end_time or speech_end_time))

        tasks = [asyncio.create_task(forward_input(), name="speculative_stt_input"),
                 asyncio.create_task(follow_vad(), name="speculative_stt_vad"),
                 asyncio.create_task(send_finals(), name="speculative_stt_finals")]
        try:
            await asyncio.gather(*tasks)
        finally:
            drop_guess()
            drop_early()
            await utils.aio.cancel_and_wait(*tasks)
            await vad_stream.aclose()
