#!/usr/bin/env bash
# Runs the test suites of finished builds while other work loads the machine:
# the check that no test depends on an idle machine (timing margins, sleeps).
# Two busy loops (one per core of the 2-core CI machines) run beside ctest's
# own two jobs, for a load average of 4 or more; each build's tests run
# `rounds` times in a row. Prints one line per build and round, and fails if
# any round failed.
# Usage: scripts/loaded-suite.sh ROUNDS BUILD_DIR...   (servers: scripts/test-servers.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
[ -n "${LOCKSTORE_TEST_POSTGRES:-}" ] || { echo "start the servers first: scripts/test-servers.sh up DIR; source DIR/env"; exit 2; }
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"

busy=()
for _ in 1 2; do
  ( while :; do :; done ) &
  busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT

failed=0
for round in $(seq 1 "$rounds"); do
  for build in "$@"; do
    started=$SECONDS
    if ctest --test-dir "$build" -j2 --output-on-failure --timeout 300 > "$build/loaded-round-$round.log" 2>&1; then
      result=passed
    else
      result="FAILED: $(tr '\n' ' ' < "$build/Testing/Temporary/LastTestsFailed.log")"
      failed=1
    fi
    echo "round $round, $(basename "$build"): $result ($((SECONDS - started)) s, load $(cut -d' ' -f1-3 /proc/loadavg))"
  done
done
exit $failed
