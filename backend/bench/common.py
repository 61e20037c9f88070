"""Shared pieces of the benchmarks: a real server in a subprocess, spoken test clips, statistics."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

BACKEND = Path(__file__).resolve().parents[1]
RESULTS = BACKEND.parent / "bench-results"

UTTERANCES = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Tell me a fun fact about the moon.",
    "What should I cook for dinner tonight?",
    "Can you recommend a good book?",
    "What is the weather usually like in spring?",
    "How do I make a cup of tea?",
    "Why is the sky blue?",
    "What time zone is London in?",
    "Give me a short word of encouragement.",
    "What is two plus two?",
    "Name a famous painter.",
]


async def user_voice(texts: list[str]) -> tuple[list[bytes], int]:
    """The benchmark's "user": each text spoken by the embedded voice without its sampling noise, so every run
    (and every commit compared) hears the same clips, and word error rates compare. PCM s16le mono, its rate."""
    from app.config.settings import Settings
    from app.services.local_tts import LocalTTSService

    tts = LocalTTSService(Settings(app_env="test", _env_file=None, local_tts_variation=0.0))
    await tts.start()
    await tts.wait_ready(60)
    try:
        return [await tts.synthesize(text) for text in texts], tts.sample_rate
    finally:
        await tts.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(env: dict[str, str] | None = None, timeout: float = 120):
    """Start `uvicorn app.main:app` in its own process; yield (url, seconds until /health/ready was 200)."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            cwd=BACKEND, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > timeout:
                raise RuntimeError("server did not become ready")
            time.sleep(0.05)
        yield url, time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(pct(values, 0.5), 1), "p95": round(pct(values, 0.95), 1),
            "mean": round(statistics.fmean(values), 1) if values else float("nan"),
            "min": round(min(values), 1) if values else float("nan"), "max": round(max(values), 1) if values else float("nan")}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}


NUMBER_WORDS = dict(enumerate("zero one two three four five six seven eight nine ten eleven twelve".split()))


def spoken_words(text: str) -> list[str]:
    """Lower-case words, digits as words: "2 plus 2" is what "two plus two" sounds like, not an error."""
    return [NUMBER_WORDS.get(int(w), w) if w.isdigit() else w for w in re.findall(r"[\w']+", text.lower())]


def word_errors(said: str, heard: str) -> tuple[int, int]:
    """Word-level edit distance (substitutions, insertions, deletions) and the reference length."""
    ref, hyp = spoken_words(said), spoken_words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


# The hops of a turn, in order: (name, from, to). "sent" (the user's last voiced frame) and "received" (the agent's
# first voiced frame at the user) are the benchmark's; the rest are the agent's trace (app.agents.turn_trace).
HOPS = [("sent -> received by the agent", "sent", "last_voiced_received"),
        ("-> VAD end of speech", "last_voiced_received", "vad_end"),
        ("-> final transcript", "vad_end", "final_transcript"),
        ("-> LLM first token", "final_transcript", "llm_first_token"),
        ("-> first piece at the TTS", "llm_first_token", "llm_first_piece"),
        ("-> first TTS audio", "llm_first_piece", "tts_first_audio"),
        ("-> handed to the track", "tts_first_audio", "audio_to_track"),
        ("-> received by the user", "audio_to_track", "received")]


def hop_table(results: list[dict], trace: Path) -> dict:
    """Each measured turn's hops, from the user's moments (``_sent``, ``_received``: popped from each turn) and the
    agent's trace line of that turn (the one whose end of speech falls between the two)."""
    lines = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()] if trace.exists() else []
    hops: dict[str, list[float]] = {name: [] for name, _, _ in HOPS}
    traced = 0
    for turn in results:
        sent, received = turn.pop("_sent", None), turn.pop("_received", None)
        moments = next((m for m in lines if sent is not None and sent < m.get("vad_end", 0) < received), None)
        if moments is None:
            continue
        traced += 1
        moments = {**moments, "sent": sent, "received": received}
        turn["hops_ms"] = {name: round((moments[b] - moments[a]) * 1000, 1) for name, a, b in HOPS
                           if a in moments and b in moments}
        for name, value in turn["hops_ms"].items():
            hops[name].append(value)
    return {"turns_traced": traced, "hops_ms": {name: summary(values) for name, values in hops.items() if values}}
