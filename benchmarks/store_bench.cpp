// store_bench: SessionStore figures as JSON lines, each with its baseline
// measured in the same run. `--smoke` runs tiny counts.
//  - commits/s vs raw sqlite3 running the same transaction (same SQL, same
//    hashing and manifest encoding, prepared statements, same pragmas);
//  - claim+complete throughput with 1 and 4 processes;
//  - gc time per orphan at growing orphan counts (it should stay flat), gc
//    time with nothing to delete at growing live-blob counts (it should not
//    grow), and the longest wait of a SqliteLock operation on another
//    connection while gc runs (baseline: the same operation without gc).
#include "bench_support.hpp"

#include <lockstore/detail/sqlite_database_run.hpp>
#include <lockstore/store.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace sql = lockstore::detail::store::sql;
using namespace lockstore::bench;

namespace {

std::string state_bytes(int i) { return fmt::format("{:0>200}", i); }  // 200-byte checkpoint part

double store_commits(int commits, lockstore::SqliteOptions options = {}) {
  const auto path = fresh_file("commits.db");
  double rate = 0;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open(path, options));
    const auto start = Clock::now();
    for (int i = 0; i < commits; ++i) {
      lockstore::CommitRequest request;
      request.session_id = "bench";
      request.expected_head_revision = static_cast<std::uint64_t>(i);
      request.parts.emplace("state", state_bytes(i));
      co_await store.commit(std::move(request));
    }
    rate = commits / seconds_since(start);
  });
  remove_file(path);
  return rate;
}

// The same transaction as SessionStore::commit, with the C API directly.
double raw_commits(int commits) {
  const auto path = fresh_file("raw-commits.db");
  run([&]() -> asio::awaitable<void> { co_await lockstore::SqliteDatabase::open(path); });  // same schema
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", nullptr, nullptr, nullptr);
  auto prepare = [&](const char* text) {
    sqlite3_stmt* statement = nullptr;
    sqlite3_prepare_v3(db, text, -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr);
    return statement;
  };
  auto* begin = prepare("BEGIN IMMEDIATE");
  auto* commit = prepare("COMMIT");
  auto* head = prepare(sql::head);
  auto* put = prepare(sql::put_blob);
  auto* part = prepare(sql::add_part);
  auto* set_head = prepare(sql::set_head);
  auto* count = prepare(sql::count_blobs);
  auto* add_ref = prepare(sql::add_ref);
  auto* drop_ref = prepare(sql::drop_ref);
  auto* queue = prepare(sql::queue_blob);
  auto by_hash = [&](sqlite3_stmt* statement, const std::string& hash) {
    sqlite3_bind_text(statement, 1, hash.c_str(), -1, SQLITE_TRANSIENT);
    return statement;
  };
  auto step = [](sqlite3_stmt* statement) {
    while (sqlite3_step(statement) == SQLITE_ROW) {
    }
    sqlite3_reset(statement);
  };
  auto put_blob = [&](const std::string& bytes) {
    auto hash = lockstore::detail::sha256_hex(bytes);
    sqlite3_bind_text(put, 1, hash.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(put, 2, static_cast<sqlite3_int64>(bytes.size()));
    sqlite3_bind_blob(put, 3, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
    step(put);
    if (sqlite3_changes(db) == 1) {
      sqlite3_bind_int64(count, 1, 1);
      step(count);
    }
    return hash;
  };
  std::string previous;
  const auto start = Clock::now();
  for (int i = 0; i < commits; ++i) {
    step(begin);
    sqlite3_bind_text(head, 1, "bench", -1, SQLITE_STATIC);
    step(head);
    lockstore::Checkpoint checkpoint;
    checkpoint.parts.emplace("state", lockstore::BlobRef{put_blob(state_bytes(i))});
    const auto manifest = put_blob(lockstore::detail::encode_manifest(checkpoint));
    sqlite3_bind_text(part, 1, manifest.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(part, 2, checkpoint.parts.at("state").hash.c_str(), -1, SQLITE_TRANSIENT);
    step(part);
    if (sqlite3_changes(db) == 1) step(by_hash(add_ref, checkpoint.parts.at("state").hash));
    sqlite3_bind_text(set_head, 1, "bench", -1, SQLITE_STATIC);
    sqlite3_bind_int64(set_head, 2, i + 1);
    sqlite3_bind_text(set_head, 3, manifest.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(set_head, 4, lockstore::detail::wall_clock_ms());
    step(set_head);
    step(by_hash(add_ref, manifest));
    if (!previous.empty()) {
      by_hash(drop_ref, previous);
      const bool unreferenced = sqlite3_step(drop_ref) == SQLITE_ROW && sqlite3_column_int64(drop_ref, 0) <= 0;
      sqlite3_reset(drop_ref);
      if (unreferenced) {
        sqlite3_bind_int64(by_hash(queue, previous), 2, lockstore::detail::wall_clock_ms());
        step(queue);
      }
    }
    step(commit);
    previous = manifest;
  }
  const double rate = commits / seconds_since(start);
  for (auto* statement : {begin, commit, head, put, part, set_head, count, add_ref, drop_ref, queue})
    sqlite3_finalize(statement);
  sqlite3_close(db);
  remove_file(path);
  return rate;
}

double claim_complete(int processes, int items) {
  const auto path = fresh_file("queue.db");
  run([&]() -> asio::awaitable<void> {
    auto store = co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open(path));
    for (int i = 0; i < items; ++i) {
      lockstore::WorkDraft draft;
      draft.payload = fmt::format("item {}", i);
      co_await store.enqueue("queue", std::move(draft));
    }
  });
  const auto start = Clock::now();
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    const pid_t child = ::fork();
    if (child == 0) {
      run([&]() -> asio::awaitable<void> {
        auto store = co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open(path));
        for (;;) {
          auto claim = co_await store.claim("queue", fmt::format("p{}", p), 10s, 1);
          if (!claim) co_return;
          co_await store.complete(*claim);
        }
      });
      ::_exit(0);
    }
    children.push_back(child);
  }
  for (const pid_t child : children) ::waitpid(child, nullptr, 0);
  const double rate = items / seconds_since(start);
  remove_file(path);
  return rate;
}

// Ten live sessions (two parts each) and `orphans` unreferenced blobs, put
// in bulk; returns the file.
std::filesystem::path store_with_orphans(int orphans, int live_blobs = 0) {
  const auto path = fresh_file("gc.db");
  run([&]() -> asio::awaitable<void> {
    auto database = co_await lockstore::SqliteDatabase::open(path);
    auto store = co_await lockstore::SessionStore::open(database);
    for (int s = 0; s < 10; ++s) {
      lockstore::CommitRequest request;
      request.session_id = fmt::format("session-{}", s);
      request.parts.emplace("a", fmt::format("live a {}", s));
      request.parts.emplace("b", fmt::format("live b {}", s));
      co_await store.commit(std::move(request));
    }
    co_await lockstore::detail::run_on(
        database, [orphans, live_blobs](lockstore::detail::SqliteConnection& connection) {
          lockstore::detail::Transaction transaction(connection);
          for (int i = 0; i < orphans; ++i) lockstore::detail::store::put_blob(connection, fmt::format("orphan {}", i));
          for (int i = 0; i < live_blobs; ++i) {  // referenced (as a manifest's parts are), never queued
            const auto ref = lockstore::detail::store::put_blob(connection, fmt::format("live {}", i), true);
            lockstore::detail::store::add_ref(connection, ref.hash);
          }
          transaction.commit();
        });
  });
  return path;
}

// gc with nothing to delete, among `live_blobs` live blobs.
double idle_gc_seconds(int live_blobs) {
  const auto path = store_with_orphans(0, live_blobs);
  double seconds = 0;
  run([&]() -> asio::awaitable<void> {
    auto store = co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open(path));
    const auto start = Clock::now();
    const auto report = co_await store.gc();
    seconds = seconds_since(start);
    if (report.deleted_blob_count != 0) throw std::runtime_error("idle gc deleted something");
  });
  remove_file(path);
  return seconds;
}

