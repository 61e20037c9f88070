"""`make bench`: every benchmark, one after another (they must not share the CPU), results in bench-results/."""

from __future__ import annotations

import importlib
import sys

SUITES = ["bench.api_bench", "bench.voice_bench", "bench.agent_latency"]


def main() -> int:
    failed = []
    for name in SUITES:
        print(f"\n=== {name}", flush=True)
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            print(f"skipped: {exc}")
            continue
        try:
            module.main()
        except Exception as exc:  # noqa: BLE001 - report and go on to the next suite
            print(f"{name} failed: {exc!r}")
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
