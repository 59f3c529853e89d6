// Fenced writes and the fence gate on SQLite: the caller's statements commit
// only while the guard's lease is live, a paused holder's late write is
// refused, and the gate admits only fences that do not go back.
#include "support/helpers.hpp"
#include "support/zombie.hpp"

#include <catch2/catch.hpp>
#include <lockstore/sqlite.hpp>
#include <lockstore/store.hpp>

#include <signal.h>

#include <array>
#include <utility>
#include <atomic>
#include <thread>

namespace lockstore::test {

using namespace std::chrono_literals;

namespace {

SqlStatement statement(std::string sql, std::vector<SqlValue> params = {}) {
  SqlStatement result;
  result.sql = std::move(sql);
  result.params = std::move(params);
  return result;
}

asio::awaitable<void> create_notes(SqliteLock& lock, const LockGuard& guard) {
  std::vector<SqlStatement> create;
  create.push_back(statement("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)"));
  auto creating = lock.fenced(guard, std::move(create));
  co_await std::move(creating);
}

asio::awaitable<std::vector<std::string>> note_bodies(SqliteLock& lock) {
  auto guard = co_await lock.acquire(AdvisoryKey("notes reader"), 5s, 5s);
  std::vector<SqlStatement> select;
  select.push_back(statement("SELECT body FROM notes ORDER BY id"));
  auto reading = lock.fenced(guard, std::move(select));
  auto results = co_await std::move(reading);
  co_await lock.release(std::move(guard));
  std::vector<std::string> bodies;
  for (const auto& row : results.at(0).rows) bodies.push_back(std::get<std::string>(row.at(0)));
  co_return bodies;
}

struct SqliteZombieFixture {
  std::filesystem::path path;
  asio::awaitable<SqliteLock> make_lock(std::string owner) {
    auto database = co_await SqliteDatabase::open(path);
    co_return SqliteLock(database, std::move(owner));
  }
  asio::awaitable<void> write(SqliteLock& lock, const LockGuard& guard, std::string value) {
    std::vector<SqlStatement> insert;
    insert.push_back(statement("INSERT INTO notes (body) VALUES (?1)", {SqlValue(std::move(value))}));
    auto writing = lock.fenced(guard, std::move(insert));
    co_await std::move(writing);
  }
};

/// The code of the lockstore::Error `operation` throws, or no error.
asio::awaitable<boost::system::error_code> code_of(asio::awaitable<bool> operation) {
  try {
    co_await std::move(operation);
  } catch (const Error& error) {
    co_return error.code();
  }
  co_return boost::system::error_code{};
}

}  // namespace

TEST_CASE("a fenced write commits every statement while the lease is live and returns their rows", "[fenced]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "app.db");
    SqliteLock lock(database, "writer");
    auto guard = co_await lock.acquire(AdvisoryKey("invoice:42"), 30s, 5s);
    co_await create_notes(lock, guard);
    std::vector<SqlStatement> statements;
    statements.push_back(statement("CREATE TABLE IF NOT EXISTS unrelated (x)"));
    statements.push_back(statement("INSERT INTO notes (body) VALUES (?1), (?2)", {SqlValue(std::string("a")), SqlValue(std::string("b"))}));
    statements.push_back(statement("UPDATE notes SET body = body || ?1 WHERE body = 'a'", {SqlValue(std::string("!"))}));
    statements.push_back(statement("SELECT id, body, ?1, ?2, ?3, NULL FROM notes ORDER BY id",
                                   {SqlValue(std::int64_t{7}), SqlValue(1.5), SqlValue(SqlBlob{std::string("\0x", 2)})}));
    auto writing = lock.fenced(guard, std::move(statements));
    const auto results = co_await std::move(writing);
    REQUIRE(results.size() == 4);
    CHECK(results[0].changed == 0);  // DDL changes no rows
    CHECK(results[1].changed == 2);
    CHECK(results[2].changed == 1);
    CHECK(results[3].changed == 0);
    REQUIRE(results[3].rows.size() == 2);
    const auto& first = results[3].rows[0];
    REQUIRE(first.size() == 6);
    CHECK(std::get<std::int64_t>(first[0]) == 1);
    CHECK(std::get<std::string>(first[1]) == "a!");
    CHECK(std::get<std::int64_t>(first[2]) == 7);
    CHECK(std::get<double>(first[3]) == 1.5);
    CHECK(std::get<SqlBlob>(first[4]).bytes == std::string("\0x", 2));
    CHECK(std::holds_alternative<std::nullptr_t>(first[5]));
    co_await lock.release(std::move(guard));
    const auto bodies = co_await note_bodies(lock);
    CHECK(bodies == std::vector<std::string>{"a!", "b"});
  });
}

