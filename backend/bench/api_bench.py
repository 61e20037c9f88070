"""Speech API numbers: LLM and STT overhead against the raw libraries, TTS speed, start-up, concurrency.

    cd backend && .venv/bin/python -m bench.api_bench
"""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import numpy as np

from app.config.settings import Settings
from app.models import resolve_llm, resolve_whisper
from bench.common import UTTERANCES, machine, running_server, save, summary

PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Write a detailed paragraph about the history of bread."}]
MAX_TOKENS = 160
ROUNDS = 5


def api_stream(url: str) -> tuple[float, float, int]:
    """(time to first token, tokens/s after the first, tokens) through /v1/chat/completions."""
    body = {"model": "x", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0.0, "stream": True, "seed": 7}
    started = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                tokens += 1
                last = time.perf_counter()
                first = first or last
    return first - started, (tokens - 1) / (last - first), tokens


def raw_stream(llama) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in llama.create_chat_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, stream=True, seed=7):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
            last = time.perf_counter()
            first = first or last
    return first - started, (tokens - 1) / (last - first), tokens


def bench_llm(url: str, settings: Settings) -> dict:
    from llama_cpp import Llama

    llama = Llama(model_path=str(resolve_llm(settings).path), n_ctx=settings.llm_n_ctx,
                  n_threads=settings.llm_n_threads, n_threads_batch=settings.llm_n_threads, verbose=False)
    api, raw = [], []
    api_stream(url)  # warm both prompt caches the same way
    raw_stream(llama)
    for _ in range(ROUNDS):  # interleaved, so drift in machine load hits both alike
        raw.append(raw_stream(llama))
        api.append(api_stream(url))
    del llama
    api_tps = float(np.median([r[1] for r in api]))
    raw_tps = float(np.median([r[1] for r in raw]))
    return {"api_tokens_per_s": round(api_tps, 1), "raw_tokens_per_s": round(raw_tps, 1),
            "overhead_pct": round((raw_tps - api_tps) / raw_tps * 100, 2),
            "api_first_token_ms": summary([r[0] * 1000 for r in api]),
            "raw_first_token_ms": summary([r[0] * 1000 for r in raw]),
            "tokens": [r[2] for r in api], "threads": settings.llm_n_threads}


def spoken_clips(url: str) -> list[bytes]:
    return [httpx.post(f"{url}/v1/text-to-speech", json={"text": t}, headers={"Accept": "audio/wav"},
                       timeout=60).content for t in UTTERANCES[:8]]


def bench_stt(url: str, settings: Settings, clips: list[bytes]) -> dict:
    """The API against faster-whisper called directly, same model, threads and options, on the same clips.

    Two direct baselines: stock ``WhisperModel``, and the service's own model class (10 s encoder window,
    one encoder pass with language detection). Overhead is the API against the latter: what HTTP,
    decoding and the queue add. Speed-up is stock against the API.
    """
    from faster_whisper import WhisperModel, decode_audio

    from app.services.whisper import encoder_window_frames, lean_whisper_call

    where = resolve_whisper(settings)
    options = dict(device="cpu", compute_type=settings.whisper_compute_type, cpu_threads=settings.whisper_threads)
    stock = WhisperModel(where, **options)

    def direct(clip: bytes, lean: bool) -> float:
        started = time.perf_counter()
        audio = decode_audio(io.BytesIO(clip))
        model = stock
        if lean:  # the service's call on the same loaded model
            model = lean_whisper_call(stock, encoder_window_frames(len(audio), settings.whisper_min_window_s))
        segments, _ = model.transcribe(audio, beam_size=settings.whisper_beam_size, condition_on_previous_text=False)
        "".join(s.text for s in segments)
        return time.perf_counter() - started

    def api(clip: bytes) -> float:
        started = time.perf_counter()
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("c.wav", clip)},
                       data={"model": "whisper-1"}, timeout=60)
        r.raise_for_status()
        return time.perf_counter() - started

    direct(clips[0], False), direct(clips[0], True), api(clips[0])  # warm-up
    stock_times, lean_times, api_times = [], [], []
    for clip in clips:
        stock_times.append(direct(clip, False))
        lean_times.append(direct(clip, True))
        api_times.append(api(clip))
    del stock
    stock_med, lean_med, api_med = (float(np.median(t)) for t in (stock_times, lean_times, api_times))
    return {"api_ms": summary([t * 1000 for t in api_times]),
            "direct_same_model_ms": summary([t * 1000 for t in lean_times]),
            "direct_stock_faster_whisper_ms": summary([t * 1000 for t in stock_times]),
            "overhead_pct": round((api_med - lean_med) / lean_med * 100, 2),
            "speedup_vs_stock": round(stock_med / api_med, 2), "clips": len(clips)}


