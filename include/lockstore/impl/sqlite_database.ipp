// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SqliteDatabase's definitions (see sqlite_database.hpp; detail/config.hpp
// for the separately compiled mode).
#pragma once

#include "lockstore/sqlite_database.hpp"

#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_database_run.hpp"
#include "lockstore/detail/sqlite_shared.hpp"
#include "lockstore/detail/sqlite_wake.hpp"
#include "lockstore/detail/sqlite_schema.hpp"
#include "lockstore/log.hpp"

namespace lockstore {

LOCKSTORE_DECL asio::awaitable<SqliteDatabase> SqliteDatabase::open(std::filesystem::path path, SqliteOptions options) {
  validate(options);
  SqliteDatabase database(path, options, false, [path, options] {
    auto connection = open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, options);
    detail::require_lockstore_file(*connection);
    if (connection->read_only()) {
      detail::check_schema(*connection, connection->pragma_int("user_version"));
      return connection;
    }
    detail::enable_wal(*connection, options.busy_timeout);
    connection->exec(synchronous_pragma(options.synchronous));
    detail::migrate(*connection);
    return connection;
  });
  // Reports an open failure, and whether SQLite could open the file for writing.
  auto opening = detail::run_on(database, [](detail::SqliteConnection& connection) { return connection.read_only(); });
  if (co_await std::move(opening)) {
    database.shared_->read_only = true;
    detail::log(LogLevel::warning,
                fmt::format("'{}' is not writable by this process: opened read-only, writes will be refused",
                            path.string()));
    co_return database;
  }
  database.shared_->wakeups.attach(std::make_unique<detail::WakeBoard>(path));
  co_return database;
}

LOCKSTORE_DECL asio::awaitable<SqliteDatabase> SqliteDatabase::open_memory(SqliteOptions options) {
  validate(options);
  SqliteDatabase database(":memory:", options, false, [options] {
    auto connection = std::make_unique<detail::SqliteConnection>(
        ":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY);
    configure(*connection, options);
    detail::migrate(*connection);
    return connection;
  });
  co_await detail::run_on(database, [](detail::SqliteConnection&) {});
  co_return database;
}

LOCKSTORE_DECL asio::awaitable<SqliteDatabase> SqliteDatabase::open_readonly(std::filesystem::path path,
                                                                            SqliteOptions options) {
  validate(options);
  SqliteDatabase database(path, options, true, [path, options] {
    auto connection = open_connection(path, SQLITE_OPEN_READONLY, options);
    detail::require_lockstore_file(*connection);
    detail::check_schema(*connection, connection->pragma_int("user_version"));
    return connection;
  });
  co_await detail::run_on(database, [](detail::SqliteConnection&) {});
  co_return database;
}

LOCKSTORE_DECL const std::filesystem::path& SqliteDatabase::path() const noexcept { return shared_->path; }
LOCKSTORE_DECL bool SqliteDatabase::read_only() const noexcept { return shared_->read_only; }
LOCKSTORE_DECL const SqliteOptions& SqliteDatabase::options() const noexcept { return shared_->options; }

LOCKSTORE_DECL void SqliteDatabase::require_writable(std::string_view operation) const {
  if (shared_->read_only)
    throw Error(errc::backend_failure,
                fmt::format("{}: '{}' was opened read-only; writes are refused", operation, path().string()));
}

LOCKSTORE_DECL SqliteDatabase::SqliteDatabase(std::filesystem::path path, SqliteOptions options, bool read_only,
                                              Opener opener)
    : shared_(std::make_shared<detail::SqliteShared>(std::move(path), options, read_only, std::move(opener))) {}

LOCKSTORE_DECL const char* SqliteDatabase::synchronous_pragma(SqliteSynchronous level) {
  switch (level) {
    case SqliteSynchronous::full: return "PRAGMA synchronous=FULL";
    case SqliteSynchronous::extra: return "PRAGMA synchronous=EXTRA";
    case SqliteSynchronous::normal: break;
  }
  return "PRAGMA synchronous=NORMAL";
}

LOCKSTORE_DECL void SqliteDatabase::validate(const SqliteOptions& options) {
  if (options.synchronous != SqliteSynchronous::normal && options.synchronous != SqliteSynchronous::full &&
      options.synchronous != SqliteSynchronous::extra)
    throw Error(errc::invalid_argument, fmt::format("SqliteOptions::synchronous of {} is not a known level",
                                                    static_cast<int>(options.synchronous)));
  if (options.busy_timeout < std::chrono::milliseconds::zero() ||
      options.busy_timeout > std::chrono::hours(24))
    throw Error(errc::invalid_argument, fmt::format("SqliteOptions::busy_timeout of {} ms is out of range "
                                                    "(0 to 24 h)", options.busy_timeout.count()));
  if (options.completion_spin < std::chrono::microseconds::zero() ||
      options.completion_spin > std::chrono::milliseconds(10))
    throw Error(errc::invalid_argument, fmt::format("SqliteOptions::completion_spin of {} us is out of range "
                                                    "(0 to 10 ms)", options.completion_spin.count()));
  if (options.poll_interval <= std::chrono::milliseconds::zero() ||
      options.poll_interval > std::chrono::minutes(1))
    throw Error(errc::invalid_argument, fmt::format("SqliteOptions::poll_interval of {} ms is out of range "
                                                    "(1 ms to 1 min)", options.poll_interval.count()));
}

LOCKSTORE_DECL std::unique_ptr<detail::SqliteConnection> SqliteDatabase::open_connection(
    const std::filesystem::path& path, int flags, const SqliteOptions& options) {
  auto connection = std::make_unique<detail::SqliteConnection>(path, flags);
  configure(*connection, options);
  if (!connection->read_only()) return connection;
  const int rc = sqlite3_exec(connection->handle(), "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr);
  // SQLite says CANTOPEN, READONLY_DIRECTORY or READONLY_CANTINIT for a
  // -shm it cannot create; any other error is reported by the first read.
  if (rc == SQLITE_OK || ((rc & 0xff) != SQLITE_CANTOPEN && rc != SQLITE_READONLY_DIRECTORY &&
                          rc != SQLITE_READONLY_CANTINIT))
    return connection;
  std::error_code absent;
  const auto wal = std::filesystem::file_size(path.string() + "-wal", absent);
  if (!absent && wal > 0)
    throw Error(errc::backend_failure,
                fmt::format("'{}' cannot be read: its -wal file holds changes not yet in the database, and its "
                            "directory is not writable for the -shm file a reader needs; open it once where it can be "
                            "written, or copy the database together with its -wal file to a writable place",
                            path.string()));
  connection = std::make_unique<detail::SqliteConnection>(path, SQLITE_OPEN_READONLY,
                                                          detail::SqliteConnection::Mode::immutable);
  configure(*connection, options);
  return connection;
}

LOCKSTORE_DECL void SqliteDatabase::configure(detail::SqliteConnection& connection, const SqliteOptions& options) {
  connection.set_busy_timeout(options.busy_timeout);
  connection.exec("PRAGMA foreign_keys=ON");
  connection.register_clock();
}

}  // namespace lockstore