TEST_CASE("a fenced write after the lease expired or was taken over is refused with lock_lost and writes nothing",
          "[fenced]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "app.db");
    SqliteLock first(database, "first");
    SqliteLock second(database, "second");
    const AdvisoryKey key("report");
    auto setup = co_await first.acquire(AdvisoryKey("setup"), 5s, 5s);
    co_await create_notes(first, setup);
    co_await first.release(std::move(setup));

    auto expired = co_await first.acquire(key, 50ms, 5s);
    co_await sleep_for(120ms);
    std::vector<SqlStatement> late;
    late.push_back(statement("INSERT INTO notes (body) VALUES ('expired')"));
    std::optional<Error> refused;
    try {
      auto writing = first.fenced(expired, std::move(late));
      co_await std::move(writing);
    } catch (const Error& error) {
      refused = error;
    }
    REQUIRE(refused.has_value());
    CHECK(refused->code() == errc::lock_lost);
    CHECK_THAT(refused->what(), Catch::Contains("'report'") && Catch::Contains("nothing was written"));

    // Taken by another holder: the old guard is fenced out even while that
    // holder's lease is live.
    auto successor = co_await second.acquire(key, 30s, 5s);
    std::vector<SqlStatement> stale;
    stale.push_back(statement("INSERT INTO notes (body) VALUES ('stale')"));
    std::optional<Error> fenced_out;
    try {
      auto writing = first.fenced(expired, std::move(stale));
      co_await std::move(writing);
    } catch (const Error& error) {
      fenced_out = error;
    }
    REQUIRE(fenced_out.has_value());
    CHECK(fenced_out->code() == errc::lock_lost);
    co_await second.release(std::move(successor));
    co_await first.release(std::move(expired));
    const auto bodies = co_await note_bodies(first);
    CHECK(bodies.empty());
  });
}

TEST_CASE("a failing statement rolls back the fenced write's earlier statements", "[fenced]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "app.db");
    SqliteLock lock(database, "writer");
    auto guard = co_await lock.acquire(AdvisoryKey("k"), 30s, 5s);
    co_await create_notes(lock, guard);
    std::vector<SqlStatement> statements;
    statements.push_back(statement("INSERT INTO notes (body) VALUES ('kept?')"));
    statements.push_back(statement("INSERT INTO notes (body) VALUES ('kept?')"));  // UNIQUE fails
    std::optional<Error> failed;
    try {
      auto writing = lock.fenced(guard, std::move(statements));
      co_await std::move(writing);
    } catch (const Error& error) {
      failed = error;
    }
    REQUIRE(failed.has_value());
    CHECK(failed->code() == errc::backend_failure);
    CHECK_THAT(failed->what(), Catch::Contains("UNIQUE"));
    co_await lock.release(std::move(guard));
    const auto bodies = co_await note_bodies(lock);
    CHECK(bodies.empty());
  });
}