// The longest a try_acquire + release on another connection took while gc
// deleted `orphans` blobs, and the same operation's longest time without gc.
std::pair<double, double> lock_wait_during_gc_ms(int orphans) {
  const auto path = fresh_file("gc-wait.db");
  std::atomic<bool> collecting{true};
  std::thread collector;
  auto longest_operation = [&](auto keep_going) {
    double longest = 0;
    run([&]() -> asio::awaitable<void> {
      auto database = co_await lockstore::SqliteDatabase::open(path);
      lockstore::SqliteLock lock(database, "bystander");
      int done = 0;
      while (keep_going(done)) {
        const auto asked = Clock::now();
        auto guard = co_await lock.try_acquire(lockstore::AdvisoryKey("k"), 30s);
        if (guard) co_await lock.release(std::move(*guard));
        longest = std::max(longest, seconds_since(asked) * 1e3);
        ++done;
      }
    });
    return longest;
  };
  {
    const auto prepared = store_with_orphans(0);
    std::filesystem::rename(prepared, path);
  }
  const double alone = longest_operation([](int done) { return done < 2000; });
  remove_file(path);
  std::filesystem::rename(store_with_orphans(orphans), path);
  collector = std::thread([&] {
    run([&]() -> asio::awaitable<void> {
      auto store = co_await lockstore::SessionStore::open(co_await lockstore::SqliteDatabase::open(path));
      co_await store.gc();
      collecting = false;
    });
  });
  const double during = longest_operation([&](int) { return collecting.load(); });
  collector.join();
  remove_file(path);
  return {during, alone};
}

