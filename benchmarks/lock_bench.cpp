// lock_bench: prints one JSON line per measurement, each with the baseline
// measured in the same run (std::mutex + unordered_map; raw sqlite3 running
// the same statements with the same pragmas). `--smoke` runs tiny counts to
// check that the program works; it never decides a test's outcome by time.
#include "bench_support.hpp"

#include <lockstore/detail/sqlite_database_run.hpp>
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <malloc.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

using namespace std::chrono_literals;
namespace asio = boost::asio;
using namespace lockstore::bench;

namespace {

struct Scale {
  int memory_pairs, sqlite_pairs, handoffs;
};

// --- uncontended acquire+release pairs -------------------------------------

double mutex_map_pairs(int pairs) {
  std::mutex mutex;
  std::unordered_map<std::string, std::uint64_t> held;
  const std::string key = "bench";
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    {
      std::lock_guard lock(mutex);
      held.emplace(key, static_cast<std::uint64_t>(i));
    }
    std::lock_guard lock(mutex);
    held.erase(key);
  }
  return pairs / seconds_since(start);
}

double memory_lock_pairs(int pairs) {
  return run([&]() -> asio::awaitable<double> {
    lockstore::MemoryLock lock;
    co_return co_await timed_pairs(lock, "bench", pairs);
  });
}

// The same statements SqliteLock runs, prepared once, on the same pragmas.
double raw_sqlite_pairs(int pairs) {
  const auto path = fresh_file("raw.db");
  run([&]() -> asio::awaitable<void> { co_await lockstore::SqliteDatabase::open(path); });  // same schema
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", nullptr, nullptr, nullptr);
  sqlite3_busy_timeout(db, 15000);
  // The lease statements read their clock through this function, as on a
  // lockstore connection (detail::SqliteConnection::register_clock).
  sqlite3_create_function_v2(
      db, "lockstore_now_ms", 0, SQLITE_UTF8, nullptr,
      [](sqlite3_context* context, int, sqlite3_value**) {
        sqlite3_result_int64(context, lockstore::detail::wall_clock_ms());
      },
      nullptr, nullptr, nullptr);
  sqlite3_stmt* acquire = nullptr;
  sqlite3_stmt* release = nullptr;
  sqlite3_prepare_v3(db, lockstore::detail::sqlite_lock_sql::acquire, -1, SQLITE_PREPARE_PERSISTENT, &acquire, nullptr);
  sqlite3_prepare_v3(db, lockstore::detail::sqlite_lock_sql::release, -1, SQLITE_PREPARE_PERSISTENT, &release, nullptr);
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    const auto token = lockstore::random_token();
    sqlite3_bind_text(acquire, 1, "bench", -1, SQLITE_STATIC);
    sqlite3_bind_text(acquire, 2, "raw-owner", -1, SQLITE_STATIC);
    sqlite3_bind_text(acquire, 3, token.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(acquire, 4, 30000);
    if (sqlite3_step(acquire) != SQLITE_ROW) throw std::runtime_error("raw acquire refused");
    sqlite3_reset(acquire);
    sqlite3_bind_text(release, 1, "bench", -1, SQLITE_STATIC);
    sqlite3_bind_text(release, 2, token.c_str(), -1, SQLITE_STATIC);
    if (sqlite3_step(release) != SQLITE_DONE) throw std::runtime_error("raw release failed");
    sqlite3_reset(release);
  }
  const double rate = pairs / seconds_since(start);
  sqlite3_finalize(acquire);
  sqlite3_finalize(release);
  sqlite3_close(db);
  remove_file(path);
  return rate;
}

double sqlite_lock_pairs(int pairs, lockstore::SqliteOptions options = {}) {
  const auto path = fresh_file("lock.db");
  const double rate = run([&]() -> asio::awaitable<double> {
    lockstore::SqliteLock lock(co_await lockstore::SqliteDatabase::open(path, options), "bench-owner");
    co_return co_await timed_pairs(lock, "bench", pairs);
  });
  remove_file(path);
  return rate;
}

void handoff_sqlite_processes(int handoffs) {
  const auto path = fresh_file("handoff.db");
  run([&]() -> asio::awaitable<void> { co_await lockstore::SqliteDatabase::open(path); });  // create before fork
  handoff_processes("sqlite", handoffs, [&](std::string owner) -> asio::awaitable<lockstore::SqliteLock> {
    co_return lockstore::SqliteLock(co_await lockstore::SqliteDatabase::open(path), std::move(owner));
  });
  remove_file(path);
}

// --- acquire cost with many other keys held --------------------------------

