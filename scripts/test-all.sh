#!/usr/bin/env bash
# Every test: backend (pytest), web client (Vitest), browser end-to-end (Playwright + Chromium).
# Runs all three even when one fails, then prints one closing line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
passed=0; failed=0; status=0

count() {  # count <log> <pattern for passed> <pattern for failed>
  local p f
  p=$(grep -Eo "$2" "$1" | tail -1 | grep -Eo '[0-9]+' | head -1); f=$(grep -Eo "$3" "$1" | tail -1 | grep -Eo '[0-9]+' | head -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
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

suite backend backend .venv/bin/python -m pytest -q -p no:cacheprovider
count "$logs/backend.log" '[0-9]+ passed' '[0-9]+ (failed|error)'
suite frontend frontend npm test --silent
count "$logs/frontend.log" 'Tests +[0-9]+ passed' 'Tests +[0-9]+ failed|[0-9]+ failed'
suite e2e frontend npm run e2e --silent
count "$logs/e2e.log" '^[0-9]+ passed' '[0-9]+ failed$'

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # a suite that crashed counts as a failure
echo
echo "$passed passed, $failed failed"
exit $status
