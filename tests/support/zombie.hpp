// Fenced writes on every durable backend: the error a fenced write gives,
// and the zombie holder: holder A
// acquires a short lease and is paused (SIGSTOP) past it; B acquires, makes
// its fenced write and releases; A is resumed (SIGCONT) and tries its own
// fenced write, which must be refused with errc::lock_lost.
#pragma once

#include "support/helpers.hpp"

#include <lockstore/error.hpp>
#include <lockstore/key.hpp>
#include <lockstore/lock_guard.hpp>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace lockstore::test {

/// The code of the lockstore::Error that `lock.fenced(guard, statements)`
/// throws (its text in `message`), or no error when the write was made.
template <class Lock, class Statements>
asio::awaitable<boost::system::error_code> fenced_error(Lock& lock, const LockGuard& guard, Statements statements,
                                                        std::string& message) {
  try {
    auto writing = lock.fenced(guard, std::move(statements));
    co_await std::move(writing);
  } catch (const Error& error) {
    message = error.what();
    co_return error.code();
  }
  co_return boost::system::error_code{};
}

/// What the paused holder's late fenced write did.
enum class ZombieWrite { refused_lock_lost = 0, accepted = 1, other_error = 2, never_held = 3 };

/// Runs the scenario. `fixture` gives `make_lock(owner)` (an awaitable
/// lock) and `write(lock, guard, value)` (an awaitable fenced write of
/// `value` that throws lockstore::Error). Call it from a process with no
/// other threads and no open connection (it forks). Returns what A's write
/// did; B's write must have succeeded (else this throws).
template <class Fixture>
ZombieWrite run_zombie_holder(Fixture& fixture, const std::filesystem::path& dir, const AdvisoryKey& key,
                              std::chrono::milliseconds ttl) {
  using namespace std::chrono_literals;
  const auto ready = dir / "zombie-ready";
  const auto go = dir / "zombie-go";
  const auto quiet = dir / "zombie-quiet";
  const auto quieted = dir / "zombie-quieted";
  bool successor_wrote = false;
  std::string successor_error;
  const auto statuses = run_children(
      1,
      [&](int) {
        return run([&]() -> asio::awaitable<int> {
          auto lock = co_await fixture.make_lock("zombie");
          auto guard = co_await lock.acquire(key, ttl, 5s);
          std::ofstream(dir / "zombie-ready.tmp") << ::getpid();
          std::filesystem::rename(dir / "zombie-ready.tmp", ready);
          // Renews its lease until told to keep quiet, so that the pause
          // never lands in the middle of a statement (a SQLite writer
          // stopped there would keep the file's write lock, and everyone
          // would wait for it), then waits without a word until told to write.
          while (!std::filesystem::exists(quiet)) {
            co_await sleep_for(10ms);
            auto extending = lock.extend(guard, ttl);
            co_await std::move(extending);
          }
          std::ofstream(quieted) << "quiet";
          while (!std::filesystem::exists(go)) co_await sleep_for(5ms);
          auto outcome = ZombieWrite::accepted;
          try {
            auto writing = fixture.write(lock, guard, "zombie");
            co_await std::move(writing);
          } catch (const Error& error) {
            outcome = error.code() == errc::lock_lost ? ZombieWrite::refused_lock_lost : ZombieWrite::other_error;
          }
          co_await lock.release(std::move(guard));  // gives back nothing: the lease is the successor's
          co_return static_cast<int>(outcome);
        });
      },
      [&] {
        // On a failure before the pause, the child is let go at once.
        const auto let_go = [&] {
          std::ofstream(quiet) << "quiet";
          std::ofstream(go) << "go";
        };
        if (!eventually([&] { return std::filesystem::exists(ready); })) return let_go();
        pid_t child = 0;
        std::ifstream(ready) >> child;
        if (child <= 0) return let_go();
        std::ofstream(quiet) << "quiet";
        if (!eventually([&] { return std::filesystem::exists(quieted); })) return let_go();
        ::kill(child, SIGSTOP);
        try {
          run([&]() -> asio::awaitable<void> {
            auto lock = co_await fixture.make_lock("successor");
            // Granted once the paused holder's lease has run out.
            auto guard = co_await lock.acquire(key, 30s, ttl + 10s);
            auto writing = fixture.write(lock, guard, "successor");
            co_await std::move(writing);
            successor_wrote = true;
            co_await lock.release(std::move(guard));
          });
        } catch (const std::exception& error) {
          successor_error = error.what();
        }
        std::ofstream(go) << "go";
        ::kill(child, SIGCONT);
      });
  if (!successor_error.empty() || !successor_wrote)
    throw std::runtime_error("the successor could not write: " + successor_error);
  if (!std::filesystem::exists(ready)) return ZombieWrite::never_held;
  return static_cast<ZombieWrite>(statuses.at(0));
}

}  // namespace lockstore::test