TEST_CASE("fenced refuses statements that end the transaction or touch lockstore's tables, and bad input", "[fenced]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "app.db");
    co_await SessionStore::open(database);  // the store's tables and triggers too
    SqliteLock lock(database, "writer");
    const AdvisoryKey key("k");
    auto guard = co_await lock.acquire(key, 30s, 5s);
    co_await create_notes(lock, guard);
    const auto refusal = [&](std::string sql) -> asio::awaitable<std::string> {
      std::vector<SqlStatement> statements;
      statements.push_back(statement("INSERT INTO notes (body) VALUES ('before')"));
      statements.push_back(statement(std::move(sql)));
      try {
        auto writing = lock.fenced(guard, std::move(statements));
        co_await std::move(writing);
      } catch (const Error& error) {
        co_return error.code() == errc::invalid_argument ? std::string(error.what()) : "wrong code";
      }
      co_return "accepted";
    };
    // Each statement, and why it is refused.
    static constexpr std::array<std::pair<const char*, const char*>, 23> refused = {{
        {"COMMIT", "not authorized"},
        {"ROLLBACK", "not authorized"},
        {"SAVEPOINT s", "not authorized"},
        {"ATTACH 'other.db' AS other", "not authorized"},
        {"PRAGMA journal_mode = DELETE", "not authorized"},
        {"UPDATE lockstore_leases SET expires_ms = 0", "not authorized"},
        {"DELETE FROM lockstore_leases", "not authorized"},
        {"DROP TABLE lockstore_leases", "not authorized"},
        {"INSERT INTO notes (body) VALUES ('x'); DELETE FROM notes", "more than one statement"},
        {"INSERT INTO notes (body) VALUES (?1)", "takes 1 parameters, 0"},
        {"SELEC 1", "syntax error"},
        {"", "empty"},
        // What would take the place of lockstore's tables, or run writes
        // later unchecked: temp objects, triggers, other spellings of its names.
        {"CREATE TEMP VIEW lockstore_leases AS SELECT 1 AS key", "not authorized"},
        {"CREATE TEMP TABLE lockstore_leases (key TEXT, token TEXT, expires_ms INTEGER)", "not authorized"},
        {"CREATE TEMP TABLE scratch (x)", "not authorized"},
        {"CREATE TRIGGER bump AFTER INSERT ON notes BEGIN UPDATE notes SET body = 'x'; END", "not authorized"},
        {"DROP TRIGGER lockstore_gc_queue_inserted", "not authorized"},
        {"CREATE TABLE LOCKSTORE_FENCE_GATE (resource TEXT PRIMARY KEY, fence INTEGER)", "not authorized"},
        {"UPDATE \"LOCKSTORE_LEASES\" SET expires_ms = 0", "not authorized"},
        {"INSERT INTO main.Lockstore_Leases SELECT * FROM main.lockstore_leases", "not authorized"},
        {"CREATE INDEX lockstore_x ON notes (body)", "not authorized"},
        {"ANALYZE", "not authorized"},
        {"REINDEX", "not authorized"}}};
    for (const auto& entry : refused) {
      auto message = co_await refusal(entry.first);
      INFO(entry.first);
      CHECK_THAT(message, Catch::Contains(entry.second));
    }
    // The lease is still this guard's, and nothing was written.
    const bool extended = co_await lock.extend(guard, 30s);
    CHECK(extended);
    co_await lock.release(std::move(guard));
    const auto bodies = co_await note_bodies(lock);
    CHECK(bodies.empty());

    std::optional<Error> released;
    try {
      std::vector<SqlStatement> none;
      auto writing = lock.fenced(guard, std::move(none));
      co_await std::move(writing);
    } catch (const Error& error) {
      released = error;
    }
    REQUIRE(released.has_value());
    CHECK(released->code() == errc::invalid_argument);
    CHECK_THAT(released->what(), Catch::Contains("was released"));
  });
}

TEST_CASE("SQLite: a holder paused with SIGSTOP past its lease cannot make its fenced write and the successor's data "
          "stays",
          "[fenced][processes]") {
  TempDir dir;
  SqliteZombieFixture fixture{dir / "app.db"};
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await fixture.make_lock("setup");
    auto guard = co_await lock.acquire(AdvisoryKey("setup"), 5s, 5s);
    co_await create_notes(lock, guard);
    co_await lock.release(std::move(guard));
  });
  const auto outcome = run_zombie_holder(fixture, dir.path(), AdvisoryKey("zombie key"), 300ms);
  CHECK(outcome == ZombieWrite::refused_lock_lost);
  const auto bodies = run([&]() -> asio::awaitable<std::vector<std::string>> {
    auto lock = co_await fixture.make_lock("reader");
    co_return co_await note_bodies(lock);
  });
  CHECK(bodies == std::vector<std::string>{"successor"});
}

TEST_CASE("the fence gate admits a fence only when it is at least every fence admitted before", "[fenced][gate]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "app.db");
    SqliteLock lock(database, "gate");
    const bool first = co_await lock.admit("bucket/report.csv", 10);
    const bool same_again = co_await lock.admit("bucket/report.csv", 10);
    const bool larger = co_await lock.admit("bucket/report.csv", 12);
    const bool smaller = co_await lock.admit("bucket/report.csv", 11);
    const bool independent = co_await lock.admit("other", 1);
    CHECK(first);
    CHECK(same_again);
    CHECK(larger);
    CHECK_FALSE(smaller);
    CHECK(independent);
    auto reopened = co_await SqliteDatabase::open(dir / "app.db");
    SqliteLock other(reopened, "gate-2");
    const bool remembered = co_await other.admit("bucket/report.csv", 11);
    CHECK_FALSE(remembered);
    const auto empty = co_await code_of(lock.admit("", 1));
    CHECK(empty == errc::invalid_argument);
    const auto huge = co_await code_of(lock.admit("r", std::uint64_t{1} << 63));
    CHECK(huge == errc::invalid_argument);
  });
}

