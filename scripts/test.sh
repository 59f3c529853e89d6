#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts a throwaway
# PostgreSQL and Redis server (scripts/test-servers.sh; stopped on exit,
# whatever happens), then builds and runs every test three times: a normal
# build, AddressSanitizer + UndefinedBehaviorSanitizer, and ThreadSanitizer.
# All three suites always run; the script then prints a summary per suite
# and fails if any test, sanitizer report or build failed, or a server could not
# start. Usage: scripts/test.sh [build-root]   (default: ./build-ci)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-build-ci}

scripts/install-deps.sh

# Every suite runs, whatever an earlier one did: a release failure must not
# hide what ASan and TSan would say. A suite's failures are listed at the end
# (and its failing tests' output is in the log above, from
# --output-on-failure); the script fails if any suite failed.
failed_suites=()
summary=()

run_suite() {  # name, extra cmake args...
  local name=$1; shift
  local dir="$root/$name" started=$SECONDS
  echo "=== $name: configure and build"
  if ! cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" > "$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"
    failed_suites+=("$name")
    summary+=("$name: configure failed")
    return 0
  fi
  if ! cmake --build "$dir" -j2; then
    failed_suites+=("$name")
    summary+=("$name: build failed after $((SECONDS - started)) s")
    return 0
  fi
  local built=$SECONDS
  echo "=== $name: test"
  if ctest --test-dir "$dir" -j2 --output-on-failure --timeout 300; then
    summary+=("$name: passed (build $((built - started)) s, tests $((SECONDS - built)) s)")
  else
    failed_suites+=("$name")
    local failed_list="$dir/Testing/Temporary/LastTestsFailed.log"
    summary+=("$name: FAILED (build $((built - started)) s, tests $((SECONDS - built)) s); failing tests:")
    if [ -f "$failed_list" ]; then
      while IFS= read -r line; do summary+=("    $line"); done < "$failed_list"
    fi
  fi
}

mkdir -p "$root"
servers=$(mktemp -d "${TMPDIR:-/tmp}/lockstore-servers-XXXXXX")
trap 'scripts/test-servers.sh down "$servers"' EXIT
scripts/test-servers.sh up "$servers"
# shellcheck disable=SC1091
source "$servers/env"
echo "=== servers: PostgreSQL $LOCKSTORE_TEST_POSTGRES; Redis $LOCKSTORE_TEST_REDIS"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"

# -g1 (line tables: enough for sanitizer and crash backtraces) and, under the
# sanitizers, -O1 (what their documentation suggests) halve the compile
# time of an Asio translation unit against RelWithDebInfo's -O2 -g.
run_suite release "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
# The packaging tests (install and consumers, single headers, header
# warnings under g++ and clang++) run once, in the normal build.
# The torture runs (tests/torture, docs/RELIABILITY.md) do their full size
# (20,000 holds per backend) in the normal build and a tenth of it under the
# sanitizers, which slow every process several times over.
# The fuzz targets (tests/fuzz) run once, in the normal build, with their own
# ASan + UBSan. The examples run in the normal build only.
sanitized=("-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" -DLOCKSTORE_PACKAGING_TESTS=OFF -DLOCKSTORE_FUZZ_TESTS=OFF -DLOCKSTORE_EXAMPLES=OFF
           -DLOCKSTORE_TORTURE_ACQUISITIONS=2000 -DLOCKSTORE_TORTURE_FENCED_HOLDS=2000 -DLOCKSTORE_TORTURE_COMMITS=1000)
run_suite asan -DLOCKSTORE_SANITIZE=address "${sanitized[@]}"
run_suite tsan -DLOCKSTORE_SANITIZE=thread "${sanitized[@]}"

echo "=== summary ($SECONDS s in all)"
printf '%s\n' "${summary[@]}"
if [ ${#failed_suites[@]} -gt 0 ]; then
  echo "=== failed suites: ${failed_suites[*]}"
  exit 1
fi
echo "=== all suites passed"
