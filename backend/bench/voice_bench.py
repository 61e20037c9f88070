"""Voice-to-voice latency of the WebSocket session, as a microphone client sees it.

A scripted client speaks each utterance (the embedded voice without its sampling noise, the same every run: ``bench.common.user_voice``) in real time in 20 ms frames,
then keeps sending silence as an open microphone would. Latency = the moment the frame holding the
last voiced sample was sent -> the first reply audio byte received. Barge-in: the user speaks over a long
reply; from the frame holding the first voiced sample to `playback: paused` and to `interrupted`. Noise
over a reply: coughs and backwards speech (``bench.noise_words``) must at most pause it, never cut it.

    cd backend && .venv/bin/python -m bench.voice_bench [--sessions 4] [--whisper-model embedded-tiny.en]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
import websockets

from app.audio.codec import resample_pcm
from bench.common import UTTERANCES, machine, running_server, save, summary, user_voice, word_errors
from bench.noise_words import noise_clips
from bench.offline_io import voiced_span

FRAME_BYTES = 320 * 2  # 20 ms of s16le at 16 kHz (until 2026-11-29 this was 40 ms sent every 20 ms: 2x real time)
STAGES = ("endpointing_ms", "stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms",
          "voice_to_voice_ms")


async def make_clips(texts: list[str]) -> list[bytes]:
    spoken, rate = await user_voice(texts)
    return [resample_pcm(pcm, rate, 16000) for pcm in spoken]


def voiced_frames(pcm: bytes, rate: int = 16000) -> tuple[int, int]:
    """The numbers of the 20 ms frames holding the clip's first and last voiced samples (s16le at ``rate``)."""
    start, end = voiced_span(np.frombuffer(pcm, dtype="<i2"), rate)
    return start // (rate // 50), max(end - 1, 0) // (rate // 50)


class Mic:
    """Sends 20 ms frames on a steady clock: speech when given, silence otherwise."""

    def __init__(self, ws):
        self.ws = ws
        self.queue: list[bytes] = []
        self.marks: dict[int, float] = {}  # frame number -> send time, for frames we care about
        self.sent = 0
        self.watch: int | None = None
        self.watch_time: float | None = None

    def say(self, pcm: bytes) -> int:
        """Queue the clip; returns the number of the frame holding its first voiced sample."""
        frames = [pcm[i:i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm), FRAME_BYTES)]
        first, last = voiced_frames(pcm)
        start = self.sent + len(self.queue)
        self.watch = start + last
        self.watch_time = None
        self.queue.extend(frames)
        return start + first

    async def sent_frame(self, number: int) -> float:
        """When frame ``number`` is sent (polled every 5 ms)."""
        while self.sent <= number:
            await asyncio.sleep(0.005)
        return time.perf_counter()

    async def run(self) -> None:
        tick = time.perf_counter()
        while True:
            frame = self.queue.pop(0) if self.queue else b"\0" * FRAME_BYTES
            await self.ws.send(frame)
            if self.sent == self.watch:
                self.watch_time = time.perf_counter()
            self.sent += 1
            tick += 0.02
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))


async def session(url: str, clips: list[tuple[str, bytes]], label: str, pause_s: float = 1.0) -> list[dict]:
    """Speak each clip in turn; a turn ends at the reply's metrics. ``pause_s``: open mic after each reply."""
    turns = []
    async with websockets.connect(url.replace("http", "ws") + "/v1/conversation/ws", max_size=None) as ws:
        json.loads(await ws.recv())  # ready
        mic = Mic(ws)
        mic_task = asyncio.create_task(mic.run())
        try:
            for said, clip in clips:
                mic.say(clip)
                first_audio = None
                transcript_at = None
                metrics = None
                heard = ""
                reply = None
                errors = []
                deadline = time.perf_counter() + 120
                while True:
                    try:
                        message = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.perf_counter()))
                    except asyncio.TimeoutError:
                        errors.append({"type": "error", "code": "bench_timeout", "message": "no reply in 120 s"})
                        break
                    if isinstance(message, bytes):
                        first_audio = first_audio or time.perf_counter()
                        continue
                    event = json.loads(message)
                    if event["type"] == "error":
                        errors.append(event)
                    if event["type"] == "response_end":
                        reply = event["text"]
                    if event["type"] == "metrics":
                        metrics = event
                        break
                    if event["type"] == "transcript":
                        transcript_at = transcript_at or time.perf_counter()
                        heard = f"{heard} {event['text']}".strip()
                        if not event["text"]:
                            break
                turn = {"session": label, "errors": errors, "metrics": metrics, "said": said, "heard": heard,
                        "reply": reply}
                if first_audio and mic.watch_time:
                    turn["client_voice_to_voice_ms"] = (first_audio - mic.watch_time) * 1000
                if transcript_at and mic.watch_time:
                    turn["client_transcript_ms"] = (transcript_at - mic.watch_time) * 1000
                turns.append(turn)
                await asyncio.sleep(pause_s)  # let the reply "play" a moment of open mic before the next question
        finally:
            mic_task.cancel()
    return turns


