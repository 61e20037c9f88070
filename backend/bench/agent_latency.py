"""Voice-to-voice latency of the LiveKit agent, offline: ``cd backend && .venv/bin/python -m bench.agent_latency``.

An AgentSession from ``create_agent_session()`` hears spoken questions (the embedded voice without its sampling noise, the same every run: ``bench.common.user_voice``)
through a real-time open microphone (each question followed by silence) and answers into a
recording speaker. Per turn: end of the voiced speech -> first frame of the agent's audio. Also
the model start-up, once per process as in the worker (``app.agents.runtime``).

Writes ``bench-results/agent_latency-<whisper model>.json`` at the repository root. Timings depend on the machine
and on what else runs on it: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from app.agents.runtime import prewarm_services
from app.agents.turn_trace import TurnTrace
from app.agents.voice_agent import GemmaVoiceAgent, create_agent_session
from app.config.settings import REPO_DIR, Settings, get_settings
from app.services.container import Services
from bench.common import summary as stats
from bench.common import hop_table, user_voice, word_errors
from bench.offline_io import ClipMicrophone, RecordingSpeaker

RESULTS = REPO_DIR / "bench-results" / "agent_latency.json"
QUESTIONS = [
    "What is the capital of France?",
    "How are you today?",
    "Can you tell me a joke?",
    "What color is the sky?",
    "How many legs does a spider have?",
    "What is your name?",
    "Do you like music?",
    "What should I cook for dinner?",
    "Is it going to rain tomorrow?",
    "What is two plus two?",
    "Where do penguins live?",
    "Tell me something interesting.",
]
SILENCE_AFTER_REPLY_S = 1.0
UNANSWERED_AFTER_S = 30.0
STEPS = ["voice_to_voice_ms", "whisper_started_ms", "whisper_ms", "preflight_ms", "transcript_ms", "turn_committed_ms",
         "transcription_delay_ms", "end_of_turn_delay_ms", "llm_ttft_ms", "llm_first_sentence_ms", "tts_ttfb_ms"]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def run_turns(services: Services, turns: int, *, turn_detector: bool, language: str | None,
                    trace: Path) -> list[dict]:
    questions = (QUESTIONS * 2)[:turns + 1]
    spoken, rate = await user_voice(questions)
    clips = list(zip(questions, spoken))
    session = create_agent_session(services, turn_detector=turn_detector, language=language)
    session.input.audio = mic = ClipMicrophone(sample_rate=48000)
    session.output.audio = speaker = RecordingSpeaker(speed=4.0)  # how fast it plays doesn't matter here
    results = []
    # Wall-clock marks (perf_counter), to place each step against the clip's true end of speech.
    recognitions: list[tuple[float, float]] = []  # (finished at, Whisper run seconds), dropped guesses excluded
    finals: list[float] = []
    preflights: list[float] = []  # the early transcript that lets the reply start before the turn is confirmed
    thinking: list[float] = []
    session.stt.on("metrics_collected", lambda m: recognitions.append((time.perf_counter(), m.duration)))
    session.on("user_input_transcribed",
               lambda ev: (finals if ev.is_final else preflights).append(time.perf_counter()))
    session.on("agent_state_changed", lambda ev: ev.new_state == "thinking" and thinking.append(time.perf_counter()))
    turn_trace = TurnTrace(session, trace)  # the hops, as bench.room_latency has them from the worker
    voice_agent = GemmaVoiceAgent()
    voice_agent.on_moment = turn_trace.mark
    async with session:
        await session.start(voice_agent)
        turn_trace.tap_input()
        await asyncio.sleep(1.0)
        for index, (question, pcm) in enumerate(clips):
            before = len(speaker.segments)
            items_before = len(session.history.items)
            clip = mic.play(pcm, rate)
            deadline = time.monotonic() + UNANSWERED_AFTER_S
            while len(speaker.segments) == before or speaker.segments[before].interrupted is None:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(SILENCE_AFTER_REPLY_S)  # the reply is in the history by then
            if index == 0:  # warm-up turn: first use of every code path
                continue
            if len(speaker.segments) == before:  # e.g. Whisper took the question for a noise
                heard = [i.text_content for i in session.history.items[items_before:]
                         if i.type == "message" and i.role == "user"]
                results.append({"question": question, "heard": " ".join(heard), "reply": None,
                                **{key: None for key in STEPS}})
                print(f"  turn {index:2d}: no reply in {UNANSWERED_AFTER_S:.0f} s  {question}")
                continue
            reply = speaker.segments[before]
            user, agent = [item for item in session.history.items if item.type == "message"][-2:]
            end = clip.speech_ended_at
            final_at = next((t for t in finals if t > end), None)
            run = next(((t, d) for t, d in reversed(recognitions) if final_at and end < t <= final_at), None)
            think_at = next((t for t in thinking if t > end), None)
            preflight_at = next((t for t in preflights if t > end and (final_at is None or t <= final_at)), None)
            results.append({
                "question": question,
                "heard": user.text_content,
                "reply": agent.text_content,
                "_sent": clip.speech_ended_at, "_received": reply.first_frame_at,
                "voice_to_voice_ms": ms(reply.first_frame_at - clip.speech_ended_at),
                # From the clip's true end of voiced speech:
                "whisper_started_ms": ms(run[0] - run[1] - end) if run else None,
                "whisper_ms": ms(run[1]) if run else None,
                "preflight_ms": ms(preflight_at - end) if preflight_at else None,
                "transcript_ms": ms(final_at - end) if final_at else None,
                "turn_committed_ms": ms(think_at - end) if think_at else None,
                # The framework's own, from the VAD's end of speech (which lags the true end):
                "transcription_delay_ms": ms(user.metrics.get("transcription_delay")),
                "end_of_turn_delay_ms": ms(user.metrics.get("end_of_turn_delay")),
                "llm_ttft_ms": ms(agent.metrics.get("llm_node_ttft")),
                "llm_first_sentence_ms": ms(agent.metrics.get("llm_node_ttfs")),
                "tts_ttfb_ms": ms(agent.metrics.get("tts_node_ttfb")),
            })
            print(f"  turn {index:2d}: {results[-1]['voice_to_voice_ms']:7.1f} ms  {question}")
    return results


def summarize(results: list[dict], key: str) -> dict[str, float | None]:
    values = [r[key] for r in results if r[key] is not None]
    return stats(values) if values else {"p50": None, "p95": None}


def word_error_rate(results: list[dict]) -> float | None:
    errors, words = map(sum, zip(*(word_errors(r["question"], r["heard"]) for r in results))) if results else (0, 0)
    return round(errors / words, 3) if words else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12, help="measured turns (after one warm-up turn)")
    parser.add_argument("--turn-detector", action="store_true", help="use the local end-of-turn model too")
    parser.add_argument("--language", help="the user's language (e.g. en); default: Whisper detects it")
    parser.add_argument("--whisper-model", help="WHISPER_MODEL for this run (e.g. embedded-tiny.en)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    settings: Settings = get_settings()
    if args.whisper_model:
        settings = settings.model_copy(update={"whisper_model": args.whisper_model})
    output = args.output or RESULTS.with_name(f"agent_latency-{settings.whisper_model}.json")
    load_before = os.getloadavg()
    started = time.perf_counter()
    services = prewarm_services(settings)  # on the services' own loop, as in the worker
    prewarm_s = time.perf_counter() - started
    if not services.ready:
        raise SystemExit(f"models failed to load: {services.components}")

    print(f"prewarm (model start-up): {prewarm_s:.2f} s; measuring {args.turns} turns...")
    trace = Path(tempfile.mkdtemp(prefix="gemmavoice-trace-")) / "turns.jsonl"
    results = asyncio.run(run_turns(services, args.turns, turn_detector=args.turn_detector,
                                    language=args.language, trace=trace))
    hops = hop_table(results, trace)
    load_after = os.getloadavg()

    keys = STEPS
    summary = {key: summarize(results, key) for key in keys}
    report = {
        "what": "end of user speech -> first agent audio frame, LiveKit AgentSession, offline harness",
        "config": {"turn_detection": "turn-detector-v1-mini" if args.turn_detector else "vad",
                   "language": args.language or "detected",
                   "vad_min_silence_ms": settings.vad_min_silence_ms,
                   "llm": services.llm.model_name, "stt": services.stt.model_name, "tts": services.tts.engine},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "prewarm_s": round(prewarm_s, 2),
        "turns": len(results),
        "unanswered": sum(r["reply"] is None for r in results),
        "word_error_rate": word_error_rate(results),
        "summary": summary,
        **hops,
        "per_turn": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))

    print(f"\n{'metric (ms)':<24}{'p50':>9}{'p95':>9}")
    for key in keys:
        p50, p95 = summary[key]["p50"], summary[key]["p95"]
        print(f"{key.removesuffix('_ms'):<24}{p50 if p50 is not None else '-':>9}{p95 if p95 is not None else '-':>9}")
    print(f"{'prewarm (s)':<24}{prewarm_s:>9.2f}")
    print(f"hops of {hops['turns_traced']} traced turns (p50 / p95 ms):")
    for name, values in hops["hops_ms"].items():
        print(f"  {name:34s} {values['p50']:7.1f} {values['p95']:7.1f}")
    print(f"word error rate: {report['word_error_rate']}; unanswered turns: {report['unanswered']}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
