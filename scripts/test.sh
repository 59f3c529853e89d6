#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts a throwaway
# PostgreSQL and Redis server (scripts/test-servers.sh; stopped on exit,
# whatever happens), then builds and runs every test three times: a normal
# build, AddressSanitizer + UndefinedBehaviorSanitizer, and ThreadSanitizer.
# Fails on any failing test or sanitizer report, and when a server cannot
# start. Usage: scripts/test.sh [build-root]   (default: ./build-ci)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-build-ci}

scripts/install-deps.sh

run_suite() {  # name, extra cmake args...
  local name=$1; shift
  local dir="$root/$name"
  echo "=== $name: configure and build"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" > "$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j2
  echo "=== $name: test"
  ctest --test-dir "$dir" -j2 --output-on-failure --timeout 300
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
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

run_suite release
# The packaging tests (install and consumers, single headers, header
# warnings under g++ and clang++) run once, in the normal build.
# The torture runs (tests/torture, docs/RELIABILITY.md) do their full size
# (20,000 holds per backend) in the normal build and a tenth of it under the
# sanitizers, which slow every process several times over.
# The fuzz targets (tests/fuzz) run once, in the normal build, with their own
# ASan + UBSan.
sanitized=(-DLOCKSTORE_PACKAGING_TESTS=OFF -DLOCKSTORE_FUZZ_TESTS=OFF
           -DLOCKSTORE_TORTURE_ACQUISITIONS=2000 -DLOCKSTORE_TORTURE_COMMITS=1000)
run_suite asan -DLOCKSTORE_SANITIZE=address "${sanitized[@]}"
run_suite tsan -DLOCKSTORE_SANITIZE=thread "${sanitized[@]}"
echo "=== all suites passed"
