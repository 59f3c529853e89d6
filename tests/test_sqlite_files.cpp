// What SqliteDatabase does with files that are not what it expects: another
// schema version, garbage, truncated or overwritten pages, a read-only
// directory, a file another process keeps locked, a read-only open, bad options.
#include "support/helpers.hpp"

#include <catch2/catch.hpp>
#include <lockstore/sqlite.hpp>
#include <lockstore/store.hpp>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <random>
#include <thread>

namespace lockstore::test {

using namespace std::chrono_literals;

namespace {

void set_user_version(const std::filesystem::path& path, int version) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const auto sql = fmt::format("PRAGMA user_version = {}", version);
  REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

template <class F>
std::optional<Error> error_of(F&& make) {
  try {
    run(make);
  } catch (const Error& error) {
    return error;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("a file from a newer schema version is refused naming both versions", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "future.db";
  run([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open(path); });
  set_user_version(path, 99);
  for (const bool read_only : {false, true}) {
    auto error = error_of([&]() -> asio::awaitable<void> {
      if (read_only) {
        co_await SqliteDatabase::open_readonly(path);
      } else {
        co_await SqliteDatabase::open(path);
      }
    });
    REQUIRE(error.has_value());
    CHECK(error->code() == errc::unsupported_schema);
    CHECK_THAT(error->what(), Catch::Contains("99") && Catch::Contains(fmt::format("version {}", detail::schema_version)));
    CHECK_THAT(error->what(), Catch::Contains("future.db"));
  }
}

TEST_CASE("another application's database is refused and left exactly as it was", "[sqlite][files]") {
  TempDir dir;
  struct Foreign {
    const char* name;
    const char* setup;
  };
  const Foreign files[] = {
      {"marked.db", "PRAGMA application_id = 1234; PRAGMA user_version = 2; CREATE TABLE app_state (x);"},
      {"versioned.db", "PRAGMA user_version = 2; CREATE TABLE app_migrations (step INTEGER);"},
      {"unversioned.db", "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');"},
  };
  for (const auto& foreign : files) {
    CAPTURE(foreign.name);
    const auto path = dir / foreign.name;
    {
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
      REQUIRE(sqlite3_exec(db, foreign.setup, nullptr, nullptr, nullptr) == SQLITE_OK);
      sqlite3_close(db);
    }
    const auto before = [&] {
      std::ifstream in(path, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    for (const bool read_only : {false, true}) {
      auto error = error_of([&]() -> asio::awaitable<void> {
        if (read_only) {
          co_await SqliteDatabase::open_readonly(path);
        } else {
          co_await SqliteDatabase::open(path);
        }
      });
      REQUIRE(error.has_value());
      CHECK(error->code() == errc::unsupported_schema);
      CHECK_THAT(error->what(), Catch::Contains("not a lockstore database") && Catch::Contains(foreign.name) &&
                                    Catch::Contains("user_version"));
    }
    std::ifstream in(path, std::ios::binary);
    const std::string after(std::istreambuf_iterator<char>(in), {});
    CHECK(after == before);  // not migrated, not switched to WAL
    CHECK_FALSE(std::filesystem::exists(path.string() + "-wal"));
  }
}

TEST_CASE("a lockstore file carries lockstore's application_id", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "marked.db";
  run([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open(path); });
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &statement, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(statement) == SQLITE_ROW);
  CHECK(sqlite3_column_int64(statement, 0) == 0x4C4B5354);
  sqlite3_finalize(statement);
  sqlite3_close(db);
}

TEST_CASE("a file with an unknown (negative) schema version is refused", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "odd.db";
  set_user_version(path, -3);
  auto error = error_of([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open(path); });
  REQUIRE(error.has_value());
  CHECK(error->code() == errc::unsupported_schema);
  CHECK_THAT(error->what(), Catch::Contains("-3"));
}

TEST_CASE("a file that is not a database gives a clear error", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "garbage.db";
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 7919) % 251));
  }
  for (const bool read_only : {false, true}) {
    auto error = error_of([&]() -> asio::awaitable<void> {
      if (read_only) {
        co_await SqliteDatabase::open_readonly(path);
      } else {
        co_await SqliteDatabase::open(path);
      }
    });
    REQUIRE(error.has_value());
    CHECK(error->code() == errc::corrupt_data);
    CHECK_THAT(error->what(), Catch::Contains("garbage.db") && Catch::Contains("not a database"));
  }
}

TEST_CASE("a missing file cannot be opened read-only", "[sqlite][files]") {
  TempDir dir;
  auto error = error_of([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open_readonly(dir / "absent.db"); });
  REQUIRE(error.has_value());
  CHECK(error->code() == errc::backend_failure);
  CHECK_THAT(error->what(), Catch::Contains("absent.db"));
}

TEST_CASE("a read-only open serves reads and refuses writes", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "locks.db";
  run([&]() -> asio::awaitable<void> {
    auto writable = co_await SqliteDatabase::open(path);
    SqliteLock writer(writable, "writer");
    auto guard = co_await writer.try_acquire(AdvisoryKey("visible"), 30s);
    REQUIRE(guard);

    auto reader_db = co_await SqliteDatabase::open_readonly(path);
    CHECK(reader_db.read_only());
    SqliteLock reader(reader_db, "reader");
    auto listed = co_await reader.list();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].key.str() == "visible");

    std::optional<Error> refused;
    try {
      auto taken = co_await reader.try_acquire(AdvisoryKey("other"), 30s);
      if (taken) taken->mark_released();
    } catch (const Error& error) {
      refused = error;
    }
    REQUIRE(refused.has_value());
    CHECK(refused->code() == errc::backend_failure);
    CHECK_THAT(refused->what(), Catch::Contains("read-only"));

    // Below the API too: the connection itself is read-only.
    std::optional<Error> raw_refused;
    try {
      co_await detail::run_on(
          reader_db, [](detail::SqliteConnection& connection) { connection.exec("DELETE FROM lockstore_leases"); });
    } catch (const Error& error) {
      raw_refused = error;
    }
    REQUIRE(raw_refused.has_value());
    CHECK_THAT(raw_refused->what(), Catch::Contains("readonly"));
    co_await writer.release(std::move(*guard));
  });
}

