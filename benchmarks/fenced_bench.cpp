// fenced_bench: what the lease check of a fenced write costs. One JSON line
// per measurement: microseconds per one-row INSERT, made
//   SQLite:     raw sqlite3 autocommit INSERT (same pragmas, same thread);
//               raw sqlite3 BEGIN IMMEDIATE + lease check + INSERT + COMMIT;
//               the INSERT as a job on lockstore's connection thread, no
//               check (the same path as fenced() without the check);
//               SqliteLock::fenced.
//   PostgreSQL: raw blocking libpq INSERT (one round trip);
//               PostgresLock::fenced (one pipelined round trip).
// Rounds alternate the variants, so drift on a shared machine hits all.
// `--smoke` runs tiny counts; `--backends sqlite,postgres`; PostgreSQL from
// --postgres CONNINFO or $LOCKSTORE_TEST_POSTGRES.
#include "bench_support.hpp"
#include "server_settings.hpp"

#include <libpq-fe.h>
#include <lockstore/detail/sqlite_database_run.hpp>
#include <lockstore/postgres.hpp>
#include <lockstore/sqlite.hpp>
#include <sqlite3.h>

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

using namespace lockstore::bench;

namespace {

constexpr const char* create_notes = "CREATE TABLE IF NOT EXISTS bench_notes (id INTEGER PRIMARY KEY, body TEXT)";
constexpr const char* insert_note = "INSERT INTO bench_notes (body) VALUES (?1)";

/// One JSON line per variant: its median and best µs per write.
void print_samples(const char* backend, int writes, int rounds, const std::map<std::string, std::vector<double>>& samples) {
  for (const auto& [name, values] : samples)
    fmt::print("{{\"bench\": \"fenced_write\", \"backend\": \"{}\", \"variant\": \"{}\", \"writes\": {}, "
               "\"rounds\": {}, \"us_per_write_median\": {:.1f}, \"us_per_write_min\": {:.1f}}}\n",
               backend, name, writes, rounds, percentile(values, 0.5), percentile(values, 0.0));
}

void print_ratio(const char* backend, const char* what, double value) {
  fmt::print("{{\"bench\": \"fenced_write\", \"backend\": \"{}\", \"ratio\": \"{}\", \"value\": {:.2f}}}\n", backend,
             what, value);
}

void sqlite_exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string why = message != nullptr ? message : "?";
    sqlite3_free(message);
    throw std::runtime_error(fmt::format("{}: {}", sql, why));
  }
}

// Raw sqlite3 on its own connection; `fenced`: the statements fenced()
// runs, on this thread.
double raw_sqlite_us(const std::filesystem::path& path, int writes, bool fenced, const std::string& key,
                     const std::string& token) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_busy_timeout(db, 5000);
  sqlite_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
  sqlite3_stmt* insert = nullptr;
  sqlite3_prepare_v2(db, insert_note, -1, &insert, nullptr);
  sqlite3_stmt* check = nullptr;
  // lockstore_now_ms() is lockstore's function: here the wall clock in SQL.
  sqlite3_prepare_v2(db,
                     "SELECT 1 FROM lockstore_leases WHERE key = ?1 AND token = ?2 AND "
                     "expires_ms > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
                     -1, &check, nullptr);
  const auto start = Clock::now();
  for (int i = 0; i < writes; ++i) {
    if (fenced) {
      sqlite_exec(db, "BEGIN IMMEDIATE");
      sqlite3_bind_text(check, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
      sqlite3_bind_text(check, 2, token.data(), static_cast<int>(token.size()), SQLITE_STATIC);
      if (sqlite3_step(check) != SQLITE_ROW) throw std::runtime_error("raw check found no lease");
      sqlite3_reset(check);
    }
    sqlite3_bind_text(insert, 1, "note", 4, SQLITE_STATIC);
    if (sqlite3_step(insert) != SQLITE_DONE) throw std::runtime_error("raw insert failed");
    sqlite3_reset(insert);
    if (fenced) sqlite_exec(db, "COMMIT");
  }
  const double us = seconds_since(start) * 1e6 / writes;
  sqlite3_finalize(insert);
  sqlite3_finalize(check);
  sqlite3_close(db);
  return us;
}

