"""Voice-to-voice latency of ``WS /v1/realtime`` with server VAD, as a Realtime client sees it.

A scripted client (GA event names) speaks each utterance of ``bench.common.UTTERANCES`` (the same clips as
``bench.voice_bench``) in real time, 20 ms of PCM16 at 24 kHz per ``input_audio_buffer.append``, then keeps
sending silence as an open microphone would. Latency = the append holding the last voiced sample was sent ->
the first ``response.output_audio.delta``. Barge-in: a long story is requested and fully received while the
client still has seconds of it to play; the user then speaks over it. Time from the append holding the first
voiced sample to ``input_audio_buffer.speech_started`` (the client stops playing) and to the story's
``response.done`` (``cancelled``).

    cd backend && .venv/bin/python -m bench.realtime_latency [--barge-in 3] [--no-save]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time

import websockets

from app.audio.codec import resample_pcm
from bench.common import UTTERANCES, machine, running_server, save, summary, user_voice, word_errors
from bench.voice_bench import voiced_frames

RATE = 24000
FRAME_BYTES = RATE // 50 * 2  # 20 ms of PCM16


async def make_clips(texts: list[str]) -> list[bytes]:
    spoken, rate = await user_voice(texts)
    return [resample_pcm(pcm, rate, RATE) for pcm in spoken]


class Client:
    """A Realtime socket with a microphone on a steady 20 ms clock and a reader of server events."""

    def __init__(self, ws):
        self.ws = ws
        self.queue: list[bytes] = []
        self.sent = 0
        self.watch: int | None = None
        self.watch_time: float | None = None
        self.events: asyncio.Queue[dict] = asyncio.Queue()

    def say(self, pcm: bytes) -> int:
        """Queue the clip; returns the number of the frame holding its first voiced sample."""
        start = self.sent + len(self.queue)
        self.queue.extend(pcm[i:i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(pcm), FRAME_BYTES))
        first, last = voiced_frames(pcm, RATE)
        self.watch, self.watch_time = start + last, None
        return start + first

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def mic(self) -> None:
        tick = time.perf_counter()
        while True:
            frame = self.queue.pop(0) if self.queue else b"\0" * FRAME_BYTES
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()})
            if self.sent == self.watch:
                self.watch_time = time.perf_counter()
            self.sent += 1
            tick += 0.02
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))

    async def read(self) -> None:
        async for message in self.ws:
            event = json.loads(message)
            event["_t"] = time.perf_counter()
            self.events.put_nowait(event)

    async def next(self, timeout: float) -> dict:
        return await asyncio.wait_for(self.events.get(), timeout)


async def connected(url: str, session: dict):
    ws = await websockets.connect(url.replace("http", "ws") + "/v1/realtime?model=bench", max_size=None)
    client = Client(ws)
    tasks = [asyncio.create_task(client.read())]
    while (await client.next(60))["type"] != "session.created":
        pass
    await client.send({"type": "session.update", "session": {"type": "realtime", **session}})
    while (await client.next(60))["type"] != "session.updated":
        pass
    tasks.append(asyncio.create_task(client.mic()))
    return ws, client, tasks


async def turns(url: str, clips: list[tuple[str, bytes]]) -> list[dict]:
    out = []
    ws, client, tasks = await connected(url, {"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    try:
        for said, clip in clips:
            client.say(clip)
            first_audio, heard, errors = None, "", []
            deadline = time.perf_counter() + 120
            while True:
                try:
                    event = await client.next(max(0.1, deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    errors.append("bench_timeout")
                    break
                kind = event["type"]
                if kind == "response.output_audio.delta" and first_audio is None:
                    first_audio = event["_t"]
                elif kind == "conversation.item.input_audio_transcription.completed":
                    heard = f"{heard} {event['transcript']}".strip()
                elif kind == "error":
                    errors.append(event["error"]["code"])
                elif kind == "response.done":
                    break
            turn = {"said": said, "heard": heard, "errors": errors}
            if first_audio and client.watch_time:
                turn["voice_to_voice_ms"] = (first_audio - client.watch_time) * 1000
            out.append(turn)
            await asyncio.sleep(1.0)
    finally:
        for task in tasks:
            task.cancel()
        await ws.close()
    return out


async def barge_in_once(url: str, clip: bytes) -> dict | None:
    ws, client, tasks = await connected(url, {"instructions": "You tell very long, detailed stories."})
    try:
        await client.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me a long story about a lighthouse keeper."}]}})
        await client.send({"type": "response.create"})
        story, audio_s, first_audio, last_audio = None, 0.0, None, None
        while not (last_audio and time.perf_counter() - last_audio > 1.5):  # the whole reply has arrived
            try:
                event = await client.next(0.1 if first_audio else 60)
            except asyncio.TimeoutError:
                continue
            if event["type"] == "response.created":
                story = event["response"]["id"]
            elif event["type"] == "response.output_audio.delta":
                first_audio = first_audio or event["_t"]
                last_audio = event["_t"]
                audio_s += len(base64.b64decode(event["delta"])) / 2 / RATE
            elif event["type"] == "response.done":
                return None
        if audio_s - (time.perf_counter() - first_audio) < 3.0:
            return None
        first = client.say(clip)
        while client.sent <= first:
            await asyncio.sleep(0.005)
        spoke = time.perf_counter()
        started = None
        while True:
            event = await client.next(60)
            if event["type"] == "input_audio_buffer.speech_started" and started is None:
                started = event["_t"]
            if event["type"] == "response.done" and event["response"]["id"] == story:
                if event["response"]["status"] != "cancelled":
                    return None
                return {"speech_started_ms": ((started or event["_t"]) - spoke) * 1000,
                        "cancelled_ms": (event["_t"] - spoke) * 1000}
    finally:
        for task in tasks:
            task.cancel()
        await ws.close()


async def run(barge_ins: int, keep: bool) -> dict:
    out: dict = {"machine": machine()}
    with running_server() as (url, _):
        clips = list(zip(UTTERANCES, await make_clips(UTTERANCES)))
        done = await turns(url, clips)
        ok = [t["voice_to_voice_ms"] for t in done if "voice_to_voice_ms" in t]
        errors, words = map(sum, zip(*(word_errors(t["said"], t["heard"]) for t in done)))
        out["turns"] = {"turns": len(done), "answered": len(ok), "errors": sum(len(t["errors"]) for t in done),
                        "word_error_rate": round(errors / words, 3) if words else None,
                        "voice_to_voice_ms": summary(ok), "each_ms": [round(v) for v in ok]}
        print("turns", json.dumps(out["turns"]), flush=True)
        if barge_ins:
            results = []
            for _ in range(barge_ins * 2):
                if len(results) == barge_ins:
                    break
                if (result := await barge_in_once(url, clips[1][1])) is not None:
                    results.append(result)
            out["barge_in"] = {"tries": len(results),
                               "speech_started_ms": summary([r["speech_started_ms"] for r in results]),
                               "cancelled_ms": summary([r["cancelled_ms"] for r in results])}
            print("barge-in", json.dumps(out["barge_in"]), flush=True)
    if keep:
        print("saved", save("realtime-latency", out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--barge-in", type=int, default=3, help="barge-in tries to measure (0: none)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(run(args.barge_in, not args.no_save))


if __name__ == "__main__":
    main()
