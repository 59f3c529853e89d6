// Helpers shared by the benchmark programs: run a coroutine to completion,
// scratch database files, clocks and percentiles.
#pragma once

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace lockstore::bench {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

/// Runs `make()` on a fresh io_context and returns its result.
template <class F>
auto run(F&& make) {
  asio::io_context context;
  auto future = asio::co_spawn(context, make(), asio::use_future);
  context.run();
  return future.get();
}

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline void remove_file(const std::filesystem::path& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
}

/// A path in the temp directory, unique to this process, with no file yet.
inline std::filesystem::path fresh_file(const std::string& name) {
  auto path = std::filesystem::temp_directory_path() / fmt::format("lockstore-bench-{}-{}", ::getpid(), name);
  remove_file(path);
  return path;
}

inline double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<std::size_t>(p * static_cast<double>(values.size() - 1))];
}

}  // namespace lockstore::bench
