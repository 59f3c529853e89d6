#!/usr/bin/env bash
# Every ```cpp block of README.md compiles as printed, as its own translation
# unit, against the headers (header-only) with -Wall -Wextra -Werror.
# Usage: check_readme.sh [README] [INCLUDE_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
readme=${1:-$root/README.md}
include=${2:-$root/include}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
awk -v dir="$work" '
  /^```cpp[[:space:]]*$/ { inside = 1; n++; file = sprintf("%s/block%02d.cpp", dir, n); start[n] = NR; next }
  /^```/ && inside       { inside = 0; close(file); next }
  inside                 { print > file }
  END { for (i = 1; i <= n; i++) print i, start[i] > (dir "/index") }
' "$readme"
[ -s "$work/index" ] || { echo "FAIL: no cpp blocks found in $readme"; exit 1; }
failed=0
while read -r n line; do
  unit=$(printf '%s/block%02d.cpp' "$work" "$n")
  if g++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror -I"$include" \
      -isystem "$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" "$unit" 2> "$unit.log"; then
    echo "ok: README.md block at line $line"
  else
    echo "FAIL: README.md block at line $line"; cat "$unit.log"; failed=1
  fi
done < "$work/index"
exit $failed
