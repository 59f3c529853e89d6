#!/usr/bin/env bash
# Installs the Debian bookworm packages lockstore builds and tests with
# (with --demo: only what the tool and the demo need).
# Run as root (as CI does); uses sudo when run as another user.
set -euo pipefail

# What the tool and the demo need (scripts/demo.sh installs only these).
demo_packages=(
  g++ cmake ninja-build
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libfmt-dev libsqlite3-dev libssl-dev libcli11-dev
)
packages=(
  "${demo_packages[@]}"
  pkg-config catch2 libpq-dev libhiredis-dev
  # The headers are checked under clang++ too (tests/headers/check_headers.sh),
  # and the fuzz targets need its libFuzzer runtime (tests/fuzz/run.sh).
  clang libclang-rt-14-dev
  # Reads the Conan recipe (tests/packaging/check_conan_recipe.py).
  python3
  # Throwaway servers for the PostgreSQL and Redis suites (scripts/test-servers.sh).
  postgresql-15 redis-server
)
if [ "${1:-}" = "--demo" ]; then
  packages=("${demo_packages[@]}")
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