TEST_CASE("bad options and owners are refused with invalid_argument", "[sqlite][files]") {
  TempDir dir;
  SqliteOptions bad_poll;
  bad_poll.poll_interval = 0ms;
  auto error = error_of([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open(dir / "x.db", bad_poll); });
  REQUIRE(error.has_value());
  CHECK(error->code() == errc::invalid_argument);
  CHECK_THAT(error->what(), Catch::Contains("poll_interval"));

  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "x.db");
    std::optional<errc> code;
    try {
      SqliteLock nobody(database, "");
    } catch (const Error& e) {
      code = static_cast<errc>(e.code().value());
    }
    CHECK(code == errc::invalid_argument);
  });
}

TEST_CASE("an in-memory database works as a lock table", "[sqlite][files]") {
  run([&]() -> asio::awaitable<void> {
    SqliteLock lock(co_await SqliteDatabase::open_memory(), "solo");
    auto guard = co_await lock.try_acquire(AdvisoryKey("m"), 5s);
    REQUIRE(guard);
    co_await lock.release(std::move(*guard));
  });
}

TEST_CASE("dropping the last handle finishes queued statements and closes the file", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "closing.db";
  run([&]() -> asio::awaitable<void> {
    SqliteLock lock(co_await SqliteDatabase::open(path), "closer");
    auto guard = co_await lock.try_acquire(AdvisoryKey("kept"), 60s);
    REQUIRE(guard);
    guard->mark_released();  // the lease stays in the file
  });
  // The handle is gone: the file must be closed and its lease visible to a new connection.
  run([&]() -> asio::awaitable<void> {
    SqliteLock lock(co_await SqliteDatabase::open(path), "observer");
    auto listed = co_await lock.list();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].owner == "closer");
  });
}

