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
import threading
import time
from pathlib import Path

import psutil

from bench.answer_quality import run_quality, table as quality_table
from bench.common import UTTERANCES, machine, save
from bench.model_servers import GemmaVoiceAPIProcess, LlamaCppServer, ServerProcess
from bench.voice_bench import make_clips, report, session

MB = 1024 * 1024
# Log lines worth a look after a run (uvicorn's access lines are INFO and not counted).
SUSPECT = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception|error", re.IGNORECASE)


class OtherCPU:
    """CPU seconds that processes outside this bench used while a configuration ran, sampled every second
    in a thread (another job on the 2 cores slows llama.cpp's spinning threads badly). Bounded: stops on
    ``stop()`` or after ``limit_s``."""

    def __init__(self, limit_s: float = 1800.0):
        self.limit_s = limit_s
        self.seen: dict[int, tuple[str, float, float]] = {}  # pid -> (name, cpu s when first seen, cpu s last)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "OtherCPU":
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _ours(self) -> set[int]:
        me = psutil.Process()
        return {me.pid, *(c.pid for c in me.children(recursive=True))}

    def _sample(self, first: bool = False) -> None:
        ours = self._ours()
        for proc in psutil.process_iter(["name", "cpu_times"]):
            if proc.pid in ours or proc.info["cpu_times"] is None:
                continue
            cpu = proc.info["cpu_times"].user + proc.info["cpu_times"].system
            name, start, _ = self.seen.get(proc.pid, (proc.info["name"], cpu if first else 0.0, 0.0))
            self.seen[proc.pid] = (name, start, cpu)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stop.wait(1.0) and time.monotonic() < deadline:
            self._sample()

    def report(self) -> dict:
        used: dict[str, float] = {}
        for name, start, last in self.seen.values():
            used[name] = used.get(name, 0.0) + max(0.0, last - start)
        top = sorted(((n, round(u, 1)) for n, u in used.items() if u >= 0.5), key=lambda x: -x[1])[:8]
        return {"cpu_s": round(sum(used.values()), 1), "top": top}


def suspect_lines(server: ServerProcess, limit: int = 20) -> list[str]:
    lines = [line for line in server.log_text().splitlines()
             if SUSPECT.search(line) and '" 200' not in line and '" 101' not in line]
    return lines[:limit]


def start_embedded(started: list[ServerProcess], llm_threads: int = 2
                   ) -> tuple[GemmaVoiceAPIProcess, dict[str, ServerProcess]]:
    api = GemmaVoiceAPIProcess()
    started.append(api)
    api.start()
    return api, {}


def start_remote(started: list[ServerProcess], llm_threads: int = 2
                 ) -> tuple[GemmaVoiceAPIProcess, dict[str, ServerProcess]]:
    llama = LlamaCppServer(n_threads=llm_threads)
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
    other = OtherCPU().__enter__()
    try:
        api, model_servers = CONFIGS[name](started, args.llm_threads)
        out: dict = {"machine": machine(),
                     "api_start_to_ready_s": round(api.started_in, 2),
                     "api_rss_ready_mb": round(api.rss() / MB),
                     "model_servers": {label: {"start_to_ready_s": round(s.started_in, 2),
                                               "rss_ready_mb": round(s.rss() / MB)}
                                       for label, s in model_servers.items()}}
        print(f"[{name}] API ready in {out['api_start_to_ready_s']} s, RSS {out['api_rss_ready_mb']} MB", flush=True)
        for label, m in out["model_servers"].items():
            print(f"[{name}] {label} ready in {m['start_to_ready_s']:.2f} s, RSS {m['rss_ready_mb']} MB", flush=True)

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
        other.__exit__()
    out["other_processes_cpu"] = other.report()
    print(f"[{name}] CPU used by processes outside this bench meanwhile: {out['other_processes_cpu']}", flush=True)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        for server in started:
            (args.logs / f"{name}-{server.name}-{server.port}.log").write_text(server.log_text())
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
    rows.append(("CPU s used by other processes meanwhile", *(str(c["other_processes_cpu"]["cpu_s"])
                                                             for c in cfg.values())))
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
    parser.add_argument("--llm-threads", type=int, default=2, help="llama.cpp server threads (remote)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--logs", type=Path, help="keep each server's log in this folder")
    args = parser.parse_args(argv)
    args.turns = min(args.turns, len(UTTERANCES))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
