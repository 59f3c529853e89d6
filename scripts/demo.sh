#!/usr/bin/env bash
# The main job: installs what it needs, builds lockstore and runs its
# examples (MemoryLock; SqliteLock across processes; with_session_lock).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build -j2 --target example_01_memory_lock example_02_sqlite_across_processes example_03_with_session_lock example_04_agent_loop
for example in build/examples/example_*; do
  echo "=== $(basename "$example")"
  "$example"
done
