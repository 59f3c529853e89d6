#!/usr/bin/env bash
# The one benchmark command. Builds in Release, starts throwaway PostgreSQL
# and Redis servers, installs the pinned npm peers (benchmarks/peers), runs
# lockstore's benchmarks and the peers on the same servers in one run, and
# writes OUT/results.jsonl, OUT/machine.md and the charts (SVG and PNG).
# Usage: scripts/bench.sh [--smoke] [OUT]   (default OUT: benchmarks/results/latest)
# --smoke runs tiny counts (checks that everything still runs; the figures
# mean nothing). See benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=()
if [ "${1:-}" = "--smoke" ]; then smoke=(--smoke); shift; fi
out=${1:-benchmarks/results/latest}
build=${LOCKSTORE_BENCH_BUILD:-build-bench}

scripts/install-deps.sh
# Only the benchmarks need these: charts, and Node.js for the npm peers.
bench_packages=()
command -v gnuplot > /dev/null || bench_packages+=(gnuplot-nox)
command -v node > /dev/null || bench_packages+=(nodejs)
command -v npm > /dev/null || bench_packages+=(npm)
if [ ${#bench_packages[@]} -gt 0 ]; then
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends "${bench_packages[@]}"
fi
(cd benchmarks/peers && npm ci --no-audit --no-fund --loglevel=error)

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF > /dev/null
cmake --build "$build" -j2 --target lock_bench server_bench contention_bench

servers=$(mktemp -d "${TMPDIR:-/tmp}/lockstore-bench-servers-XXXXXX")
trap 'scripts/test-servers.sh down "$servers"' EXIT
scripts/test-servers.sh up "$servers"
# shellcheck disable=SC1091
source "$servers/env"

mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
run() { echo "=== $*" >&2; "$@" | tee -a "$results" || echo "=== $1 failed (see above); the other benchmarks go on" >&2; }
run "$build/benchmarks/lock_bench" "${smoke[@]}"
run "$build/benchmarks/server_bench" "${smoke[@]}"
run "$build/benchmarks/contention_bench" "${smoke[@]}"
run node benchmarks/peers/bench.mjs "${smoke[@]}"

{
  echo "# Machine of this run"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
  echo "- memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- kernel: $(uname -sr)"
  echo "- compiler: $(c++ --version | head -1)"
  echo "- PostgreSQL: $(/usr/lib/postgresql/15/bin/postgres --version), fsync=off, loopback"
  echo "- Redis: $(redis-server --version | cut -d' ' -f3), no persistence, loopback"
  echo "- SQLite: $(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || echo "library $(grep -m1 SQLITE_VERSION /usr/include/sqlite3.h | awk '{print $3}')")"
  echo "- Node.js: $(node --version); peers: $(cd benchmarks/peers && node -e "const p=require('./package.json');console.log(Object.entries(p.dependencies).map(([n,v])=>n+'@'+v).join(', '))")"
  echo "- mode: ${smoke[*]:-full}"
} > "$out/machine.md"
node benchmarks/plot.mjs "$results" "$out"
echo "=== wrote $out" >&2
