// What SqliteDatabase does with files that are not what it expects: another
// schema version, garbage, a read-only open, bad options.
#include "support/helpers.hpp"

#include <catch2/catch.hpp>
#include <lockstore/sqlite.hpp>
#include <sqlite3.h>

#include <fstream>

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
      co_await reader_db.run([](detail::SqliteConnection& connection) {
        connection.exec("DELETE FROM lockstore_leases");
      });
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

}  // namespace lockstore::test
