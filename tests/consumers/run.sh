#!/usr/bin/env bash
# Proves each way of consuming lockstore works, from a finished build:
#   1. cmake --install into a temporary prefix (headers, package config with
#      components, version file, the tool), then a find_package consumer and
#      Conan's test_package built against it;
#   2. an add_subdirectory consumer and a FetchContent consumer (from an
#      archive of the source tree): no tests, examples or flags leak;
#   3. a program built with only -I single_include (copy-in vendoring).
# Usage: run.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(realpath "$1")
source_dir=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
consumers="$source_dir/tests/consumers"
generator=(-G Ninja -DCMAKE_BUILD_TYPE=Release)

step() { echo "=== $*"; }
build_and_run() {  # name, project dir, cmake args...
  local name=$1 dir=$2; shift 2
  cmake -S "$dir" -B "$work/$name" "${generator[@]}" "$@" > "$work/$name.log" 2>&1 \
    || { cat "$work/$name.log"; echo "FAIL: $name: configure"; exit 1; }
  cmake --build "$work/$name" > "$work/$name.build.log" 2>&1 \
    || { cat "$work/$name.build.log"; echo "FAIL: $name: build"; exit 1; }
  local program
  program=$(find "$work/$name" -maxdepth 1 -type f -perm -u+x \( -name consumer -o -name test_package \) | head -1)
  (cd "$work" && "$program" "$work/$name.db") || { echo "FAIL: $name: the program failed"; exit 1; }
}

step "install into a temporary prefix"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
for file in include/lockstore/lockstore.hpp include/lockstore/version.hpp share/cmake/lockstore/lockstoreConfig.cmake \
            share/cmake/lockstore/lockstoreConfigVersion.cmake share/cmake/lockstore/lockstore-redis-targets.cmake bin/lockstore; do
  [ -e "$work/prefix/$file" ] || { echo "FAIL: install did not put $file"; exit 1; }
done
version=$("$work/prefix/bin/lockstore" --version)
expected=$(sed -nE 's/^#define LOCKSTORE_VERSION_STRING "(.*)"/\1/p' "$source_dir/include/lockstore/version.hpp")
[ "$version" = "lockstore $expected" ] || { echo "FAIL: installed tool says '$version', expected 'lockstore $expected'"; exit 1; }
echo "ok: installed tool says '$version'"

step "find_package(lockstore REQUIRED COMPONENTS sqlite)"
build_and_run find_package "$consumers/find_package" -DCMAKE_PREFIX_PATH="$work/prefix"
step "a version the install does not satisfy is refused"
mkdir -p "$work/too_new"
printf 'cmake_minimum_required(VERSION 3.21)\nproject(p LANGUAGES CXX)\nfind_package(lockstore 99 REQUIRED)\n' > "$work/too_new/CMakeLists.txt"
if cmake -S "$work/too_new" -B "$work/too_new/build" -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/too_new.log" 2>&1; then
  echo "FAIL: find_package(lockstore 99) succeeded"; exit 1
fi
grep -q "compatible with requested version" "$work/too_new.log" || { cat "$work/too_new.log"; echo "FAIL: no version message"; exit 1; }
echo "ok: find_package(lockstore 99) is refused"
IFS=. read -r major minor _ <<< "$expected"
if [ "$major" = 0 ] && [ "$minor" -gt 0 ]; then  # before 1.0, only the same minor version is compatible
  older="0.$((minor - 1))"
  mkdir -p "$work/older"
  printf 'cmake_minimum_required(VERSION 3.21)\nproject(p LANGUAGES CXX)\nfind_package(lockstore %s REQUIRED)\n' "$older" \
    > "$work/older/CMakeLists.txt"
  if cmake -S "$work/older" -B "$work/older/build" -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/older.log" 2>&1; then
    echo "FAIL: find_package(lockstore $older) accepted $expected"; exit 1
  fi
  echo "ok: find_package(lockstore $older) is refused by $expected"
fi
[ -e "$work/prefix/share/doc/lockstore/LICENSE_1_0.txt" ] || { echo "FAIL: install did not put the licence"; exit 1; }
step "Conan test_package (CMake half) against the installed prefix"
build_and_run test_package "$source_dir/test_package" -DCMAKE_PREFIX_PATH="$work/prefix"

step "the examples as a standalone project, against the installed prefix"
cmake -S "$source_dir/examples" -B "$work/examples" "${generator[@]}" -DCMAKE_PREFIX_PATH="$work/prefix" \
  > "$work/examples.log" 2>&1 || { cat "$work/examples.log"; echo "FAIL: examples: configure"; exit 1; }
cmake --build "$work/examples" -j2 > "$work/examples.build.log" 2>&1 \
  || { cat "$work/examples.build.log"; echo "FAIL: examples: build"; exit 1; }
for example in 01_memory_lock 02_sqlite_across_processes 03_with_session_lock 04_agent_loop 07_fence_check 08_timeout; do
  (cd "$work" && "$work/examples/example_$example" > "$work/example_$example.log" 2>&1) \
    || { cat "$work/example_$example.log"; echo "FAIL: example $example (standalone) failed"; exit 1; }
done
for example in 05_postgres_lock 06_redis_lock; do
  [ -x "$work/examples/example_$example" ] || { echo "FAIL: example $example was not built"; exit 1; }
done
echo "ok: the examples build alone with find_package and run"
step "the examples with add_subdirectory(lockstore)"
cmake -S "$source_dir/examples" -B "$work/examples_subdir" "${generator[@]}" -DLOCKSTORE_SOURCE_DIR="$source_dir" \
  > "$work/examples_subdir.log" 2>&1 || { cat "$work/examples_subdir.log"; echo "FAIL: examples (add_subdirectory): configure"; exit 1; }
cmake --build "$work/examples_subdir" --target example_07_fence_check > "$work/examples_subdir.build.log" 2>&1 \
  || { cat "$work/examples_subdir.build.log"; echo "FAIL: examples (add_subdirectory): build"; exit 1; }
(cd "$work" && "$work/examples_subdir/example_07_fence_check" > /dev/null) \
  || { echo "FAIL: example 07 (add_subdirectory) failed"; exit 1; }
echo "ok: the examples build with add_subdirectory"

step "add_subdirectory"
build_and_run add_subdirectory "$consumers/add_subdirectory" -DLOCKSTORE_SOURCE_DIR="$source_dir"
cmake --install "$work/add_subdirectory" --prefix "$work/consumer_prefix" > "$work/consumer_install.log" 2>&1 \
  || { cat "$work/consumer_install.log"; echo "FAIL: the consumer's install failed"; exit 1; }
if [ -e "$work/consumer_prefix/include/lockstore" ] || [ -e "$work/consumer_prefix/bin/lockstore" ]; then
  echo "FAIL: a consumer's install put lockstore's files into its prefix"; exit 1
fi
echo "ok: as a subproject lockstore installs nothing (LOCKSTORE_INSTALL is off)"
step "FetchContent from an archive of the source tree"
tar -C "$source_dir" --exclude='./build*' --exclude='./.git' -czf "$work/lockstore.tar.gz" .
build_and_run fetchcontent "$consumers/fetchcontent" -DLOCKSTORE_ARCHIVE="$work/lockstore.tar.gz"

step "single headers only (-I single_include)"
c++ -std=c++20 -O1 -I"$source_dir/single_include" "$consumers/consumer.cpp" -o "$work/single" -lsqlite3 -lfmt -pthread
(cd "$work" && ./single "$work/single.db")
echo "all consumers ok"
