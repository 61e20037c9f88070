"""Models on servers of their own (issue 29) beside the embedded models, in one run.

Two configurations, one after the other (never at once), each measured at the voice WebSocket
(``/v1/conversation/ws``) of the API the user talks to:

- embedded: one GemmaVoice API with default settings (LLM, Whisper and piper in its own process);
- remote: llama-cpp-python's server (``bench.model_servers.LlamaCppServer``) for the LLM, a second GemmaVoice
  API as the STT + TTS server, and a "light" GemmaVoice API that the user talks to, with LLM_BASE_URL,
  STT_BASE_URL and TTS_BASE_URL pointing at them, which loads no model. The speech server's own LLM_BASE_URL
  also points at llama.cpp's server, so it holds no unused LLM either.

For each: voice-to-voice of one user turn after turn, of 4 users at once (turns answered), the RSS of the
user's API (at ready and after the turns) and its time from process start to /health/ready, the model servers'
RSS, and the answer-quality suite (``bench.answer_quality``). llama-cpp-python's server answers one request at
a time (no batching): with 4 users its p95 shows queueing.

    cd backend && .venv/bin/python -m bench.remote_models [--turns 6] [--users 4] [--user-turns 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

from bench.answer_quality import run_quality, table as quality_table
from bench.common import UTTERANCES, machine, save
from bench.model_servers import GemmaVoiceAPIProcess, LlamaCppServer, ServerProcess
from bench.voice_bench import make_clips, report, session

MB = 1024 * 1024
# Log lines worth a look after a run (uvicorn's access lines are INFO and not counted).
SUSPECT = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception|error", re.IGNORECASE)


def suspect_lines(server: ServerProcess, limit: int = 20) -> list[str]:
    lines = [line for line in server.log_text().splitlines()
             if SUSPECT.search(line) and '" 200' not in line and '" 101' not in line]
    return lines[:limit]


def start_embedded(started: list[ServerProcess]) -> tuple[GemmaVoiceAPIProcess, dict[str, ServerProcess]]:
    api = GemmaVoiceAPIProcess()
    started.append(api)
    api.start()
    return api, {}


def start_remote(started: list[ServerProcess]) -> tuple[GemmaVoiceAPIProcess, dict[str, ServerProcess]]:
    llama = LlamaCppServer()
    started.append(llama)
    llama.start()
    # The STT + TTS server: embedded Whisper and piper; its LLM (unused here) is llama.cpp's server, not a GGUF.
    speech = GemmaVoiceAPIProcess(env={"LLM_BASE_URL": llama.url})
    started.append(speech)
    speech.start()
    light = GemmaVoiceAPIProcess(env={"LLM_BASE_URL": llama.url, "LLM_MODEL": llama.model,
                                      "STT_BASE_URL": speech.url, "TTS_BASE_URL": speech.url})
    started.append(light)
    light.start()
    return light, {"llm (llama_cpp.server)": llama, "stt+tts (GemmaVoice API)": speech}


CONFIGS = {"embedded": start_embedded, "remote": start_remote}


def user_clips(clips: list[tuple[str, bytes]], user: int, turns: int) -> list[tuple[str, bytes]]:
    """User ``user``'s questions: ``turns`` in a row from the list, each user starting further on."""
    return [clips[(user * 3 + k) % len(clips)] for k in range(turns)]


async def measure(name: str, clips: list[tuple[str, bytes]], args) -> dict:
    started: list[ServerProcess] = []
    t0 = time.monotonic()
    try:
        api, model_servers = CONFIGS[name](started)
        out: dict = {"machine": machine(),
                     "api_start_to_ready_s": round(api.started_in, 2),
                     "api_rss_ready_mb": round(api.rss() / MB),
                     "model_servers": {label: {"start_to_ready_s": round(s.started_in, 2)}
                                       for label, s in model_servers.items()}}
        print(f"[{name}] API ready in {out['api_start_to_ready_s']} s, RSS {out['api_rss_ready_mb']} MB", flush=True)
        for label, s in model_servers.items():
            print(f"[{name}] {label} ready in {s.started_in:.2f} s, RSS {s.rss() / MB:.0f} MB", flush=True)

        one = await session(api.base, clips[:args.turns], "solo")
        out["one_user"] = report(one)
        out["one_user"]["replies"] = [(t["said"], t.get("reply")) for t in one]
        print(f"[{name}] 1 user", json.dumps({k: out["one_user"][k] for k in
                                              ("answered", "errors", "client_voice_to_voice_ms")}), flush=True)

        many = await asyncio.gather(*(session(api.base, user_clips(clips, u, args.user_turns), f"u{u}",
                                              pause_s=args.pause)
                                      for u in range(args.users)))
        out["many_users"] = {"users": args.users, "turns_each": args.user_turns,
                             **report([t for turns in many for t in turns])}
        print(f"[{name}] {args.users} users", json.dumps({k: out["many_users"][k] for k in
                                                         ("turns", "answered", "errors", "client_voice_to_voice_ms")}),
              flush=True)

        if not args.no_quality:
            print(f"[{name}] answer quality", flush=True)
            out["answer_quality"] = await run_quality(api.base)
            print(quality_table(out["answer_quality"]), flush=True)

        out["api_rss_after_mb"] = round(api.rss() / MB)
        for label, s in model_servers.items():
            out["model_servers"][label]["rss_after_mb"] = round(s.rss() / MB)
        out["total_rss_after_mb"] = out["api_rss_after_mb"] + sum(
            m["rss_after_mb"] for m in out["model_servers"].values())
    finally:
        for server in reversed(started):
            server.stop()
    out["suspect_log_lines"] = {s.name + f":{s.port}": lines for s in started if (lines := suspect_lines(s))}
    out["config_seconds"] = round(time.monotonic() - t0, 1)
    for server, lines in out["suspect_log_lines"].items():
        print(f"[{name}] {server} log lines worth a look:\n  " + "\n  ".join(lines), flush=True)
    return out


