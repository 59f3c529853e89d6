#!/usr/bin/env bash
# The main job: installs what it needs, builds everything, and runs the demo:
# worker processes contend for one key through `lockstore run` on a SQLite
# file, then a holder is SIGKILLed mid-hold and the next one takes over after
# the TTL with a larger fence. Exits non-zero if the demo's checks fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build -j2
exec build/tools/demo/lockstore_demo "$@"