namespace {

/// Every step a user would take on a file, each allowed to fail only with a
/// lockstore::Error naming the file; returns the errors (step: message). Any
/// other exception escapes and fails the test; a hang hits the test timeout.
std::vector<std::pair<std::string, Error>> use_every_way(const std::filesystem::path& path) {
  std::vector<std::pair<std::string, Error>> errors;
  run([&]() -> asio::awaitable<void> {
    std::optional<SqliteDatabase> database;
    try {
      auto opened = co_await SqliteDatabase::open(path);
      database.emplace(std::move(opened));
    } catch (const Error& error) {
      errors.emplace_back("open", error);
    }
    if (!database) co_return;
    SqliteLock lock(*database, "prober");
    try {
      auto guard = co_await lock.try_acquire(AdvisoryKey("lease-7"), 5s);
      if (guard) co_await lock.release(std::move(*guard));
    } catch (const Error& error) {
      errors.emplace_back("try_acquire", error);
    }
    try {
      const auto leases = co_await lock.list();
      CHECK(leases.size() <= 200);
    } catch (const Error& error) {
      errors.emplace_back("list", error);
    }
    try {
      auto store = co_await SessionStore::open(*database);
      const auto head = co_await store.load("session");
      if (head) {
        const auto checkpoint = co_await store.get_checkpoint(head->checkpoint_ref);
        CHECK((!checkpoint || checkpoint->parts.size() <= 1));
      }
      CommitRequest request;
      request.session_id = "session";
      request.expected_head_revision = head ? head->head_revision : 0;
      request.parts.emplace("state", "after the damage");
      co_await store.commit(std::move(request));
      co_await store.gc();
    } catch (const Error& error) {
      errors.emplace_back("store", error);
    }
  });
  return errors;
}

/// A database of 200 leases and 50 commits (a few dozen pages), closed, with
/// its WAL folded into the main file.
void fill_database(const std::filesystem::path& path) {
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);
    SqliteLock lock(database, "filler");
    for (int i = 0; i < 200; ++i) {
      auto guard = co_await lock.try_acquire(AdvisoryKey(fmt::format("lease-{}", i)), 3'600'000ms);
      REQUIRE(guard);
      guard->mark_released();
    }
    auto store = co_await SessionStore::open(database);
    for (std::uint64_t revision = 0; revision < 50; ++revision) {
      CommitRequest request;
      request.session_id = "session";
      request.expected_head_revision = revision;
      request.parts.emplace("state", std::string(2000, static_cast<char>('a' + revision % 26)));
      co_await store.commit(std::move(request));
    }
  });
  REQUIRE_FALSE(std::filesystem::exists(path.string() + "-wal"));
}

}  // namespace

TEST_CASE("truncated files and overwritten pages give clear errors, never a crash or a hang", "[sqlite][files]") {
  TempDir dir;
  const auto pristine = dir / "pristine.db";
  fill_database(pristine);
  const auto size = std::filesystem::file_size(pristine);
  REQUIRE(size > 20 * 4096);

  struct Damage {
    std::string name;
    bool must_be_noticed;  // some damage hits pages no step reads
    std::function<void(const std::filesystem::path&)> apply;
  };
  std::mt19937 random(20261123);
  auto overwrite = [&](const std::filesystem::path& path, std::uintmax_t offset, std::size_t length) {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(offset));
    for (std::size_t i = 0; i < length; ++i) file.put(static_cast<char>(random()));
  };
  const std::vector<Damage> damages{
      {"truncated to half", true, [&](const auto& path) { std::filesystem::resize_file(path, size / 2); }},
      {"truncated inside page 2", true, [&](const auto& path) { std::filesystem::resize_file(path, 4096 + 1000); }},
      {"truncated inside the header", true, [&](const auto& path) { std::filesystem::resize_file(path, 60); }},
      {"page 1 overwritten after the header", true, [&](const auto& path) { overwrite(path, 100, 3996); }},
      {"five random pages overwritten", false,
       [&](const auto& path) {
         for (int i = 0; i < 5; ++i) overwrite(path, 4096 * (1 + random() % (size / 4096 - 1)), 4096);
       }},
      {"every page but the first overwritten", true, [&](const auto& path) { overwrite(path, 4096, size - 4096); }},
  };
  for (const auto& damage : damages) {
    INFO(damage.name);
    const auto path = dir / "damaged.db";
    for (const auto* suffix : {"", "-wal", "-shm", "-lockstore-wake"}) std::filesystem::remove(path.string() + suffix);
    std::filesystem::copy_file(pristine, path);
    damage.apply(path);
    const auto started = std::chrono::steady_clock::now();
    const auto errors = use_every_way(path);
    CHECK(std::chrono::steady_clock::now() - started < 20s);
    if (damage.must_be_noticed) CHECK_FALSE(errors.empty());
    for (const auto& [step, error] : errors) {
      INFO(step << ": " << error.what());
      CHECK((error.code() == errc::corrupt_data || error.code() == errc::backend_failure));
      CHECK_THAT(error.what(), Catch::Contains("damaged.db"));
    }
  }
}

