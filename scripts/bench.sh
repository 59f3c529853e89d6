#!/usr/bin/env bash
# Runs every benchmark once against throwaway servers and prints JSON lines.
# Usage: scripts/bench.sh [build-dir]   (default: ./build-bench, release build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
scripts/install-deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF > /dev/null
cmake --build "$build" -j2 --target lock_bench store_bench server_bench
servers=$(mktemp -d "${TMPDIR:-/tmp}/lockstore-bench-servers-XXXXXX")
trap 'scripts/test-servers.sh down "$servers"' EXIT
scripts/test-servers.sh up "$servers"
# shellcheck disable=SC1091
source "$servers/env"
"$build/benchmarks/lock_bench"
"$build/benchmarks/server_bench"
