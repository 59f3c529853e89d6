// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SqliteDatabase: a cheap-to-copy shared handle to one SQLite file and the
// thread that owns its connection. Every statement runs on that thread, never
// on the caller's executor; coroutines resume on the caller's executor.
// Dropping the last handle finishes the queued statements, closes the
// connection and joins the thread.
#pragma once

#include "lockstore/detail/config.hpp"
#include "lockstore/error.hpp"
#include "lockstore/sqlite_options.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

namespace lockstore {

namespace asio = boost::asio;

namespace detail {
class LocalTokens;
class SqliteConnection;
struct SqliteShared;
class SqliteWakeups;
struct SqliteDatabaseAccess;
}  // namespace detail

class SqliteDatabase {
 public:
  /// Opens (creating if needed) a database file: WAL, busy timeout,
  /// synchronous as SqliteOptions::synchronous (NORMAL), foreign keys on, schema created or migrated.
  /// A file this process may not write (permissions, a read-only file
  /// system) is opened read-only instead, as open_readonly() does, with a
  /// warning: read_only() is then true and every write is refused.
  /// Throws errc::unsupported_schema for a file of a newer or unknown schema
  /// version or another application's database (left untouched: lockstore
  /// marks its files with PRAGMA application_id), errc::corrupt_data for a
  /// file that is not a database,
  /// errc::backend_failure for other SQLite failures (message names the file).
  static asio::awaitable<SqliteDatabase> open(std::filesystem::path path, SqliteOptions options = {});

  /// How often a waiter whose holder is in another process looks again on
  /// its own when the wake file is active: a backstop for a release that was
  /// not announced (a process of an older build, or one that could not map
  /// the file), not the way waiters normally learn of a release.
  static constexpr std::chrono::milliseconds watched_poll_interval{250};

  /// A private in-memory database (one connection: not shared with others).
  static asio::awaitable<SqliteDatabase> open_memory(SqliteOptions options = {});

  /// Opens an existing file for reading only. Reads work; every write is
  /// refused with errc::backend_failure naming the file. The file must carry
  /// this build's schema version (errc::unsupported_schema otherwise). A
  /// WAL file that cannot be read normally because its directory is not
  /// writable (read-only media: SQLite cannot create the -shm file) is
  /// opened immutable: read without locks, so it must not change while open.
  static asio::awaitable<SqliteDatabase> open_readonly(std::filesystem::path path, SqliteOptions options = {});

  const std::filesystem::path& path() const noexcept;
  bool read_only() const noexcept;
  const SqliteOptions& options() const noexcept;

  /// Throws errc::backend_failure if this handle was opened read-only.
  void require_writable(std::string_view operation) const;

  friend bool operator==(const SqliteDatabase& a, const SqliteDatabase& b) noexcept {
    return a.shared_ == b.shared_;
  }

 private:
  // Running jobs on the connection thread is for lockstore's own SQLite
  // components (detail/sqlite_database_run.hpp); users write through the
  // lock and the store.
  friend struct detail::SqliteDatabaseAccess;

  using Opener = std::function<std::unique_ptr<detail::SqliteConnection>()>;
  SqliteDatabase(std::filesystem::path path, SqliteOptions options, bool read_only, Opener opener);

  static const char* synchronous_pragma(SqliteSynchronous level);

  static void validate(const SqliteOptions& options);

  /// Opens the file. A connection SQLite could open only read-only that
  /// cannot open what a WAL reader needs (its -shm file, in a directory it
  /// may not write) is opened again immutable, but only when no WAL content
  /// is waiting: immutable reads ignore the WAL, and would miss it.
  static std::unique_ptr<detail::SqliteConnection> open_connection(const std::filesystem::path& path, int flags,
                                                                   const SqliteOptions& options);

  static void configure(detail::SqliteConnection& connection, const SqliteOptions& options);

  std::shared_ptr<detail::SqliteShared> shared_;
};

}  // namespace lockstore

#ifndef LOCKSTORE_SEPARATE_COMPILATION
#include "lockstore/impl/sqlite_database.ipp"
#endif