TEST_CASE("a read-only directory gives a clear error naming the file", "[sqlite][files]") {
  TempDir dir;
  const auto locked_dir = dir / "read-only";
  std::filesystem::create_directory(locked_dir);
  fill_database(locked_dir / "existing.db");
  REQUIRE(::chmod(locked_dir.c_str(), 0555) == 0);
  // Root ignores directory permissions, so the probe runs as nobody.
  const auto statuses = run_children(1, [&](int) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 10;
    int failures = 0;
    for (const auto* name : {"new.db", "existing.db"}) {
      const auto errors = use_every_way(locked_dir / name);
      if (errors.empty()) {
        std::fprintf(stderr, "%s in a read-only directory: every step succeeded\n", name);
        ++failures;
      }
      for (const auto& [step, error] : errors) {
        const std::string what = error.what();
        if (error.code() != errc::backend_failure || what.find(name) == std::string::npos) {
          std::fprintf(stderr, "%s: %s: unclear error: %s\n", name, step.c_str(), what.c_str());
          ++failures;
        }
      }
    }
    return failures;
  });
  ::chmod(locked_dir.c_str(), 0755);
  CHECK(statuses == std::vector<int>{0});
}

TEST_CASE("a file another process keeps locked past busy_timeout gives a clear error, then works again", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "busy.db";
  fill_database(path);
  const auto locked = dir / "locked";
  const auto done = dir / "done";
  const auto statuses = run_children(
      1,
      [&](int) {
        sqlite3* db = nullptr;
        if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return 1;
        if (sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) return 2;
        std::ofstream(locked).put('1');
        // Held until the parent's attempt is over (bounded: a parent that
        // died must not keep this child), not for a fixed time it may overrun.
        for (int i = 0; i < 3000 && !std::filesystem::exists(done); ++i) std::this_thread::sleep_for(10ms);
        const bool told = std::filesystem::exists(done);
        sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
        sqlite3_close(db);
        return told ? 0 : 3;
      },
      [&] {
        // However the attempt ends, the child may then commit.
        struct TellChild {
          std::filesystem::path done;
          ~TellChild() { std::ofstream(done).put('1'); }
        } tell_child{done};
        for (int i = 0; i < 3000 && !std::filesystem::exists(locked); ++i) std::this_thread::sleep_for(10ms);
        REQUIRE(std::filesystem::exists(locked));
        SqliteOptions options;
        options.busy_timeout = 200ms;
        run([&]() -> asio::awaitable<void> {
          std::optional<Error> refused;
          const auto started = std::chrono::steady_clock::now();
          try {
            auto database = co_await SqliteDatabase::open(path, options);
            SqliteLock lock(database, "patient");
            auto guard = co_await lock.try_acquire(AdvisoryKey("busy"), 5s);
            if (guard) guard->mark_released();
          } catch (const Error& error) {
            refused = error;
          }
          const auto waited = std::chrono::steady_clock::now() - started;
          REQUIRE(refused.has_value());
          CHECK(refused->code() == errc::backend_failure);
          CHECK_THAT(refused->what(), Catch::Contains("busy.db") && Catch::Contains("locked"));
          // Gave up after busy_timeout (200 ms), not by outwaiting the other,
          // which holds on until this attempt is over (up to 30 s), nor after
          // the default busy_timeout (15 s). 5 s leaves the open and a loaded
          // sanitizer run room.
          CHECK(waited < 5s);
        });
      });
  CHECK(statuses == std::vector<int>{0});
  // The other process is done: the same file works, and nothing is held.
  run([&]() -> asio::awaitable<void> {
    SqliteLock lock(co_await SqliteDatabase::open(path), "later");
    auto guard = co_await lock.try_acquire(AdvisoryKey("busy"), 5s);
    REQUIRE(guard);
    co_await lock.release(std::move(*guard));
    const auto leases = co_await lock.list();
    CHECK(leases.size() == 200);  // the filler's, nothing left by the refused attempt
  });
}