# After a noise over a reply: the longest a false pause lasts (VOICE_FALSE_INTERRUPTION_S after the noise) and more.
NOISE_SETTLE_S = 2.5


async def barge_in(url: str, clip: bytes, repeats: int = 5) -> list[dict]:
    """Speak over a long reply that was already sent whole and is still playing at the client. Times from
    the frame holding our first voiced sample: the server's `playback: paused` (the client's audio stops),
    and the `interrupted` that ends the reply once words are heard. Each try is a new conversation (the
    small model's stories get shorter as its history fills with cut-off ones)."""
    results = []
    for _ in range(repeats * 2):  # a reply may be too short to talk over
        if len(results) == repeats:
            break
        async with StoryListener(url) as story:
            if not await story.playing():
                continue
            voice_start = await story.mic.sent_frame(story.mic.say(clip))
            paused = interrupted = None
            while True:
                message = await story.receive()
                if isinstance(message, bytes):
                    continue
                if message["type"] == "playback" and message["state"] == "paused" and paused is None:
                    paused = time.perf_counter()
                if message["type"] == "interrupted" and interrupted is None:
                    interrupted = time.perf_counter()
                if message["type"] == "response_end":
                    break  # our question was answered, or the story ended first: nothing was interrupted
            if interrupted is not None:
                results.append({"unplayed_s": round(story.unplayed_s, 2), "reply_sent_s": round(story.audio_s, 2),
                                "paused_ms": ((paused or interrupted) - voice_start) * 1000,
                                "interrupted_ms": (interrupted - voice_start) * 1000})
    return results


async def noise_over_reply(url: str, noises: list[tuple[str, bytes]]) -> list[dict]:
    """Each noise (``bench.noise_words``: coughs, speech played backwards) over a playing reply: whether the
    reply paused, and whether it was cut (it must not be: no words were said)."""
    results: list[dict] = []
    pending = list(noises)
    for _ in range(len(noises) * 2):
        if not pending:
            break
        async with StoryListener(url) as story:
            if not await story.playing():
                continue
            while pending and story.unplayed_now() > NOISE_SETTLE_S + 1.0:
                name, pcm = pending.pop(0)
                await story.mic.sent_frame(story.mic.say(pcm))
                paused = interrupted = resumed = False
                heard = ""
                settle = time.perf_counter() + len(pcm) / 2 / 16000 + NOISE_SETTLE_S
                while (left := settle - time.perf_counter()) > 0:
                    try:
                        message = await story.receive(left)
                    except asyncio.TimeoutError:
                        break
                    if isinstance(message, dict):
                        paused |= message["type"] == "playback" and message["state"] == "paused"
                        resumed |= message["type"] == "playback" and message["state"] == "resumed"
                        interrupted |= message["type"] in ("interrupted", "response_end")
                        if message["type"] == "transcript" and message.get("role") == "user":
                            heard += message["text"]
                results.append({"noise": name, "paused": paused, "resumed": resumed, "cut": interrupted,
                                "heard": heard})
                print(f"  {name:24s} paused {paused!s:5s} resumed {resumed!s:5s} cut {interrupted!s:5s} "
                      f"heard {heard!r}", flush=True)
                if interrupted:
                    break  # this story is over: the next noise gets a new one
    return results