double gc_seconds(int blobs) {
  const auto path = fresh_file("gc.db");
  double seconds = 0;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await lockstore::SqliteDatabase::open(path);
    auto store = co_await lockstore::SessionStore::open(database);
    for (int s = 0; s < 10; ++s) {  // ten live sessions, two parts each
      lockstore::CommitRequest request;
      request.session_id = fmt::format("session-{}", s);
      request.parts.emplace("a", fmt::format("live a {}", s));
      request.parts.emplace("b", fmt::format("live b {}", s));
      co_await store.commit(std::move(request));
    }
    // Orphans, in bulk.
    co_await lockstore::detail::run_on(database, [blobs](lockstore::detail::SqliteConnection& connection) {
      lockstore::detail::Transaction transaction(connection);
      for (int i = 0; i < blobs; ++i) lockstore::detail::store::put_blob(connection, fmt::format("orphan {}", i));
      transaction.commit();
    });
    const auto start = Clock::now();
    const auto report = co_await store.gc();
    seconds = seconds_since(start);
    if (report.deleted_blob_count != static_cast<std::size_t>(blobs)) throw std::runtime_error("gc missed orphans");
  });
  remove_file(path);
  return seconds;
}

// gc with nothing to delete, and the lock wait behind gc, at each size.
void print_gc_shape(const std::vector<int>& sizes) {
  for (const int blobs : sizes)
    fmt::print("{{\"benchmark\":\"gc_nothing_to_delete\",\"live_blobs\":{},\"seconds\":{:.4f}}}\n", blobs,
               idle_gc_seconds(blobs));
  const auto [during, alone] = lock_wait_during_gc_ms(sizes.back());
  fmt::print("{{\"benchmark\":\"lock_wait_during_gc\",\"orphans\":{},\"longest_ms\":{:.1f},"
             "\"baseline\":\"same_operation_without_gc\",\"baseline_longest_ms\":{:.1f}}}\n",
             sizes.back(), during, alone);
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::string_view(argv[1]) == "--smoke";
  if (argc > 1 && std::string_view(argv[1]) == "--commit-spin-sweep") {  // commits vs completion_spin
    for (const int spin_us : {100, 300, 1000}) {
      lockstore::SqliteOptions options;
      options.completion_spin = std::chrono::microseconds(spin_us);
      const double raw = raw_commits(3000);
      const double ours = store_commits(3000, options);
      fmt::print("{{\"benchmark\":\"commit_spin_sweep\",\"completion_spin_us\":{},\"commits_per_s\":{:.0f},"
                 "\"baseline_commits_per_s\":{:.0f},\"ratio\":{:.3f}}}\n", spin_us, ours, raw, ours / raw);
    }
    return 0;
  }
  const int commits = smoke ? 100 : 5000;
  const int items = smoke ? 100 : 4000;
  const std::vector<int> gc_sizes = smoke ? std::vector<int>{1000, 2000} : std::vector<int>{10'000, 100'000, 1'000'000};

  if (argc > 1 && std::string_view(argv[1]) == "--gc-wait") {  // the lock wait alone, at 10^6 orphans
    const auto [during, alone] = lock_wait_during_gc_ms(1'000'000);
    fmt::print("{{\"benchmark\":\"lock_wait_during_gc\",\"orphans\":{},\"longest_ms\":{:.1f},"
               "\"baseline\":\"same_operation_without_gc\",\"baseline_longest_ms\":{:.1f}}}\n",
               1'000'000, during, alone);
    return 0;
  }
  if (argc > 1 && std::string_view(argv[1]) == "--gc-only") {
    const std::vector<int> sizes{10'000, 100'000, 1'000'000};
    for (const int blobs : sizes) {
      const double seconds = gc_seconds(blobs);
      fmt::print("{{\"benchmark\":\"gc\",\"blobs\":{},\"seconds\":{:.3f},\"us_per_blob\":{:.2f}}}\n", blobs,
                 seconds, seconds * 1e6 / blobs);
    }
    print_gc_shape(sizes);
    return 0;
  }
  const double raw = raw_commits(commits);
  const double ours = store_commits(commits);
  fmt::print("{{\"benchmark\":\"commits\",\"commits_per_s\":{:.0f},\"baseline\":\"raw_sqlite3_same_transaction\","
             "\"baseline_commits_per_s\":{:.0f},\"ratio\":{:.3f}}}\n", ours, raw, ours / raw);
  for (const int processes : {1, 4})
    fmt::print("{{\"benchmark\":\"claim_complete\",\"processes\":{},\"items_per_s\":{:.0f}}}\n", processes,
               claim_complete(processes, items));
  for (const int blobs : gc_sizes) {
    const double seconds = gc_seconds(blobs);
    fmt::print("{{\"benchmark\":\"gc\",\"blobs\":{},\"seconds\":{:.3f},\"us_per_blob\":{:.2f}}}\n", blobs, seconds,
               seconds * 1e6 / blobs);
  }
  print_gc_shape(gc_sizes);
  return 0;
}