// Heap bytes per live lease inside MemoryLock (the lock's own table, with
// the guards dropped), from glibc's allocator statistics.
void memory_per_lease(int leases) {
  run([&]() -> asio::awaitable<void> {
    lockstore::MemoryLock lock;
    std::vector<lockstore::AdvisoryKey> keys;
    keys.reserve(static_cast<std::size_t>(leases));
    for (int i = 0; i < leases; ++i) keys.emplace_back(fmt::format("session:tenant-{}:thread-{}", i % 1000, i));
    const auto before = ::mallinfo2().uordblks;
    for (const auto& key : keys) {
      auto guard = co_await lock.try_acquire(key, 1h);
      guard->mark_released();  // the lease stays in the lock; only the guard goes
    }
    const auto after = ::mallinfo2().uordblks;
    fmt::print("{{\"benchmark\":\"memory_per_lease\",\"backend\":\"memory\",\"leases\":{},\"key_bytes\":{},"
               "\"bytes_per_lease\":{:.1f}}}\n",
               leases, keys.front().str().size(), static_cast<double>(after - before) / leases);
  });
}

void many_keys(const std::vector<int>& held_counts, int pairs) {
  for (const int held : held_counts) {
    const double memory_rate = run([&]() -> asio::awaitable<double> {
      lockstore::MemoryLock lock;
      std::vector<lockstore::LockGuard> guards;
      guards.reserve(static_cast<std::size_t>(held));
      for (int i = 0; i < held; ++i)
        guards.push_back(std::move(*co_await lock.try_acquire(lockstore::AdvisoryKey(fmt::format("held-{}", i)), 1h)));
      const double rate = co_await timed_pairs(lock, "measured", pairs);
      for (auto& guard : guards) guard.mark_released();
      co_return rate;
    });
    const auto path = fresh_file("many.db");
    const double sqlite_rate = run([&]() -> asio::awaitable<double> {
      auto database = co_await lockstore::SqliteDatabase::open(path);
      co_await lockstore::detail::run_on(database, [held](lockstore::detail::SqliteConnection& connection) {
        // Bulk-insert the held leases in one transaction (fast setup).
        lockstore::detail::Transaction transaction(connection);
        static constexpr const char* insert =
            "INSERT INTO lockstore_leases VALUES (?1, 'other', ?2, 1, ?3, ?3 + 3600000)";
        for (int i = 0; i < held; ++i) {
          auto statement = connection.prepare(insert);
          statement.bind(1, fmt::format("held-{}", i)).bind(2, lockstore::random_token())
              .bind(3, lockstore::detail::wall_clock_ms());
          statement.run();
        }
        transaction.commit();
      });
      lockstore::SqliteLock lock(database, "measurer");
      co_return co_await timed_pairs(lock, "measured", pairs);
    });
    remove_file(path);
    print_held("memory", held, memory_rate);
    print_held("sqlite", held, sqlite_rate);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  const auto has = [&](std::string_view flag) { return std::find(args.begin(), args.end(), flag) != args.end(); };
  const bool smoke = has("--smoke");
  const Scale scale = smoke ? Scale{2000, 200, 20} : Scale{500000, 40000, 2000};

  if (has("--spin-sweep")) {  // how the completion spin changes single-client SQLite throughput
    for (const int spin_us : {0, 20, 50, 100, 200}) {
      lockstore::SqliteOptions options;
      options.completion_spin = std::chrono::microseconds(spin_us);
      const double raw = raw_sqlite_pairs(scale.sqlite_pairs);
      const double ours = sqlite_lock_pairs(scale.sqlite_pairs, options);
      fmt::print("{{\"benchmark\":\"spin_sweep\",\"completion_spin_us\":{},\"pairs_per_s\":{:.0f},"
                 "\"raw_pairs_per_s\":{:.0f},\"ratio\":{:.3f}}}\n", spin_us, ours, raw, ours / raw);
    }
    return 0;
  }

  // Each pair of figures is measured back to back, baseline first.
  const double mutex_rate = mutex_map_pairs(scale.memory_pairs * 10);
  print_pairs("memory", memory_lock_pairs(scale.memory_pairs), "std_mutex_unordered_map", mutex_rate);
  const double raw_rate = raw_sqlite_pairs(scale.sqlite_pairs);
  print_pairs("sqlite", sqlite_lock_pairs(scale.sqlite_pairs), "raw_sqlite3_same_statements", raw_rate);

  handoff_threads("memory", scale.handoffs, [shared = lockstore::MemoryLock()](std::string) mutable
                  -> asio::awaitable<lockstore::MemoryLock> { co_return shared; });
  const auto path = fresh_file("handoff-threads.db");
  std::optional<lockstore::SqliteDatabase> database;
  database = run([&]() -> asio::awaitable<std::optional<lockstore::SqliteDatabase>> {
    co_return co_await lockstore::SqliteDatabase::open(path);
  });
  handoff_threads("sqlite", scale.handoffs, [&](std::string owner) -> asio::awaitable<lockstore::SqliteLock> {
    co_return lockstore::SqliteLock(*database, std::move(owner));
  });
  database.reset();
  remove_file(path);
  handoff_sqlite_processes(scale.handoffs);

  many_keys(smoke ? std::vector<int>{10, 1000} : std::vector<int>{10, 10'000, 1'000'000}, scale.sqlite_pairs / 4);
  memory_per_lease(smoke ? 1000 : 1'000'000);
  return 0;
}
