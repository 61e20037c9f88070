"""Voice-to-voice latency of the WebSocket session, as a microphone client sees it.

A scripted client speaks each utterance (the embedded voice without its sampling noise, the same every run: ``bench.common.user_voice``) in real time in 20 ms frames,
then keeps sending silence as an open microphone would. Latency = the moment the frame holding the
last voiced sample was sent -> the first reply audio byte received.

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

FRAME_BYTES = 320 * 2  # 20 ms of s16le at 16 kHz (until 2026-11-29 this was 40 ms sent every 20 ms: 2x real time)
STAGES = ("endpointing_ms", "stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms",
          "voice_to_voice_ms")


async def make_clips(texts: list[str]) -> list[bytes]:
    spoken, rate = await user_voice(texts)
    return [resample_pcm(pcm, rate, 16000) for pcm in spoken]


def last_voiced_frame(pcm: bytes) -> int:
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    voiced = np.nonzero(samples > 500)[0]
    return int(voiced[-1]) * 2 // FRAME_BYTES if voiced.size else 0


class Mic:
    """Sends 20 ms frames on a steady clock: speech when given, silence otherwise."""

    def __init__(self, ws):
        self.ws = ws
        self.queue: list[bytes] = []
        self.marks: dict[int, float] = {}  # frame number -> send time, for frames we care about
        self.sent = 0
        self.watch: int | None = None
        self.watch_time: float | None = None

    def say(self, pcm: bytes) -> None:
        frames = [pcm[i:i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm), FRAME_BYTES)]
        self.watch = self.sent + len(self.queue) + last_voiced_frame(pcm)
        self.watch_time = None
        self.queue.extend(frames)

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


async def session(url: str, clips: list[tuple[str, bytes]], label: str) -> list[dict]:
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
                    if event["type"] == "metrics":
                        metrics = event
                        break
                    if event["type"] == "transcript":
                        transcript_at = transcript_at or time.perf_counter()
                        heard = f"{heard} {event['text']}".strip()
                        if not event["text"]:
                            break
                turn = {"session": label, "errors": errors, "metrics": metrics, "said": said, "heard": heard}
                if first_audio and mic.watch_time:
                    turn["client_voice_to_voice_ms"] = (first_audio - mic.watch_time) * 1000
                if transcript_at and mic.watch_time:
                    turn["client_transcript_ms"] = (transcript_at - mic.watch_time) * 1000
                turns.append(turn)
                await asyncio.sleep(1.0)  # let the reply "play" a moment of open mic before the next question
        finally:
            mic_task.cancel()
    return turns


async def barge_in(url: str, clip: bytes, repeats: int = 5) -> list[dict]:
    """Speak over a long reply that was already sent whole and is still playing at the client. Times from
    our first speech frame: the server's `playback: paused` (the client's audio stops), and the
    `interrupted` that confirms it once the words are transcribed. Each try is a new conversation (the
    small model's stories get shorter as its history fills with cut-off ones)."""
    results = []
    for _ in range(repeats * 2):  # a reply may be too short to talk over
        if len(results) == repeats:
            break
        result = await barge_in_once(url, clip)
        if result is not None:
            results.append(result)
    return results


async def barge_in_once(url: str, clip: bytes) -> dict | None:
    async with websockets.connect(url.replace("http", "ws") + "/v1/conversation/ws", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "config", "instructions": "You tell very long, detailed stories."}))
        mic = Mic(ws)
        mic_task = asyncio.create_task(mic.run())

        async def receive(timeout: float = 60) -> bytes | dict:
            message = await asyncio.wait_for(ws.recv(), timeout)
            return message if isinstance(message, bytes) else json.loads(message)

        try:
            await ws.send(json.dumps({"type": "text", "text": "Tell me a long story about a lighthouse keeper."}))
            audio_s, first_audio, last_audio, ended = 0.0, None, None, False
            # Until the whole reply has arrived: no audio for 1.5 s (its words keep coming as it plays).
            while not ended and not (last_audio and time.perf_counter() - last_audio > 1.5):
                try:
                    message = await receive(0.1 if first_audio else 60)
                except asyncio.TimeoutError:
                    continue
                if isinstance(message, bytes):
                    first_audio = first_audio or time.perf_counter()
                    last_audio = time.perf_counter()
                    audio_s += len(message) / 2 / 22050
                else:
                    ended = message["type"] in ("response_end", "error")
            unplayed = audio_s - (time.perf_counter() - first_audio) if first_audio else 0.0
            if ended or unplayed < 3.0:
                return None
            speech_frame = mic.sent + len(mic.queue)
            mic.say(clip)
            while mic.sent <= speech_frame:
                await asyncio.sleep(0.005)
            speech_start = time.perf_counter()
            paused = interrupted = None
            while True:
                message = await receive()
                if isinstance(message, bytes):
                    continue
                if message["type"] == "playback" and message["state"] == "paused" and paused is None:
                    paused = time.perf_counter()
                if message["type"] == "interrupted" and interrupted is None:
                    interrupted = time.perf_counter()
                if message["type"] == "response_end":
                    break  # our question was answered, or the story ended first: nothing was interrupted
            if interrupted is None:
                return None
            return {"unplayed_s": round(unplayed, 2), "reply_sent_s": round(audio_s, 2),
                    "paused_ms": ((paused or interrupted) - speech_start) * 1000,
                    "interrupted_ms": (interrupted - speech_start) * 1000}
        finally:
            mic_task.cancel()


def barge_in_report(results: list[dict]) -> dict:
    return {"tries": len(results), "reply_unplayed_s": [r["unplayed_s"] for r in results],
            "paused_ms": summary([r["paused_ms"] for r in results]),
            "interrupted_ms": summary([r["interrupted_ms"] for r in results])}


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
            print("barge-in", json.dumps(barge_in_report(await barge_in(url, clips[0][1]))))
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
    print("saved", save(f"voice-{whisper_model or 'default'}", out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--whisper-model", help="WHISPER_MODEL for the server (e.g. embedded-tiny.en)")
    parser.add_argument("--barge-in-only", action="store_true", help="only the barge-in measurement, not saved")
    parser.add_argument("--single-only", action="store_true", help="only the single-session turns, not saved")
    args = parser.parse_args(argv)
    asyncio.run(run(args.sessions, args.whisper_model, args.barge_in_only, args.single_only))


if __name__ == "__main__":
    main()
