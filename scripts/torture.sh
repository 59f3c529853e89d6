#!/usr/bin/env bash
# The torture runs (tests/torture, docs/RELIABILITY.md) outside the test
# suite, at any size. Starts throwaway PostgreSQL and Redis servers, runs
# every backend and the store, and prints one JSON line per run (also
# appended to RESULTS, default torture-results.jsonl). Exits non-zero if any
# run found a violation.
#   scripts/torture.sh [--long] [BUILD_DIR]
#   default: 20,000 holds per backend, 10,000 commits (as in CI)
#   --long:  100,000 holds per backend, 50,000 commits
set -euo pipefail
cd "$(dirname "$0")/.."
holds=20000 commits=10000 items=1500
if [ "${1:-}" = "--long" ]; then
  holds=100000 commits=50000 items=10000
  shift
fi
build=${1:-build}
results=${RESULTS:-torture-results.jsonl}
torture="$build/tests/lockstore_torture"
[ -x "$torture" ] || { echo "no $torture: build first (cmake --build $build --target lockstore_torture)" >&2; exit 2; }

servers=$(mktemp -d "${TMPDIR:-/tmp}/lockstore-servers-XXXXXX")
work=$(mktemp -d "${TMPDIR:-/tmp}/lockstore-torture-XXXXXX")
trap 'scripts/test-servers.sh down "$servers"; rm -rf "$work"' EXIT
scripts/test-servers.sh up "$servers"
# shellcheck disable=SC1091
source "$servers/env"

status=0
for backend in memory sqlite postgres redis; do
  "$torture" locks --backend "$backend" --acquisitions "$holds" --dir "$work/$backend" | tee -a "$results" || status=1
done
"$torture" store --commits "$commits" --items "$items" --dir "$work/store" | tee -a "$results" || status=1
exit $status