def bench_tts(url: str) -> dict:
    ttfb, rtf = [], []
    for text in UTTERANCES[:8]:
        started = time.perf_counter()
        first = None
        size = 0
        with httpx.stream("POST", f"{url}/v1/text-to-speech", json={"text": text, "format": "pcm", "stream": True},
                          headers={"Accept": "audio/pcm"}, timeout=60) as r:
            rate = int(r.headers["x-sample-rate"])
            for chunk in r.iter_bytes():
                first = first or time.perf_counter()
                size += len(chunk)
        total = time.perf_counter() - started
        ttfb.append((first - started) * 1000)
        rtf.append(total / (size / 2 / rate))
    return {"first_audio_ms": summary(ttfb), "real_time_factor": {k: round(v / 1000, 4) if k != "n" else v
                                                                  for k, v in summary([r * 1000 for r in rtf]).items()}}


async def bench_concurrency(url: str, clips: list[bytes], rounds: int = 3) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=180) as c:
        async def chat():
            return await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Say hi."}],
                                                               "max_tokens": 32})

        async def stt(i):
            return await c.post("/v1/audio/transcriptions", files={"file": ("c.wav", clips[i % len(clips)])},
                                data={"model": "whisper-1"})

        async def tts(i):
            return await c.post("/v1/audio/speech", json={"input": UTTERANCES[i], "voice": "x",
                                                          "response_format": "wav"})

        async def timed(kind, make):
            started = time.perf_counter()
            r = await make()
            return kind, r.status_code, (time.perf_counter() - started) * 1000

        results = []
        for _ in range(rounds):
            jobs = [timed("chat", chat) for _ in range(3)] + [timed("stt", lambda i=i: stt(i)) for i in range(3)] + \
                   [timed("tts", lambda i=i: tts(i)) for i in range(2)]
            results += await asyncio.gather(*jobs)
    failures = [r for r in results if r[1] != 200]
    return {"requests": len(results), "failures": len(failures), "latency_ms": summary([r[2] for r in results]),
            "by_kind_ms": {k: summary([r[2] for r in results if r[0] == k]) for k in ("chat", "stt", "tts")}}


def main() -> dict:
    settings = Settings()
    out = {"machine": machine()}
    with running_server() as (url, ready_s):
        out["startup_to_ready_s"] = round(ready_s, 2)
        print(f"start-up to ready: {ready_s:.2f} s", flush=True)
        out["llm"] = bench_llm(url, settings)
        print("llm", json.dumps(out["llm"]), flush=True)
        clips = spoken_clips(url)
        out["stt"] = bench_stt(url, settings, clips)
        print("stt", json.dumps(out["stt"]), flush=True)
        out["tts"] = bench_tts(url)
        print("tts", json.dumps(out["tts"]), flush=True)
        out["concurrency"] = asyncio.run(bench_concurrency(url, clips))
        print("concurrency", json.dumps(out["concurrency"]), flush=True)
    print("saved", save("api", out))
    return out


if __name__ == "__main__":
    main()
