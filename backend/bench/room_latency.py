"""The LiveKit room path, measured through a real SFU: ``cd backend && .venv/bin/python -m bench.room_latency``.

A livekit-server on loopback (``make livekit-server``), the agent worker as users run it (``start``,
the project's defaults), and users who are livekit SDK participants (``bench.livekit_room.RoomUser``)
speaking the offline harness's questions (``bench.agent_latency``, the same noise-free clips):

- voice-to-voice: the user's last voiced frame sent -> the first frame of the agent's voice received, and
  its hops (the worker's ``VOICE_TURN_TRACE``, ``app.agents.turn_trace``, on the same monotonic clock): sent ->
  received by the agent -> the VAD's end of speech -> final transcript -> the LLM's first token -> its first
  piece at the TTS -> first TTS audio -> handed to the room's track -> received by the user;
- where the worker's time goes during those turns: a py-spy profile (``--profile``; its sampling takes CPU from
  the turns, so the latency figures of record come from runs without it);
- join: the user connected -> the agent in the room;
- barge-in: the user's first voiced frame over a reply -> the agent's audio stops arriving;
- memory: the worker's RSS and USS with the models loaded and with each room open.

Compared with ``bench.agent_latency``'s last result (``make bench`` runs it first), which has no
room: the difference is what the SFU path costs. Writes ``bench-results/room_latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from app.agents.local_livekit import INSTALL_HINT, LocalLiveKit, find_binary
from app.config.settings import Settings, get_settings
from app.services.livekit_tokens import user_token
from bench.agent_latency import QUESTIONS, SILENCE_AFTER_REPLY_S
from bench.common import RESULTS, free_port, hop_table, summary, user_voice
from bench.livekit_room import RoomUser, WorkerProcess, worker_env

REPLY_TIMEOUT_S = 30.0
# The user's frames: 20 ms, as WebRTC packs its Opus packets. With 10 ms frames the user process (on the agent's
# own 2 cores here, on another machine in real life) woke 200 times a second and made the agent's LLM and TTS
# steps 2-3 times as slow as in the offline harness (docs/benchmarks.md, issue 32).
USER_FRAME_MS = 20
PROFILE_TOP = 15
LONG_REPLY = "Tell me a long story about a brave knight."
INTERRUPTION = "Stop. What colour is the sky?"
# Quiet this long means the reply stopped: longer than the pauses between its sentences (up to ~0.3 s),
# shorter than the wait for the answer to the interruption (its ~1.5 s of speech, then the turn's end).
STOPPED_S = 0.8


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def memory_mb(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)}


async def joined_user(settings: Settings) -> tuple[RoomUser, float]:
    user = RoomUser(settings.livekit_url, user_token(settings).token, frame_ms=USER_FRAME_MS)
    await user.connect()
    return user, await user.wait_for_agent(10.0)


async def turns(settings: Settings, count: int) -> tuple[list[dict], float]:
    """One room, ``count`` measured questions after a warm-up one; and the join time of that room."""
    questions = (QUESTIONS * 3)[:count + 1]
    clips, rate = await user_voice(questions)
    user, join_s = await joined_user(settings)
    results = []
    try:
        await asyncio.sleep(1.0)
        for index, (question, pcm) in enumerate(zip(questions, clips)):
            said = await user.say(pcm, rate)
            try:
                first = await user.agent_voice_after(said.end, REPLY_TIMEOUT_S)
                await user.agent_quiet_after(first, quiet_s=SILENCE_AFTER_REPLY_S, timeout=60)
            except TimeoutError:
                print(f"  turn {index:2d}: no reply in {REPLY_TIMEOUT_S:.0f} s  {question}")
                results.append({"question": question, "voice_to_voice_ms": None})
                continue
            if index == 0:  # warm-up turn
                continue
            replies = user.texts(user.agent_identity)
            results.append({"question": question, "voice_to_voice_ms": ms(first - said.end),
                            "reply": replies[-1] if replies else None, "_sent": said.end, "_received": first})
            print(f"  turn {index:2d}: {results[-1]['voice_to_voice_ms']:7.1f} ms  {question}")
    finally:
        await user.close()
    return results, join_s


async def barge_ins(settings: Settings, count: int) -> list[float]:
    """Seconds from the user's first voiced frame over a long reply to the agent's audio stopping. The user
    speaks 2 s into the reply (its first clause may be followed by a gap while the next one is made), and
    a try counts only if the agent was talking then."""
    (story, stop), rate = await user_voice([LONG_REPLY, INTERRUPTION])
    user, _ = await joined_user(settings)
    pauses = []
    try:
        for index in range(count * 2):
            if len(pauses) == count:
                break
            said = await user.say(story, rate)
            first = await user.agent_voice_after(said.end, REPLY_TIMEOUT_S)
            await asyncio.sleep(2.0)  # the first try too: a session's first seconds can be talked over
            over = await user.say(stop, rate)
            stopped = await user.agent_quiet_after(over.start, quiet_s=STOPPED_S, timeout=10)
            talking = user.voiced_seconds(over.start - 0.3, over.start) >= 0.15
            if talking:
                pauses.append(stopped - over.start)
            print(f"  barge-in: the agent's audio stopped {ms(stopped - over.start):.0f} ms after the user began "
                  f"({ms(over.start - first):.0f} ms into its reply)" + ("" if talking else ": it was between "
                                                                         "clauses then, not counted"))
            answer = await user.agent_voice_after(over.end, REPLY_TIMEOUT_S)
            await user.agent_quiet_after(answer, quiet_s=SILENCE_AFTER_REPLY_S, timeout=60)
    finally:
        await user.close()
    return pauses


async def rooms_memory(settings: Settings, worker: WorkerProcess, rooms: int) -> tuple[list[dict], list[float]]:
    """The worker's memory with 0..``rooms`` rooms open (each has heard a question), and each room's join."""
    (question,), rate = await user_voice([QUESTIONS[4]])
    readings = [{"rooms": 0, **memory_mb(worker.proc.pid)}]
    users, joins = [], []
    try:
        for count in range(1, rooms + 1):
            user, join_s = await joined_user(settings)
            users.append(user)
            joins.append(join_s)
            said = await user.say(question, rate)
            first = await user.agent_voice_after(said.end, REPLY_TIMEOUT_S)
            await user.agent_quiet_after(first, quiet_s=SILENCE_AFTER_REPLY_S, timeout=60)
            readings.append({"rooms": count, **memory_mb(worker.proc.pid)})
    finally:
        for user in users:
            await user.close()
    return readings, joins


async def wait_worker_free(worker: WorkerProcess, after: int) -> None:
    """Until the server knows the worker has room again (it hears so every 2.5 s)."""
    if any("marking as unavailable" in m for m in worker.messages[after:]):
        await asyncio.to_thread(worker.wait_for, "marking as available", 30, after=after)
    await asyncio.sleep(3.0)  # the jobs just left end and their next status goes out


class Profiler:
    """py-spy sampling the worker process (its job threads included) until ``stop()``."""

    def __init__(self, pid: int, output: Path) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.output = output
        self.proc = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                                      "--nonblocking", "--output", str(output)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = "timed out"
        if not self.output.exists():
            print(f"py-spy wrote no profile: {err.strip()[-300:]}")


def profile_top(path: Path, top: int = PROFILE_TOP) -> dict:
    """The functions the worker spent its samples in: ``self`` (the sampled frame itself) and ``total`` (anywhere
    on the stack), as shares of all samples (py-spy's collapsed stacks: "frame;frame;... count")."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            anywhere[frame] += int(count)

    def shares(counter: Counter[str]) -> list[dict]:
        return [{"function": name, "share": round(n / samples, 3)} for name, n in counter.most_common(top)]
    return {"file": str(path), "samples": samples, "self": shares(own) if samples else [],
            "total": shares(anywhere) if samples else []}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far, its threads and children included."""
    used = {}
    for name, pid in pids.items():
        proc = psutil.Process(pid)
        times = [proc.cpu_times(), *(child.cpu_times() for child in proc.children(recursive=True))]
        used[name] = sum(t.user + t.system for t in times)
    return used


def offline_reference(whisper_model: str) -> dict | None:
    path = RESULTS / f"agent_latency-{whisper_model}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return {"file": str(path.relative_to(RESULTS.parent)), **data["summary"]["voice_to_voice_ms"]}


async def run(args) -> dict:
    settings = get_settings()
    binary = find_binary(settings)
    if binary is None:
        raise SystemExit(f"no livekit-server binary. {INSTALL_HINT}")
    server = await LocalLiveKit.start(binary)
    room_settings = Settings(app_env="test", _env_file=None, livekit_url=server.url, livekit_api_key=server.api_key,
                             livekit_api_secret=server.api_secret)
    trace = Path(tempfile.mkdtemp(prefix="gemmavoice-trace-")) / "turns.jsonl"
    worker = WorkerProcess(worker_env(LIVEKIT_URL=server.url, LIVEKIT_API_KEY=server.api_key,
                                      LIVEKIT_API_SECRET=server.api_secret, LIVEKIT_WORKER_PORT=str(free_port()),
                                      VOICE_TURN_TRACE=str(trace)))
    profile = RESULTS / "room_latency-worker.pyspy.txt"
    try:
        started = time.perf_counter()
        await asyncio.to_thread(worker.wait_for, "marking as available", 180)
        available_s = time.perf_counter() - started
        print(f"worker available to LiveKit {available_s:.1f} s after it started; {args.turns} turns...")
        load_before = os.getloadavg()
        RESULTS.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(worker.proc.pid, profile) if args.profile else None
        # Who used the 2 cores during the turns: on one machine the user and the SFU take from the agent.
        pids = {"worker": worker.proc.pid, "livekit_server": server.process.pid, "user (this benchmark)": os.getpid()}
        cpu_before, turns_started = cpu_seconds(pids), time.perf_counter()
        try:
            results, first_join = await turns(room_settings, args.turns)
        finally:
            if profiler is not None:
                profiler.stop()
        cpu_after, turns_s = cpu_seconds(pids), time.perf_counter() - turns_started
        cpu_share = {name: round((cpu_after[name] - cpu_before[name]) / turns_s, 3) for name in pids}
        await wait_worker_free(worker, 0)
        print(f"{args.barge_ins} barge-ins...")
        pauses = await barge_ins(room_settings, args.barge_ins)
        await wait_worker_free(worker, 0)
        print(f"memory with up to {args.rooms} rooms...")
        mark = len(worker.messages)
        memory, joins = await rooms_memory(room_settings, worker, args.rooms)
        await wait_worker_free(worker, mark)
        load_after = os.getloadavg()
    finally:
        worker.stop()
        worker.kill()
        await server.stop()

    v2v = [r["voice_to_voice_ms"] for r in results if r["voice_to_voice_ms"] is not None]
    per_room = [round(b["uss_mb"] - a["uss_mb"], 1) for a, b in zip(memory, memory[1:])]
    return {
        "what": "voice-to-voice through a real livekit-server: user's last voiced frame sent -> agent's first voiced "
                "frame received (livekit SDK user, worker in start mode)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "worker_available_s": round(available_s, 2),
        "turns": len(results),
        "unanswered": len(results) - len(v2v),
        "voice_to_voice_ms": summary(v2v),
        **hop_table(results, trace),
        "worker_profile": profile_top(profile) if args.profile else None,
        "cpu_cores_used_during_turns": cpu_share,
        "offline_harness_ms": offline_reference(settings.whisper_model),
        "join_ms": summary([ms(s) for s in [first_join, *joins]]),
        "barge_in_pause_ms": summary([ms(s) for s in pauses]),
        "worker_memory": memory,
        "uss_per_room_mb": per_room,
        "per_turn": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12, help="measured turns (after one warm-up turn)")
    parser.add_argument("--barge-ins", type=int, default=5)
    parser.add_argument("--rooms", type=int, default=2, help="rooms open at once for the memory reading")
    parser.add_argument("--output", type=Path, default=RESULTS / "room_latency.json")
    parser.add_argument("--profile", action="store_true",
                        help="a py-spy profile of the worker during the turns (its sampling slows the turns: time "
                             "them without it)")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))

    v2v, offline = report["voice_to_voice_ms"], report["offline_harness_ms"]
    print(f"\nvoice-to-voice through the SFU: p50 {v2v['p50']} ms, p95 {v2v['p95']} ms ({v2v['n']} turns, "
          f"{report['unanswered']} unanswered)")
    if offline:
        print(f"offline harness ({offline['file']}): p50 {offline['p50']} ms, p95 {offline['p95']} ms; "
              f"the room adds {v2v['p50'] - offline['p50']:.0f} ms at p50")
    else:
        print("no offline harness result to compare with: run `python -m bench.agent_latency` first")
    print(f"hops of {report['turns_traced']} traced turns (p50 / p95 ms):")
    for name, values in report["hops_ms"].items():
        print(f"  {name:34s} {values['p50']:7.1f} {values['p95']:7.1f}")
    if report["worker_profile"]:
        print(f"the worker's samples ({report['worker_profile']['samples']}), self time:")
        for item in report["worker_profile"]["self"][:10]:
            print(f"  {item['share'] * 100:5.1f}%  {item['function'][:110]}")
    print("cores used during the turns: " + ", ".join(f"{name} {share:.2f}"
                                                      for name, share in report["cpu_cores_used_during_turns"].items()))
    print(f"join: p50 {report['join_ms']['p50']} ms, max {report['join_ms']['max']} ms")
    print(f"barge-in, the agent's audio stops: p50 {report['barge_in_pause_ms']['p50']} ms, "
          f"p95 {report['barge_in_pause_ms']['p95']} ms")
    print(f"worker memory: {report['worker_memory']}; USS per room {report['uss_per_room_mb']} MB")
    print(f"load average before/after: {report['machine']['load_average_before'][0]} / "
          f"{report['machine']['load_average_after'][0]} ({os.cpu_count()} CPUs)")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
