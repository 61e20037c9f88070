"""SpeculativeSTT: a non-streaming STT (Whisper) made streaming by the VAD, transcribing early.

LiveKit's own ``stt.StreamAdapter`` starts recognizing an utterance only once the VAD has confirmed
the silence after it (``VAD_MIN_SILENCE_MS``). This one starts at the first silent VAD windows, so
the transcription runs while the silence is still being confirmed; if the user speaks on, that
guess is dropped and the utterance is recognized again when it really ends. The WebSocket voice
session does the same.
"""

from __future__ import annotations

import asyncio
import time

from livekit import rtc
from livekit.agents import APIConnectOptions, NotGivenOr, stt, utils
from livekit.agents.stt.stream_adapter import StreamAdapterWrapper
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
from livekit.agents.vad import VADEventType

# Start transcribing after this much trailing silence (two VAD windows), as the WebSocket session does.
SPECULATE_AFTER_S = 0.064


class SpeculativeSTT(stt.StreamAdapter):
    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.RecognizeStream:
        return _SpeculativeStream(self, vad=self._vad, wrapped_stt=self.wrapped_stt, language=language,
                                  conn_options=conn_options)


class _SpeculativeStream(StreamAdapterWrapper):
    async def _run(self) -> None:
        vad_stream = self._vad.stream()
        speech: list[rtc.AudioFrame] = []  # the utterance so far, as the VAD buffers it
        guess: asyncio.Task[stt.SpeechEvent] | None = None

        def recognize(frames: list[rtc.AudioFrame]) -> asyncio.Task[stt.SpeechEvent]:
            return asyncio.create_task(self._wrapped_stt.recognize(
                buffer=utils.merge_frames(frames), language=self._language,
                conn_options=self._wrapped_stt_conn_options))

        def drop_guess() -> None:
            nonlocal guess
            if guess is not None:
                guess.cancel()
                guess = None

        async def forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()  # the VAD starts over, and so does the utterance
                    drop_guess()
                    speech.clear()
                    continue
                vad_stream.push_frame(item)
            vad_stream.end_input()

        async def transcribe() -> None:
            nonlocal guess
            async for event in vad_stream:
                if event.type == VADEventType.START_OF_SPEECH:
                    drop_guess()
                    speech[:] = event.frames  # includes the padding before the speech
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                elif event.type == VADEventType.INFERENCE_DONE and event.speaking:
                    speech.extend(event.frames)
                    if event.raw_accumulated_silence == 0:
                        drop_guess()  # speaking again: the guess misses the rest
                    elif event.raw_accumulated_silence >= SPECULATE_AFTER_S and guess is None:
                        guess = recognize(list(speech))
                elif event.type == VADEventType.END_OF_SPEECH:
                    speech_end_time = time.time() - event.silence_duration - event.inference_duration
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.END_OF_SPEECH,
                                                               speech_end_time=speech_end_time))
                    task, guess = guess or recognize(event.frames), None
                    speech.clear()
                    result = await task
                    if result.alternatives and result.alternatives[0].text:
                        self._event_ch.send_nowait(stt.SpeechEvent(
                            type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[result.alternatives[0]],
                            speech_end_time=result.speech_end_time or speech_end_time))

        tasks = [asyncio.create_task(forward_input(), name="speculative_stt_input"),
                 asyncio.create_task(transcribe(), name="speculative_stt_recognize")]
        try:
            await asyncio.gather(*tasks)
        finally:
            drop_guess()
            await utils.aio.cancel_and_wait(*tasks)
            await vad_stream.aclose()
