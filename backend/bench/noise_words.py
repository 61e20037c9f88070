"""How surely Whisper decodes short real words against wordless sounds: the figures behind
``WHISPER_NO_SPEECH_THRESHOLD``, ``WHISPER_LOG_PROB_THRESHOLD`` and ``VOICE_MIN_LOG_PROB``.

    cd backend && .venv/bin/python -m bench.noise_words

Short spoken words (the embedded voice) and wordless sounds (noise bursts shaped like a cough, and
short spoken sounds played backwards), each padded with 0.1, 0.25 and 0.5 s of silence, go through
the Whisper service with the project's filters off (``language="en"``). For each: the text Whisper
wrote, its no-speech probability and its mean token log-probability; then what the filters keep.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from app.audio.codec import WHISPER_RATE, float_to_pcm16, pcm16_to_float, resample_pcm
from app.config.settings import get_settings
from app.services.local_tts import LocalTTSService
from app.services.whisper import WhisperService
from bench.common import save

WORDS = ["Stop.", "Wait.", "No.", "Yes.", "Okay.", "Thanks.", "What?", "Go on.", "Tell me more.", "Why?",
         "Hello there.", "I see."]
BACKWARDS = ["Shh.", "Uhh.", "Achoo!", "Hmm.", "Ahem."]
SHORT_BACKWARDS = ["Hi.", "No.", "Oh."]  # a short voiced sound, ~0.2 s
PADS_S = (0.1, 0.25, 0.5)


def cough(seed: int, seconds: float) -> np.ndarray:
    n = int(seconds * WHISPER_RATE)
    envelope = np.exp(-np.linspace(0, 6, n)) * np.minimum(1, np.linspace(0, 20, n))
    noise = np.random.default_rng(seed).standard_normal(n)
    return (np.convolve(noise, np.ones(8) / 8, mode="same") * envelope * 0.5).astype(np.float32)


def knocks(count: int, seed: int) -> np.ndarray:
    """Knocks on a door: ``count`` short thuds (a decaying low tone with a noisy attack), 0.25 s apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.08 * WHISPER_RATE)) / WHISPER_RATE
    thud = np.exp(-t * 60) * (np.sin(2 * np.pi * 180 * t) + 0.5 * rng.standard_normal(t.size))
    out = np.zeros(int((0.25 * count + 0.1) * WHISPER_RATE), np.float32)
    for k in range(count):
        start = int(0.25 * k * WHISPER_RATE)
        out[start:start + thud.size] += 0.6 * thud
    return out


async def noise_clips() -> list[tuple[str, bytes]]:
    """Wordless sounds to make over a reply (``bench.voice_bench``): speech played backwards (long and short),
    coughs and knocks, each with 0.1 s of silence around it, as s16le at 16 kHz."""
    settings = get_settings().model_copy(update={"local_tts_variation": 0.0})
    tts = LocalTTSService(settings)
    await tts.start()
    try:
        sounds = [(f"backwards {t!r}", pcm16_to_float(resample_pcm(await tts.synthesize(t), tts.sample_rate,
                                                                   WHISPER_RATE))[::-1])
                  for t in (*BACKWARDS, *SHORT_BACKWARDS)]
    finally:
        await tts.close()
    sounds += [(f"cough {seed}, {s} s", cough(seed, s)) for seed in range(3) for s in (0.3, 0.6)]
    sounds += [(f"{count} knocks", knocks(count, count)) for count in (1, 3)]
    pad = np.zeros(WHISPER_RATE // 10, np.float32)
    return [(name, float_to_pcm16(np.concatenate([pad, audio, pad]))) for name, audio in sounds]


async def main() -> None:
    settings = get_settings().model_copy(update={"local_tts_variation": 0.0, "whisper_no_speech_threshold": 1.0})
    whisper, tts = WhisperService(settings), LocalTTSService(settings)
    await asyncio.gather(whisper.start(), tts.start())

    async def spoken(text: str) -> np.ndarray:
        return pcm16_to_float(resample_pcm(await tts.synthesize(text), tts.sample_rate, WHISPER_RATE))

    sounds: list[tuple[str, str, np.ndarray]] = [("words", t, await spoken(t)) for t in WORDS]
    sounds += [("noise", f"backwards {t!r}", (await spoken(t))[::-1].copy()) for t in BACKWARDS]
    sounds += [("noise", f"cough {seed}, {s} s", cough(seed, s)) for seed in range(4) for s in (0.3, 0.6)]

    live = get_settings()
    rows = []
    for kind, name, audio in sounds:
        for pad_s in PADS_S:
            pad = np.zeros(int(pad_s * WHISPER_RATE), np.float32)
            result = await whisper.transcribe(np.concatenate([pad, audio, pad]), language="en")
            for segment in result.segments or [None]:
                no_speech = segment.no_speech_prob if segment else None
                log_prob = segment.avg_logprob if segment else None
                dropped_by_service = segment is not None and no_speech > live.whisper_no_speech_threshold \
                    and log_prob < live.whisper_log_prob_threshold
                dropped_by_voice = segment is not None and log_prob < live.voice_min_log_prob
                rows.append({"kind": kind, "sound": name, "pad_s": pad_s, "text": segment.text if segment else "",
                             "no_speech": None if no_speech is None else round(no_speech, 2),
                             "log_prob": None if log_prob is None else round(log_prob, 2),
                             "kept_as_words": bool(segment and segment.text) and not dropped_by_service
                             and not dropped_by_voice})
    for row in rows:
        print(f"{row['kind']:6s} {row['sound']:24s} pad {row['pad_s']:4.2f}  {row['text']!r:28s} "
              f"no-speech {row['no_speech']}  log-prob {row['log_prob']}  kept: {row['kept_as_words']}")
    words = [r for r in rows if r["kind"] == "words"]
    noise = [r for r in rows if r["kind"] == "noise"]
    summary = {
        "words_kept": f"{sum(r['kept_as_words'] for r in words)} of {len(words)}",
        "noise_kept_as_words": f"{sum(r['kept_as_words'] for r in noise)} of {len(noise)}",
        "words_log_prob_min": min(r["log_prob"] for r in words if r["log_prob"] is not None),
        "words_no_speech_max": max(r["no_speech"] for r in words if r["no_speech"] is not None),
    }
    print(json.dumps(summary))
    print("saved", save("noise_words", {"settings": {k: getattr(live, k) for k in (
        "whisper_no_speech_threshold", "whisper_log_prob_threshold", "voice_min_log_prob")},
        "summary": summary, "rows": rows}))
    await asyncio.gather(whisper.close(), tts.close())


if __name__ == "__main__":
    asyncio.run(main())
