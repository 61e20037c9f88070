"""`make bench`: every benchmark, one after another (they must not share the CPU), results in bench-results/.

Each suite runs in its own process: the agent runtime keeps one set of models per process, and a
fresh process per suite keeps one suite's memory and threads from colouring the next one's timings.
"""

from __future__ import annotations

import subprocess
import sys

from app.config.settings import REPO_DIR

# (module, arguments): the voice loops run with each embedded Whisper, the default base and the faster tiny.en.
SUITES = [
    ("bench.api_bench", []),
    ("bench.llm_formats", []),
    ("bench.whisper_windows", []),
    ("bench.noise_words", []),
    ("bench.voice_bench", []),
    ("bench.voice_bench", ["--whisper-model", "embedded-tiny.en"]),
    ("bench.realtime_latency", []),
    ("bench.agent_latency", []),
    ("bench.agent_latency", ["--whisper-model", "embedded-tiny.en"]),
    ("bench.worker_memory", []),
    ("bench.worker_memory", ["--remote"]),
    ("bench.room_latency", []),  # after agent_latency, whose result it compares with
    ("bench.answer_quality", []),  # embedded models, 12 spoken questions
    ("bench.remote_models", []),  # model servers of their own (issue 29) beside embedded, answer quality of each
    ("bench.cluster_recovery", []),  # a LiveKit cluster through SIGKILL, SIGTERM and a node restart (issue 30)
]


def main() -> int:
    failed = []
    for name, args in SUITES:
        print(f"\n=== {name} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, "-m", name, *args], cwd=REPO_DIR / "backend").returncode != 0:
            failed.append(f"{name} {' '.join(args)}")
    print(f"\n{len(SUITES) - len(failed)} suites passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
