#!/usr/bin/env bash
# The one-minute demo: installs what the tool needs, builds only the tool and
# the demo (lockstore compiled once beside the tool, SQLite only), and runs
# it: worker processes contend for one key through `lockstore run` on a
# SQLite file, then a holder is SIGKILLed mid-hold and the next one takes
# over after the TTL with a larger fence. Exits non-zero if the demo's
# checks fail. Arguments go to lockstore_demo (--seconds N, --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --demo
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCKSTORE_DEVELOPMENT=OFF \
  -DLOCKSTORE_REQUIRE_ALL=OFF -DLOCKSTORE_TOOL_SERVERS=OFF -DLOCKSTORE_BUILD_TOOL=ON > /dev/null
started=$(date +%s)
cmake --build build-demo -j2 --target lockstore_demo lockstore_tool
echo "built the tool and the demo in $(($(date +%s) - started)) s"
exec build-demo/tools/demo/lockstore_demo "$@"
