// Helpers shared by the benchmark programs: run a coroutine to completion,
// scratch database files, clocks and percentiles.
#pragma once

#include <lockstore/lockstore.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace lockstore::bench {

namespace asio = boost::asio;
using namespace std::chrono_literals;
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

// Sequential try_acquire+release pairs on one key; returns pairs per second.
template <class Lock>
asio::awaitable<double> timed_pairs(Lock& lock, const char* key_name, int pairs) {
  const lockstore::AdvisoryKey key(key_name);
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    auto guard = co_await lock.try_acquire(key, 30s);
    co_await lock.release(std::move(*guard));
  }
  co_return pairs / seconds_since(start);
}

// --- handoff latency: release -> the waiter holds it -----------------------

// Shared between processes (mmap before fork) or threads.
struct HandoffBoard {
  std::atomic<int> holding{-1};      // iteration whose lease the holder has
  std::atomic<int> waiting{-1};      // iteration the waiter started acquire for
  std::atomic<int> done{-1};         // iteration the waiter finished
  std::atomic<std::int64_t> released_ns{0};
  double latency_us[4096];
};

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

inline void spin_until(const std::atomic<int>& value, int expected) {
  while (value.load() != expected) std::this_thread::sleep_for(50us);
}

// `make_lock` is called in the thread or process that uses the lock.
template <class MakeLock>
void holder_side(HandoffBoard& board, int handoffs, MakeLock make_lock) {
  run([&]() -> asio::awaitable<void> {
    auto making = make_lock("holder");  // own statement: g++ 12 and co_await temporaries
    auto lock = co_await std::move(making);
    for (int i = 0; i < handoffs; ++i) {
      auto guard = co_await lock.acquire(lockstore::AdvisoryKey("handoff"), 30s, 30s);
      board.holding = i;
      spin_until(board.waiting, i);
      asio::steady_timer settle(co_await asio::this_coro::executor, 3ms);  // the waiter is now waiting
      co_await settle.async_wait(asio::use_awaitable);
      board.released_ns = now_ns();
      co_await lock.release(std::move(guard));
      spin_until(board.done, i);
    }
  });
}

template <class MakeLock>
void waiter_side(HandoffBoard& board, int handoffs, MakeLock make_lock) {
  run([&]() -> asio::awaitable<void> {
    auto making = make_lock("waiter");
    auto lock = co_await std::move(making);
    for (int i = 0; i < handoffs; ++i) {
      spin_until(board.holding, i);
      board.waiting = i;
      auto guard = co_await lock.acquire(lockstore::AdvisoryKey("handoff"), 30s, 30s);
      board.latency_us[i] = static_cast<double>(now_ns() - board.released_ns.load()) / 1000.0;
      co_await lock.release(std::move(guard));
      board.done = i;
    }
  });
}

inline void print_handoff(const char* backend, const char* scope, const HandoffBoard& board, int handoffs) {
  std::vector<double> latencies(board.latency_us, board.latency_us + handoffs);
  fmt::print("{{\"benchmark\":\"handoff_latency\",\"backend\":\"{}\",\"client\":\"lockstore\",\"scope\":\"{}\","
             "\"samples\":{},\"p10_us\":{:.1f},\"p25_us\":{:.1f},\"p50_us\":{:.1f},\"p75_us\":{:.1f},"
             "\"p90_us\":{:.1f},\"p99_us\":{:.1f},\"max_us\":{:.1f}}}\n",
             backend, scope, handoffs, percentile(latencies, 0.1), percentile(latencies, 0.25),
             percentile(latencies, 0.5), percentile(latencies, 0.75), percentile(latencies, 0.9),
             percentile(latencies, 0.99), percentile(latencies, 1.0));
  std::fflush(stdout);
}

inline void print_held(const char* backend, int held_keys, double pairs_per_s) {
  fmt::print("{{\"benchmark\":\"pairs_with_keys_held\",\"backend\":\"{}\",\"held_keys\":{},\"pairs_per_s\":{:.0f}}}\n",
             backend, held_keys, pairs_per_s);
  std::fflush(stdout);
}

template <class MakeLock>
void handoff_threads(const char* backend, int handoffs, MakeLock make_lock) {
  auto board = std::make_unique<HandoffBoard>();
  std::thread waiter([&] { waiter_side(*board, handoffs, make_lock); });
  holder_side(*board, handoffs, make_lock);
  waiter.join();
  print_handoff(backend, "threads", *board, handoffs);
}


/// Handoff between two processes: the waiter is forked (before any lock
/// exists) and makes its own lock with `make_lock`.
template <class MakeLock>
void handoff_processes(const char* backend, int handoffs, MakeLock make_lock) {
  void* memory = ::mmap(nullptr, sizeof(HandoffBoard), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* board = new (memory) HandoffBoard();
  const pid_t child = ::fork();
  if (child == 0) {
    waiter_side(*board, handoffs, make_lock);
    ::_exit(0);
  }
  holder_side(*board, handoffs, make_lock);
  ::waitpid(child, nullptr, 0);
  print_handoff(backend, "processes", *board, handoffs);
  ::munmap(memory, sizeof(HandoffBoard));
}

inline void print_pairs(const char* backend, double pairs_per_s, const char* baseline, double baseline_per_s) {
  fmt::print("{{\"benchmark\":\"uncontended_pairs\",\"backend\":\"{}\",\"pairs_per_s\":{:.0f},"
             "\"baseline\":\"{}\",\"baseline_pairs_per_s\":{:.0f},\"ratio\":{:.3f}}}\n",
             backend, pairs_per_s, baseline, baseline_per_s, pairs_per_s / baseline_per_s);
  std::fflush(stdout);
}

}  // namespace lockstore::bench