TEST_CASE("a statement blocked by another connection's write goes on within milliseconds of its commit", "[sqlite][files]") {
  // SQLite's own busy handler sleeps up to 100 ms at a time (after 328 ms,
  // it looks at 428 and 528 ms), so a commit at 480 ms would be seen ~48 ms
  // late. lockstore's looks again at least every ~1.5 ms.
  TempDir dir;
  const auto path = dir / "busy.db";
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);
    SqliteLock lock(database, "patient");
    // SQLite's handler would be >= 48 ms late in every round; lockstore's is
    // about 1 ms late, but a loaded sanitizer run can stall a round past
    // 30 ms: the best of three rounds counts.
    auto best = std::chrono::nanoseconds::max();
    for (int round = 0; round < 3 && best >= 30ms; ++round) {
      std::atomic<bool> locked{false};
      std::atomic<std::int64_t> committed_ns{0};
      std::thread writer([&] {
        sqlite3* db = nullptr;
        sqlite3_open(path.c_str(), &db);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK) {
          locked = true;
          std::this_thread::sleep_for(480ms);
          sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
          committed_ns = std::chrono::steady_clock::now().time_since_epoch().count();
        }
        locked = true;  // even on failure: the REQUIRE below reports it
        sqlite3_close(db);
      });
      while (!locked) std::this_thread::sleep_for(1ms);
      const AdvisoryKey key(fmt::format("blocked-{}", round));
      auto attempt = lock.try_acquire(key, 5s);
      auto guard = co_await std::move(attempt);
      const auto done_ns = std::chrono::steady_clock::now().time_since_epoch().count();
      writer.join();
      REQUIRE(committed_ns != 0);
      REQUIRE(guard);
      const auto late = std::chrono::nanoseconds(done_ns - committed_ns);
      const double late_ms = std::chrono::duration<double, std::milli>(late).count();
      INFO("round " << round << ": granted " << late_ms << " ms after the other commit");
      best = std::min(best, late);
      co_await lock.release(std::move(*guard));
    }
    const double best_ms = std::chrono::duration<double, std::milli>(best).count();
    INFO("best round: granted " << best_ms << " ms after the other commit");
    CHECK(best < 30ms);
  });
}

}  // namespace lockstore::test

namespace lockstore::test {

TEST_CASE("a lease statement that waits for another connection's write lock gives the full TTL from when it runs",
          "[sqlite][files]") {
  // Another connection holds the write lock for 1.5 s (a long GC, a big
  // commit, another program). An extend(1 s) and a try_acquire(1 s) queued
  // meanwhile must not write an expiry computed from a clock read before
  // that wait: such an expiry is already past when the statement commits,
  // and a contender would be granted at once.
  TempDir dir;
  const auto path = dir / "slow.db";
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);
    SqliteLock alice(database, "alice");
    SqliteLock bob(database, "bob");
    auto held = co_await alice.try_acquire(AdvisoryKey("extended"), 3s);
    REQUIRE(held);
    std::atomic<bool> locked{false};
    std::thread writer([&] {
      sqlite3* db = nullptr;
      sqlite3_open(path.c_str(), &db);
      if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK) {
        locked = true;
        std::this_thread::sleep_for(1500ms);
        sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
      }
      locked = true;
      sqlite3_close(db);
    });
    while (!locked) std::this_thread::sleep_for(1ms);
    const auto sent = std::chrono::steady_clock::now();
    auto extending = alice.extend(*held, 1s);
    const bool extended = co_await std::move(extending);
    auto taking = alice.try_acquire(AdvisoryKey("fresh"), 1s);
    auto fresh = co_await std::move(taking);
    writer.join();
    CHECK(extended);
    REQUIRE(fresh);
    // Both leases run 1 s from when their statements ran (after >= 1.4 s of
    // waiting), so bob is refused on both keys now.
    auto contender = co_await bob.try_acquire(AdvisoryKey("extended"), 5s);
    CHECK_FALSE(contender.has_value());
    if (contender) co_await bob.release(std::move(*contender));
    auto other = co_await bob.try_acquire(AdvisoryKey("fresh"), 5s);
    CHECK_FALSE(other.has_value());
    if (other) co_await bob.release(std::move(*other));
    // The holder's own view stays conservative: from when it asked.
    CHECK(held->valid_until() <= sent + 1s + 50ms);
    co_await alice.release(std::move(*held));
    co_await alice.release(std::move(*fresh));
  });
}

