#!/usr/bin/env bash
# Each public header compiles on its own (one translation unit per header)
# with the strict warnings, as errors: -Wall -Wextra -Wpedantic -Wconversion
# -Wshadow. Usage: check_headers.sh COMPILER [INCLUDE_DIR]
# Headers with extra dependencies get those dependencies' include paths.
set -euo pipefail
compiler=$1
include=${2:-$(cd "$(dirname "$0")/../../include" && pwd)}
command -v "$compiler" > /dev/null || { echo "FAIL: compiler '$compiler' not found"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
headers=$(cd "$include" && find lockstore -maxdepth 1 -name '*.hpp' | sort)
check_one() {
  local header=$1 unit
  unit="$work/$(echo "$header" | tr '/.' '__').cpp"
  printf '#include <%s>\n#include <%s>\n' "$header" "$header" > "$unit"   # twice: include guards hold
  if "$compiler" -std=c++20 -fsyntax-only -Werror -Wall -Wextra -Wpedantic -Wconversion -Wshadow \
      -I"$include" -isystem "$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" "$unit" 2> "$unit.log"; then
    echo "ok: $header ($compiler)"
  else
    echo "FAIL: $header ($compiler)"; cat "$unit.log"; return 1
  fi
}
export -f check_one
export compiler include work
echo "$headers" | xargs -P 2 -I{} bash -c 'check_one {}'
