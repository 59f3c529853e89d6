// Checks that need real processes, written once for every backend that
// works across processes. `connect(owner)` returns an awaitable of a lock
// for that owner and is called in the process that uses the lock (after
// the fork), on its own connection.
#pragma once

#include "support/helpers.hpp"
#include "support/ledger.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lockstore::test {

/// `processes` processes take the lock `rounds` times each and write the
/// ledger inside it: no two holders overlap, fences strictly increase.
template <class Connect>
void check_processes_never_overlap(Connect connect, int processes, int rounds) {
  TempDir dir;
  const auto ledger = dir / "ledger.txt";
  const auto statuses = run_children(processes, [&](int index) {
    LedgerWriter writer(ledger);
    run([&]() -> asio::awaitable<void> {
      auto connecting = connect(fmt::format("process-{}", index));
      auto lock = co_await std::move(connecting);
      for (int i = 0; i < rounds; ++i) {
        auto guard = co_await lock.acquire(AdvisoryKey("ledger"), std::chrono::seconds(10), std::chrono::seconds(60));
        writer.enter(index, guard.fence());
        co_await sleep_for(std::chrono::milliseconds(i % 2));
        writer.exit(index, guard.fence());
        co_await lock.release(std::move(guard));
      }
    });
    return 0;
  });
  for (const int status : statuses) CHECK(status == 0);
  check_ledger(ledger, static_cast<std::size_t>(processes * rounds));
}

/// The parent holds the lock; a child process waits for it; the parent
/// releases once the child is waiting. The child must hold the lock within
/// `bound` of the release (wall clock, same machine): faster than any
/// fallback poll, so only the backend's notification can explain it.
template <class Connect>
void check_waiter_woken_across_processes(Connect connect, std::chrono::milliseconds bound) {
  using namespace std::chrono_literals;
  TempDir dir;
  const auto held = dir / "held";
  const auto ready = dir / "ready";
  const auto report = dir / "report";
  std::int64_t released_ms = 0;
  const auto statuses = run_children(
      1,
      [&](int) {
        run([&]() -> asio::awaitable<void> {
          auto connecting = connect("waiter");
          auto lock = co_await std::move(connecting);
          while (!std::filesystem::exists(held)) co_await sleep_for(5ms);
          auto refused = co_await lock.try_acquire(AdvisoryKey("notify"), 10s);
          if (refused) throw std::runtime_error("the parent should hold the lock");
          std::ofstream(ready) << "ready";
          auto guard = co_await lock.acquire(AdvisoryKey("notify"), 10s, 20s);
          std::ofstream(report) << detail::wall_clock_ms();
          co_await lock.release(std::move(guard));
        });
        return 0;
      },
      [&] {
        run([&]() -> asio::awaitable<void> {
          auto connecting = connect("holder");
          auto lock = co_await std::move(connecting);
          auto guard = co_await lock.acquire(AdvisoryKey("notify"), 30s, 1s);
          std::ofstream(held) << "held";
          while (!std::filesystem::exists(ready)) co_await sleep_for(5ms);
          co_await sleep_for(300ms);  // the child is now inside acquire(), listening
          released_ms = detail::wall_clock_ms();
          co_await lock.release(std::move(guard));
        });
      });
  REQUIRE(statuses == std::vector<int>{0});
  std::int64_t acquired_ms = 0;
  std::ifstream(report) >> acquired_ms;
  const auto delay = acquired_ms - released_ms;
  INFO("acquired " << delay << " ms after the release");
  CHECK(delay >= 0);
  CHECK(delay < bound.count());
}

/// Two processes take turns on one key, `rounds` times each, holding it
/// 10 ms: every handoff (one process's release to the other's acquire,
/// steady clock, which Linux shares between processes) is measured. The
/// median must stay under `median_bound`: well under any fallback poll (a
/// queued waiter looks again on its own only to refresh its ticket, every
/// 500 ms), so only a cross-process wake-up explains it. Measured medians
/// are 0.5-1.5 ms; the bound leaves room for sanitizer builds under load.
template <class Connect>
void check_handoffs_across_processes(Connect connect, int rounds, std::chrono::milliseconds median_bound) {
  TempDir dir;
  const auto events = dir / "events.txt";
  const auto statuses = run_children(2, [&](int index) {
    const int fd = ::open(events.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    const auto record = [&](char kind) {
      const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::steady_clock::now().time_since_epoch()).count();
      const auto line = fmt::format("{} {} {}\n", index, kind, now);
      if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
        throw std::runtime_error("cannot write the event file");
    };
    run([&]() -> asio::awaitable<void> {
      auto connecting = connect(fmt::format("turns-{}", index));
      auto lock = co_await std::move(connecting);
      for (int i = 0; i < rounds; ++i) {
        auto guard = co_await lock.acquire(AdvisoryKey("turns"), std::chrono::seconds(10), std::chrono::seconds(60));
        record('A');
        co_await sleep_for(std::chrono::milliseconds(10));
        record('R');
        co_await lock.release(std::move(guard));
      }
    });
    ::close(fd);
    return 0;
  });
  for (const int status : statuses) REQUIRE(status == 0);
  std::ifstream in(events);
  int index = 0;
  char kind = 0;
  std::int64_t at = 0;
  int last_releaser = -1;
  std::int64_t last_release = 0;
  std::vector<std::int64_t> handoffs;
  int acquisitions = 0;
  while (in >> index >> kind >> at) {
    if (kind == 'R') {
      last_releaser = index;
      last_release = at;
      continue;
    }
    ++acquisitions;
    if (last_releaser >= 0 && last_releaser != index) handoffs.push_back(at - last_release);
  }
  REQUIRE(acquisitions == 2 * rounds);
  // First come, first served makes them alternate; without a queue a
  // releaser may come straight back, so ask only for a fair share.
  REQUIRE(handoffs.size() >= static_cast<std::size_t>(rounds / 2));
  std::sort(handoffs.begin(), handoffs.end());
  const auto median = handoffs[handoffs.size() / 2];
  INFO(handoffs.size() << " handoffs; median " << median << " us, slowest " << handoffs.back() << " us");
  CHECK(handoffs.front() >= 0);
  CHECK(median < std::chrono::duration_cast<std::chrono::microseconds>(median_bound).count());
}

}  // namespace lockstore::test