class StoryListener:
    """A conversation whose assistant tells a long story, sent whole while the client "plays" it in real time,
    with a microphone that sends silence until given a clip."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.audio_s = self.unplayed_s = 0.0
        self.first_audio: float | None = None

    async def __aenter__(self) -> StoryListener:
        self.ws = await websockets.connect(self.url.replace("http", "ws") + "/v1/conversation/ws", max_size=None)
        await self.ws.recv()
        await self.ws.send(json.dumps({"type": "config", "instructions": "You tell very long, detailed stories."}))
        self.mic = Mic(self.ws)
        self._mic_task = asyncio.create_task(self.mic.run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._mic_task.cancel()
        await self.ws.close()

    async def receive(self, timeout: float = 60) -> bytes | dict:
        message = await asyncio.wait_for(self.ws.recv(), timeout)
        return message if isinstance(message, bytes) else json.loads(message)

    def unplayed_now(self) -> float:
        return self.audio_s - (time.perf_counter() - self.first_audio) if self.first_audio else 0.0

    async def playing(self) -> bool:
        """Asks for the story; True once all of it has arrived with at least 3 s of it still to play."""
        await self.ws.send(json.dumps({"type": "text", "text": "Tell me a long story about a lighthouse keeper."}))
        last_audio, ended = None, False
        # Until the whole reply has arrived: no audio for 1.5 s (its words keep coming as it plays).
        while not ended and not (last_audio and time.perf_counter() - last_audio > 1.5):
            try:
                message = await self.receive(0.1 if self.first_audio else 60)
            except asyncio.TimeoutError:
                continue
            if isinstance(message, bytes):
                self.first_audio = self.first_audio or time.perf_counter()
                last_audio = time.perf_counter()
                self.audio_s += len(message) / 2 / 22050
            else:
                ended = message["type"] in ("response_end", "error")
        self.unplayed_s = self.unplayed_now()
        return not ended and self.unplayed_s >= 3.0


def barge_in_report(results: list[dict]) -> dict:
    return {"tries": len(results), "reply_unplayed_s": [r["unplayed_s"] for r in results],
            "paused_ms": summary([r["paused_ms"] for r in results]),
            "interrupted_ms": summary([r["interrupted_ms"] for r in results])}


def noise_report(results: list[dict]) -> dict:
    return {"noises": len(results), "paused": sum(r["paused"] for r in results),
            "resumed": sum(r["resumed"] for r in results), "cut": sum(r["cut"] for r in results),
            "cut_by": [(r["noise"], r["heard"]) for r in results if r["cut"]]}


def report(turns: list[dict]) -> dict:
    ok = [t for t in turns if t.get("client_voice_to_voice_ms") is not None]
    errors, words = map(sum, zip(*(word_errors(t["said"], t["heard"]) for t in turns))) if turns else (0, 0)
    out = {"turns": len(turns), "answered": len(ok), "errors": sum(len(t["errors"]) for t in turns),
           "word_error_rate": round(errors / words, 3) if words else None,
           "client_voice_to_voice_ms": summary([t["client_voice_to_voice_ms"] for t in ok]),
           "client_transcript_ms": summary([t["client_transcript_ms"] for t in ok if "client_transcript_ms" in t]),
           "misheard": [(t["said"], t["heard"]) for t in turns if word_errors(t["said"], t["heard"])[0]]}
    for stage in STAGES:
        values = [t["metrics"][stage] for t in ok if t["metrics"] and t["metrics"].get(stage) is not None]
        out[f"server_{stage}"] = summary(values)
    return out


async def run(sessions: int, whisper_model: str | None, barge_in_only: bool = False,
              single_only: bool = False) -> dict:
    out = {"machine": machine(), "whisper_model": whisper_model or "default"}
    with running_server({"WHISPER_MODEL": whisper_model} if whisper_model else None) as (url, _):
        clips = list(zip(UTTERANCES, await make_clips(UTTERANCES)))
        if barge_in_only:
            print("barge-in", json.dumps(barge_in_report(await barge_in(url, clips[0][1]))), flush=True)
            print("noise over a reply", json.dumps(noise_report(await noise_over_reply(url, await noise_clips()))))
            return out
        one = await session(url, clips, "solo")
        out["single_session"] = report(one)
        print("single session", json.dumps(out["single_session"]), flush=True)
        if single_only:
            return out
        many = await asyncio.gather(*(session(url, clips[i::sessions][:3], f"s{i}") for i in range(sessions)))
        out[f"{sessions}_sessions"] = report([t for turns in many for t in turns])
        print(f"{sessions} sessions", json.dumps(out[f"{sessions}_sessions"]), flush=True)
        out["barge_in"] = barge_in_report(await barge_in(url, clips[0][1]))
        print("barge-in", json.dumps(out["barge_in"]), flush=True)
        out["noise_over_reply"] = noise_report(await noise_over_reply(url, await noise_clips()))
        print("noise over a reply", json.dumps(out["noise_over_reply"]), flush=True)
    print("saved", save(f"voice-{whisper_model or 'default'}", out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--whisper-model", help="WHISPER_MODEL for the server (e.g. embedded-tiny.en)")
    parser.add_argument("--barge-in-only", action="store_true", help="only the barge-in and noise measurements, not saved")
    parser.add_argument("--single-only", action="store_true", help="only the single-session turns, not saved")
    args = parser.parse_args(argv)
    asyncio.run(run(args.sessions, args.whisper_model, args.barge_in_only, args.single_only))


if __name__ == "__main__":
    main()
