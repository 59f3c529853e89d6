#!/usr/bin/env bash
# Each public header compiles on its own (one translation unit per header)
# with the strict warnings, as errors: -Wall -Wextra -Wpedantic -Wconversion
# -Wshadow. Usage: check_headers.sh COMPILER [INCLUDE_DIR]
# Headers with extra dependencies get those dependencies' include paths.
# Then the separately compiled mode (LOCKSTORE_SEPARATE_COMPILATION): each
# public header again, where no C client header (sqlite3.h, libpq-fe.h,
# hiredis.h, openssl) may reach the user, and <lockstore/src.hpp>, which
# compiles everything, under the same warnings.
set -euo pipefail
compiler=$1
include=${2:-$(cd "$(dirname "$0")/../../include" && pwd)}
command -v "$compiler" > /dev/null || { echo "FAIL: compiler '$compiler' not found"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
headers=$(cd "$include" && find lockstore -maxdepth 1 -name '*.hpp' ! -name src.hpp | sort)
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
  # Separately compiled: declarations only, and no C client header (-H
  # lists every header the compiler opens).
  if ! "$compiler" -std=c++20 -fsyntax-only -H -Werror -Wall -Wextra -Wpedantic -Wconversion -Wshadow \
      -DLOCKSTORE_SEPARATE_COMPILATION -I"$include" "$unit" 2> "$unit.separate.log"; then
    echo "FAIL: $header, separately compiled ($compiler)"; grep -v '^\.' "$unit.separate.log"; return 1
  fi
  if grep -E '/(sqlite3|libpq-fe|hiredis|openssl/[a-z]+)\.h$' "$unit.separate.log"; then
    echo "FAIL: $header, separately compiled, reaches a C client header ($compiler)"; return 1
  fi
  echo "ok: $header, separately compiled ($compiler)"
}
export -f check_one
export compiler include work
echo "$headers" | xargs -P 2 -I{} bash -c 'check_one {}'

# Everything compiled, as the one source file of a separately compiled
# program does; and each part alone (a program may compile them in
# different files).
for part in lockstore/src.hpp $(cd "$include" && find lockstore/src -name '*.hpp' | sort); do
  unit="$work/$(echo "$part" | tr '/.' '__').src.cpp"
  printf '#include <%s>\n' "$part" > "$unit"
  if "$compiler" -std=c++20 -fsyntax-only -Werror -Wall -Wextra -Wpedantic -Wconversion -Wshadow \
      -DLOCKSTORE_SEPARATE_COMPILATION -I"$include" \
      -isystem "$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" "$unit" 2> "$unit.log"; then
    echo "ok: $part ($compiler)"
  else
    echo "FAIL: $part ($compiler)"; cat "$unit.log"; exit 1
  fi
done
