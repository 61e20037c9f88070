#!/usr/bin/env bash
# Every test: the backend's import contracts (import-linter), backend (pytest), web client (Vitest), browser
# end-to-end (Playwright + Chromium).
# Runs every suite even when one fails, then prints one closing line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
passed=0; failed=0; skipped=0; status=0

count() {  # count <log> <pattern of the runner's summary line>: adds its passed, failed/errors, skipped
  local line n word
  line=$(sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -E "$2" | tail -1)  # without colour codes
  for word in passed failed errors? skipped; do
    n=$(grep -Eo "[0-9]+ $word\b" <<<"$line" | grep -Eo '^[0-9]+' | head -1)
    case $word in
      passed) passed=$((passed + ${n:-0})) ;;
      skipped) skipped=$((skipped + ${n:-0})) ;;
      *) failed=$((failed + ${n:-0})) ;;
    esac
  done
}

suite() {  # suite <name> <dir> <command...>
  local name=$1 dir=$2; shift 2
  echo "=== $name: $*"
  (cd "$dir" && "$@") 2>&1 | tee "$logs/$name.log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "=== $name failed (exit $rc)"
  fi
  return 0
}

# The backend's layers and import cycles (import-linter; contracts in backend/pyproject.toml): each contract counts.
suite layers backend .venv/bin/lint-imports --no-cache
line=$(grep -E '^Contracts: [0-9]+ kept, [0-9]+ broken' "$logs/layers.log" | tail -1)
passed=$((passed + $(grep -Eo '[0-9]+ kept' <<<"$line" | grep -Eo '[0-9]+' || echo 0)))
failed=$((failed + $(grep -Eo '[0-9]+ broken' <<<"$line" | grep -Eo '[0-9]+' || echo 0)))
suite backend backend .venv/bin/python -m pytest -q -p no:cacheprovider -rs
count "$logs/backend.log" '^[0-9]+ (passed|failed|skipped|errors?)\b.* in [0-9.]+s'
suite frontend frontend npm test --silent
count "$logs/frontend.log" '^ *Tests +[0-9]+ '
suite e2e frontend npm run e2e --silent
count "$logs/e2e.log" '^[0-9]+ passed, [0-9]+ failed'

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # a suite that crashed counts as a failure
echo
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
