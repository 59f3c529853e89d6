// Checks that need real processes, written once for every backend that
// works across processes. `connect(owner)` returns an awaitable of a lock
// for that owner and is called in the process that uses the lock (after
// the fork), on its own connection.
#pragma once

#include "support/helpers.hpp"
#include "support/ledger.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

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

}  // namespace lockstore::test