TEST_CASE("fences never go back when the database file is deleted and created again", "[sqlite][files]") {
  TempDir dir;
  const auto path = dir / "recreated.db";
  std::uint64_t before = 0;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);
    SqliteLock lock(database, "alice");
    for (int i = 0; i < 3; ++i) {
      auto guard = co_await lock.acquire(AdvisoryKey("fenced"), 5s, 5s);
      before = guard.fence();
      co_await lock.release(std::move(guard));
    }
  });
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(path);
    SqliteLock lock(database, "alice");
    auto guard = co_await lock.acquire(AdvisoryKey("fenced"), 5s, 5s);
    CHECK(guard.fence() > before);
    co_await lock.release(std::move(guard));
  });
}

TEST_CASE("SqliteOptions::synchronous sets the file's synchronous level", "[sqlite][files]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    std::vector<std::pair<SqliteSynchronous, int>> levels;
    levels.emplace_back(SqliteSynchronous::normal, 1);
    levels.emplace_back(SqliteSynchronous::full, 2);
    levels.emplace_back(SqliteSynchronous::extra, 3);
    for (const auto& [level, expected] : levels) {
      SqliteOptions options;
      options.synchronous = level;
      auto opening = SqliteDatabase::open(dir / fmt::format("sync-{}.db", expected), options);
      auto database = co_await std::move(opening);
      auto reading = detail::run_on(
          database, [](detail::SqliteConnection& connection) { return connection.pragma_int("synchronous"); });
      const auto found = co_await std::move(reading);
      CHECK(found == expected);
    }
    SqliteOptions bad;
    bad.synchronous = static_cast<SqliteSynchronous>(7);
    std::optional<errc> code;
    try {
      auto opening = SqliteDatabase::open(dir / "bad.db", bad);
      co_await std::move(opening);
    } catch (const Error& error) {
      code = static_cast<errc>(error.code().value());
    }
    CHECK(code == errc::invalid_argument);
  });
}

}  // namespace lockstore::test

namespace lockstore::test {

TEST_CASE("a wake file that cannot get its pages on a full disk leaves waiters polling, with no SIGBUS",
          "[sqlite][files]") {
  if (::geteuid() != 0) {
    WARN("needs root to mount a small tmpfs; skipped");
    return;
  }
  TempDir dir;
  const auto mount_point = dir / "small";
  std::filesystem::create_directory(mount_point);
  REQUIRE(::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=2m") == 0);
  struct Unmount {
    std::filesystem::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};
  const auto path = mount_point / "full.db";
  // In a child: a SIGBUS would kill it, and this process would see the signal.
  const auto statuses = run_children(1, [&](int) {
    bool active = true;
    run([&]() -> asio::awaitable<void> {
      // The first handle gives SQLite its -wal and -shm files while there is
      // room; then the disk fills up, and a second handle makes a new wake file.
      auto first = co_await SqliteDatabase::open(path);
      std::filesystem::remove(path.string() + "-lockstore-wake");
      {
        std::ofstream filler(mount_point / "filler", std::ios::binary);
        const std::string block(4096, 'x');
        while (filler.write(block.data(), static_cast<std::streamsize>(block.size()))) {
        }
      }
      auto second = co_await SqliteDatabase::open(path);
      active = detail::wakeups_of(second).board() != nullptr && detail::wakeups_of(second).board()->active();
      SqliteLock lock(second, "full");
      auto listing = lock.list();
      co_await std::move(listing);  // reads still work
    });
    return active ? 2 : 0;
  });
  REQUIRE(statuses.size() == 1);
  CHECK(statuses[0] == 0);  // not -SIGBUS (-7), and the board is inactive: waiters poll
}

TEST_CASE("the wake file follows the database's resolved path and its permissions", "[sqlite][files]") {
  TempDir dir;
  const auto real = dir / "real.db";
  const auto link = dir / "link.db";
  run([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open(real); });
  ::chmod(real.c_str(), 0660);
  std::filesystem::remove(real.string() + "-lockstore-wake");
  std::filesystem::create_symlink(real, link);
  run([&]() -> asio::awaitable<void> {
    auto through_link = co_await SqliteDatabase::open(link);
    auto direct = co_await SqliteDatabase::open(real);
    CHECK(detail::wakeups_of(through_link).board()->active());
    CHECK(detail::wakeups_of(direct).board()->active());
  });
  CHECK_FALSE(std::filesystem::exists(link.string() + "-lockstore-wake"));
  struct stat status {};
  REQUIRE(::stat((real.string() + "-lockstore-wake").c_str(), &status) == 0);
  CHECK((status.st_mode & 0777) == 0660);
}

}  // namespace lockstore::test