TEST_CASE("the fence gate is atomic across connections racing on threads: a refused fence is below one admitted",
          "[fenced][gate]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> { co_await SqliteDatabase::open(dir / "app.db"); });
  constexpr int threads = 4, per_thread = 200;
  struct Call {
    std::uint64_t fence;
    bool admitted;
    std::chrono::steady_clock::time_point started, ended;
  };
  std::vector<std::vector<Call>> calls(threads);
  std::vector<std::thread> racers;
  for (int t = 0; t < threads; ++t) {
    racers.emplace_back([&, t] {
      run([&]() -> asio::awaitable<void> {
        auto database = co_await SqliteDatabase::open(dir / "app.db");
        SqliteLock lock(database, fmt::format("racer-{}", t));
        for (int i = 0; i < per_thread; ++i) {
          // Interleaved fences: thread t sends t + 1, t + 1 + threads, ...
          const auto fence = static_cast<std::uint64_t>(i * threads + t + 1);
          const auto started = std::chrono::steady_clock::now();
          const bool admitted = co_await lock.admit("shared", fence);
          calls[static_cast<std::size_t>(t)].push_back(Call{fence, admitted, started, std::chrono::steady_clock::now()});
        }
      });
    });
  }
  for (auto& racer : racers) racer.join();
  std::vector<Call> all;
  for (const auto& list : calls) all.insert(all.end(), list.begin(), list.end());
  std::uint64_t largest_admitted = 0;
  std::size_t violations = 0;
  for (const auto& call : all) {
    if (call.admitted) largest_admitted = std::max(largest_admitted, call.fence);
    // Linearizable: a call that began after a larger fence's admission had
    // returned must be refused.
    if (!call.admitted) continue;
    for (const auto& earlier : all)
      if (earlier.admitted && earlier.ended < call.started && earlier.fence > call.fence) ++violations;
  }
  CHECK(violations == 0);
  CHECK(largest_admitted == static_cast<std::uint64_t>(threads * per_thread));
  // No smaller fence overwrote a larger one: the gate holds the largest.
  const bool below = run([&]() -> asio::awaitable<bool> {
    auto database = co_await SqliteDatabase::open(dir / "app.db");
    SqliteLock lock(database, "checker");
    co_return co_await lock.admit("shared", largest_admitted - 1);
  });
  CHECK_FALSE(below);
}

TEST_CASE("a SessionStore commit fenced by the session lock's guard is made while the lease is live and refused "
          "with lock_lost after it ran out",
          "[fenced][store]") {
  TempDir dir;
  run([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(dir / "agents.db");
    auto store = co_await SessionStore::open(database);
    SqliteLock turn_lock(database, "runtime-1");
    SqliteLock next_lock(database, "runtime-2");
    const TenantId tenant("acme");
    const auto key = AdvisoryKey::for_session(tenant, "thread-1");
    auto guard = co_await turn_lock.acquire(key, 100ms, 5s);

    CommitRequest first;
    first.session_id = "thread-1";
    first.parts.emplace("state", "turn 1");
    first.lease = LeaseCheck::of(guard);
    auto committing = store.commit(std::move(first));
    const auto made = co_await std::move(committing);
    CHECK(made.head_revision == 1);

    // The turn outlives its lease; another runtime takes the session.
    co_await sleep_for(200ms);
    auto successor = co_await next_lock.acquire(key, 30s, 5s);
    CommitRequest late;
    late.session_id = "thread-1";
    late.expected_head_revision = 1;
    late.parts.emplace("state", "turn 1, too late");
    late.lease = LeaseCheck::of(guard);
    std::optional<Error> refused;
    try {
      auto committing_late = store.commit(std::move(late));
      co_await std::move(committing_late);
    } catch (const Error& error) {
      refused = error;
    }
    REQUIRE(refused.has_value());
    CHECK(refused->code() == errc::lock_lost);
    CHECK_THAT(refused->what(), Catch::Contains("thread-1") && Catch::Contains("nothing was written"));
    const auto head = co_await store.load("thread-1");
    REQUIRE(head.has_value());
    CHECK(head->head_revision == 1);

    CommitRequest second;
    second.session_id = "thread-1";
    second.expected_head_revision = 1;
    second.parts.emplace("state", "turn 2");
    second.lease = LeaseCheck::of(successor);
    auto committing_second = store.commit(std::move(second));
    const auto next = co_await std::move(committing_second);
    CHECK(next.head_revision == 2);
    co_await next_lock.release(std::move(successor));
    co_await turn_lock.release(std::move(guard));
  });
}

}  // namespace lockstore::test
