"""How short Whisper's encoder window can be: words and time per window size, for each embedded Whisper.

Each of 24 utterances (the voice benchmark's 12 and 12 more, short and long, spoken by the embedded TTS
with no sampling noise, so every run hears the same audio) is transcribed the way the service decodes
(with timestamp tokens), without its loop guard, at several minimum windows. Counted per window:
transcripts whose words differ from the stock 30 s window's, and decoding loops (``looks_repeated``).

    cd backend && .venv/bin/python -m bench.whisper_windows
"""

from __future__ import annotations

import asyncio
import re
import time

from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.config.settings import Settings
from app.services.local_tts import LocalTTSService
from app.services.whisper import WhisperService, looks_repeated
from bench.common import UTTERANCES, machine, save, summary

MORE = [
    "Yes.", "No thanks.", "Okay, go on.", "Stop.", "Set a timer for fifteen minutes.",
    "Play some relaxing music, please.", "Thank you, that was helpful.",
    "What's the difference between a crocodile and an alligator?",
    "How far away is the moon from the earth, in kilometers?",
    "Could you please remind me to call my mother tomorrow morning at nine?",
    "I was wondering whether you could explain how photosynthesis works in simple terms.",
    "Tell me a story about a dragon, a knight and a very small castle by the sea.",
]
WINDOWS_S = (30, 10, 7.5, 6, 5)
PAD = b"\0\0" * (WHISPER_RATE // 4)  # a quarter second of silence either side, as the VAD leaves it


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


async def run() -> dict:
    settings = Settings(app_env="test", _env_file=None, local_tts_variation=0.0)
    tts = LocalTTSService(settings)
    await tts.start()
    await tts.wait_ready(60)
    clips = [pcm16_to_float(PAD + resample_pcm(await tts.synthesize(u), tts.sample_rate, WHISPER_RATE) + PAD)
             for u in UTTERANCES + MORE]
    await tts.close()
    out = {"machine": machine(), "clips": len(clips)}
    for model in ("embedded-base", "embedded-tiny.en"):
        whisper = WhisperService(Settings(app_env="test", _env_file=None, whisper_model=model))
        await whisper.start()
        await whisper.wait_ready(60)
        language = None if model == "embedded-base" else "en"
        stock: list[list[str]] = []
        for window_s in WINDOWS_S:
            times, differ, loops = [], [], 0
            for i, audio in enumerate(clips):
                started = time.perf_counter()
                result = await whisper.transcribe(audio, language=language, min_window_s=window_s, loop_guard=False)
                times.append(time.perf_counter() - started)
                if window_s == WINDOWS_S[0]:
                    stock.append(words(result.text))
                elif words(result.text) != stock[i]:
                    differ.append(result.text)
                loops += looks_repeated(result.text)
            row = {"ms": summary([t * 1000 for t in times]), "differ_from_30s": len(differ), "loops": loops,
                   "examples": differ[:3]}
            out[f"{model} {window_s} s"] = row
            print(f"{model:18} window {window_s:>4} s: p50 {row['ms']['p50']:6.0f} ms, "
                  f"{len(differ):2} of {len(clips)} differ from 30 s, {loops} loops  {differ[:2]}", flush=True)
        await whisper.close()
    print("saved", save("whisper-windows", out))
    return out


if __name__ == "__main__":
    asyncio.run(run())
