#!/usr/bin/env bash
# Builds each libFuzzer target with clang++ (ASan + UBSan) and runs it for a
# bounded time over its committed corpus (tests/fuzz/corpus/<target>): first
# every committed input once, then new inputs for SECONDS. Fails on a crash,
# a sanitizer report, a broken property (abort) or a slow input.
# Usage: tests/fuzz/run.sh TARGET SECONDS [WORK_DIR]
#   TARGET: keys | manifest | cli | wire
# New inputs are left in WORK_DIR/corpus; copy the interesting ones into the
# committed corpus by hand. A crashing input is saved as WORK_DIR/crash-*.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${1:?target}
seconds=${2:?seconds}
work=${3:-$(mktemp -d "${TMPDIR:-/tmp}/lockstore-fuzz-XXXXXX")}
mkdir -p "$work/corpus"

binary="$work/fuzz_$target"
libraries=(-lfmt)
[ "$target" = cli ] && libraries+=(-lboost_url)  # the tool parses URLs with Boost.URL
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I "$root/include" -I "$root/tools/lockstore" "$here/fuzz_$target.cpp" "${libraries[@]}" -o "$binary"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
corpus="$here/corpus/$target"
cd "$work"
# Every committed input, once (regressions), then fuzzing from them.
"$binary" -runs=0 "$corpus"
"$binary" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=4096 \
  -print_final_stats=1 "$work/corpus" "$corpus"