void sqlite_section(int writes, int rounds) {
  const auto path = fresh_file("fenced.db");
  run([&]() -> asio::awaitable<void> {
    auto database = co_await lockstore::SqliteDatabase::open(path);
    lockstore::SqliteLock lock(database, "bench");
    auto guard = co_await lock.acquire(lockstore::AdvisoryKey("bench-key"), 3600s, 5s);
    std::vector<lockstore::SqlStatement> create(1);
    create[0].sql = create_notes;
    auto creating = lock.fenced(guard, std::move(create));
    co_await std::move(creating);
    std::map<std::string, std::vector<double>> samples;
    for (int round = 0; round < rounds; ++round) {
      samples["raw_sqlite_insert"].push_back(raw_sqlite_us(path, writes, false, "", ""));
      samples["raw_sqlite_check_and_insert"].push_back(
          raw_sqlite_us(path, writes, true, guard.key().str(), guard.token()));
      auto start = Clock::now();
      for (int i = 0; i < writes; ++i) {
        auto job = [](lockstore::detail::SqliteConnection& connection) {
          lockstore::detail::Transaction transaction(connection);
          connection.prepare_dynamic(insert_note).bind(1, std::string_view("note")).run();
          transaction.commit();
        };
        auto inserting = lockstore::detail::run_on(database, std::move(job));
        co_await std::move(inserting);
      }
      samples["lockstore_thread_insert_no_check"].push_back(seconds_since(start) * 1e6 / writes);
      start = Clock::now();
      for (int i = 0; i < writes; ++i) {
        std::vector<lockstore::SqlStatement> insert(1);
        insert[0].sql = insert_note;
        insert[0].params.emplace_back(std::string("note"));
        auto writing = lock.fenced(guard, std::move(insert));
        co_await std::move(writing);
      }
      samples["lockstore_fenced"].push_back(seconds_since(start) * 1e6 / writes);
    }
    co_await lock.release(std::move(guard));
    print_samples("sqlite", writes, rounds, samples);
    print_ratio("sqlite", "fenced / same path without check",
                percentile(samples["lockstore_fenced"], 0.5) /
                    percentile(samples["lockstore_thread_insert_no_check"], 0.5));
    print_ratio("sqlite", "fenced / raw autocommit insert",
                percentile(samples["lockstore_fenced"], 0.5) / percentile(samples["raw_sqlite_insert"], 0.5));
  });
  remove_file(path);
  std::filesystem::remove(path.string() + "-lockstore-wake");
}

double raw_libpq_insert_us(const std::string& conninfo, int writes) {
  PGconn* connection = PQconnectdb(conninfo.c_str());
  if (PQstatus(connection) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(connection));
  PQclear(PQprepare(connection, "insert", "INSERT INTO bench_notes (body) VALUES ($1)", 1, nullptr));
  const char* values[] = {"note"};
  const auto start = Clock::now();
  for (int i = 0; i < writes; ++i) {
    PGresult* result = PQexecPrepared(connection, "insert", 1, values, nullptr, nullptr, 0);
    if (PQresultStatus(result) != PGRES_COMMAND_OK) throw std::runtime_error(PQresultErrorMessage(result));
    PQclear(result);
  }
  const double us = seconds_since(start) * 1e6 / writes;
  PQfinish(connection);
  return us;
}

void postgres_section(const std::string& conninfo, int writes, int rounds) {
  {
    PGconn* connection = PQconnectdb(conninfo.c_str());
    PQclear(PQexec(connection, "CREATE TABLE IF NOT EXISTS bench_notes (id bigserial PRIMARY KEY, body text)"));
    PQfinish(connection);
  }
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await lockstore::PostgresLock::connect(conninfo, "bench");
    auto guard = co_await lock.acquire(lockstore::AdvisoryKey("bench-key"), 3600s, 5s);
    std::map<std::string, std::vector<double>> samples;
    for (int round = 0; round < rounds; ++round) {
      samples["raw_libpq_insert"].push_back(raw_libpq_insert_us(conninfo, writes));
      const auto start = Clock::now();
      for (int i = 0; i < writes; ++i) {
        std::vector<lockstore::SqlStatement> insert(1);
        insert[0].sql = "INSERT INTO bench_notes (body) VALUES ($1)";
        insert[0].params.emplace_back(std::string("note"));
        auto writing = lock.fenced(guard, std::move(insert));
        co_await std::move(writing);
      }
      samples["lockstore_fenced"].push_back(seconds_since(start) * 1e6 / writes);
    }
    co_await lock.release(std::move(guard));
    print_samples("postgres", writes, rounds, samples);
    print_ratio("postgres", "fenced / raw libpq insert",
                percentile(samples["lockstore_fenced"], 0.5) / percentile(samples["raw_libpq_insert"], 0.5));
  });
  PGconn* connection = PQconnectdb(conninfo.c_str());
  PQclear(PQexec(connection, "DROP TABLE IF EXISTS bench_notes"));
  PQfinish(connection);
}

}  // namespace

int main(int argc, char** argv) try {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  const bool smoke = std::find(args.begin(), args.end(), "--smoke") != args.end();
  const auto backends = split(option(args, "--backends", "sqlite,postgres"));
  const int writes = smoke ? 20 : 2000;
  const int rounds = smoke ? 1 : 7;
  if (std::find(backends.begin(), backends.end(), "sqlite") != backends.end()) sqlite_section(writes, rounds);
  if (std::find(backends.begin(), backends.end(), "postgres") != backends.end())
    postgres_section(setting(args, "--postgres", "LOCKSTORE_TEST_POSTGRES"), writes, rounds);
  return 0;
} catch (const std::exception& error) {
  fmt::print(stderr, "fenced_bench: {}\n", error.what());
  return 1;
}
