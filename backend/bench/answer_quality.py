"""Answer quality over the whole voice path: spoken questions with known short answers.

Each question is spoken by the server's own TTS (``POST /v1/audio/speech``, PCM) and asked through the voice
WebSocket (``/v1/conversation/ws``: VAD -> STT -> LLM -> TTS), one fresh session per question, with
``bench.voice_bench.session``. A question counts right when the reply's text (``response_end``) holds one of
its accepted answers as a word (case-insensitive). It measures whatever the API at ``--url`` is configured
with: embedded models or model servers of its own (``bench.remote_models`` runs it for both).

    cd backend && .venv/bin/python -m bench.answer_quality [--url http://127.0.0.1:8000]

Without ``--url`` it starts a GemmaVoice API with default settings (embedded models) and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re

import httpx

from app.audio.codec import resample_pcm
from bench.common import machine, save, summary
from bench.voice_bench import session

# (question, accepted answers): short facts even a small model may know; numbers as digits and as words.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("What is the freezing point of water in degrees Celsius?", ("zero", "0")),
    ("How many days are in a week?", ("seven", "7")),
    ("What is two plus two?", ("four", "4")),
    ("Which planet do we live on?", ("earth",)),
    ("What is the opposite of hot?", ("cold",)),
    ("How many hours are in a day?", ("twenty-four", "twenty four", "24")),
    ("Which animal says moo?", ("cow", "cows")),
    ("What colour is grass?", ("green",)),
]


def is_right(reply: str | None, answers: tuple[str, ...]) -> bool:
    """Whether ``reply`` holds one of ``answers`` as a whole word (or words), case-insensitive."""
    text = (reply or "").lower()
    return any(re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text) for answer in answers)


async def server_clips(url: str, texts: list[str]) -> list[bytes]:
    """Each text spoken by the server's own TTS, as 16 kHz s16le (what the WebSocket takes by default)."""
    clips = []
    async with httpx.AsyncClient(timeout=120) as client:
        for text in texts:
            response = await client.post(f"{url}/v1/audio/speech", json={"input": text, "response_format": "pcm"})
            response.raise_for_status()
            rate = int(response.headers["x-sample-rate"])
            clips.append(resample_pcm(response.content, rate, 16000))
    return clips


async def run_quality(url: str) -> dict:
    """Ask every question in a fresh session of the API at ``url``; n right of N and each one's voice-to-voice."""
    texts = [q for q, _ in QUESTIONS]
    clips = await server_clips(url, texts)
    answers = []
    for i, ((question, accepted), clip) in enumerate(zip(QUESTIONS, clips)):
        [turn] = await session(url, [(question, clip)], f"q{i}", pause_s=0.0)
        right = is_right(turn.get("reply"), accepted)
        answers.append({"question": question, "accepted": list(accepted), "heard": turn["heard"],
                        "reply": turn.get("reply"), "right": right,
                        "client_voice_to_voice_ms": round(turn["client_voice_to_voice_ms"], 1)
                        if turn.get("client_voice_to_voice_ms") is not None else None,
                        "server_metrics": {k: v for k, v in (turn["metrics"] or {}).items()
                                           if k.endswith("_ms") or k == "reply_audio_seconds"},
                        "errors": turn["errors"]})
        print(f"  {'RIGHT' if right else 'wrong'}  {answers[-1]['client_voice_to_voice_ms'] or float('nan'):7.1f} ms"
              f"  {question!r} heard {turn['heard']!r} -> {turn.get('reply')!r}", flush=True)
    v2v = [a["client_voice_to_voice_ms"] for a in answers if a["client_voice_to_voice_ms"] is not None]
    return {"right": sum(a["right"] for a in answers), "questions": len(answers),
            "answered": len(v2v), "errors": sum(len(a["errors"]) for a in answers),
            # The same digest in two runs: both servers spoke the questions with the very same audio.
            "clips_sha256": hashlib.sha256(b"".join(clips)).hexdigest()[:16],
            "client_voice_to_voice_ms": summary(v2v), "answers": answers}


def table(result: dict) -> str:
    rows = [f"{'':2s} {'v2v ms':>8s}  {'question':58s} reply"]
    for a in result["answers"]:
        v2v = a["client_voice_to_voice_ms"]
        rows.append(f"{'ok' if a['right'] else '--':2s} {v2v if v2v is not None else float('nan'):8.1f}  "
                    f"{a['question']:58s} {(a['reply'] or '')[:70]!r}")
    s = result["client_voice_to_voice_ms"]
    rows.append(f"right {result['right']}/{result['questions']}, answered {result['answered']}, "
                f"voice-to-voice p50 {s['p50']} ms p95 {s['p95']} ms")
    return "\n".join(rows)


async def main_async(url: str | None) -> dict:
    out = {"machine": machine()}
    if url:
        out["url"] = url
        out.update(await run_quality(url))
    else:
        from bench.model_servers import GemmaVoiceAPIProcess

        api = GemmaVoiceAPIProcess()
        try:
            api.start()
            out["url"] = "embedded (GemmaVoiceAPIProcess, default settings)"
            out.update(await run_quality(api.base))
        finally:
            api.stop()
    print(table(out))
    print("saved", save("answer-quality", out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="an API already running (http://127.0.0.1:8000); default: start one, embedded")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.url.rstrip("/") if args.url else None))


if __name__ == "__main__":
    main()