def fmt(summary: dict) -> str:
    return f"{summary['p50']:.0f} / {summary['p95']:.0f}" if summary["n"] else "-"


def table(out: dict) -> str:
    names = [n for n in CONFIGS if n in out["configs"]]
    cfg = {n: out["configs"][n] for n in names}
    rows: list[tuple[str, ...]] = [("", *names)]
    rows.append(("voice-to-voice, 1 user, p50 / p95 ms",
                 *(fmt(c["one_user"]["client_voice_to_voice_ms"]) + f" ({c['one_user']['answered']}/"
                   f"{c['one_user']['turns']})" for c in cfg.values())))
    rows.append((f"voice-to-voice, {out['users']} users, p50 / p95 ms",
                 *(fmt(c["many_users"]["client_voice_to_voice_ms"]) for c in cfg.values())))
    rows.append((f"{out['users']} users: turns answered",
                 *(f"{c['many_users']['answered']}/{c['many_users']['turns']}" for c in cfg.values())))
    rows.append(("RSS of the user's API, at ready / after, MB",
                 *(f"{c['api_rss_ready_mb']} / {c['api_rss_after_mb']}" for c in cfg.values())))
    rows.append(("RSS of the model servers after, MB",
                 *(", ".join(f"{k.split(' ')[0]} {m['rss_after_mb']}" for k, m in c["model_servers"].items()) or "-"
                   for c in cfg.values())))
    rows.append(("RSS in all, MB", *(str(c["total_rss_after_mb"]) for c in cfg.values())))
    rows.append(("user's API: process start -> /health/ready, s", *(f"{c['api_start_to_ready_s']:.1f}"
                                                                  for c in cfg.values())))
    rows.append(("model servers: start -> ready, s",
                 *(", ".join(f"{k.split(' ')[0]} {m['start_to_ready_s']:.1f}" for k, m in c["model_servers"].items())
                   or "-" for c in cfg.values())))
    if all("answer_quality" in c for c in cfg.values()):
        rows.append(("answer quality, right", *(f"{c['answer_quality']['right']}/{c['answer_quality']['questions']}"
                                                for c in cfg.values())))
        rows.append(("answer quality, voice-to-voice p50 / p95 ms",
                     *(fmt(c["answer_quality"]["client_voice_to_voice_ms"]) for c in cfg.values())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)


async def run(args) -> dict:
    started = time.monotonic()
    # The same "user" voice for both configurations (voice_bench's: the embedded voice without sampling noise).
    texts = UTTERANCES
    clips = list(zip(texts, await make_clips(texts)))
    out = {"machine": machine(), "users": args.users, "turns": args.turns, "user_turns": args.user_turns,
           "pause_s": args.pause, "configs": {}}
    for name in args.configs:
        print(f"\n=== {name}", flush=True)
        out["configs"][name] = await measure(name, clips, args)
    out["bench_seconds"] = round(time.monotonic() - started, 1)
    print("\n" + table(out))
    print(f"bench took {out['bench_seconds']} s")
    if not args.no_save:
        print("saved", save("remote-models", out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=6, help="one user's questions, turn after turn")
    parser.add_argument("--users", type=int, default=4, help="users talking at once")
    parser.add_argument("--user-turns", type=int, default=4, help="questions each of those users asks")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of open mic after each reply (many users)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--no-quality", action="store_true", help="skip the answer-quality suite")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.turns = min(args.turns, len(UTTERANCES))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
