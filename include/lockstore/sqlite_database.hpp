// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SqliteDatabase: a cheap-to-copy shared handle to one SQLite file and the
// thread that owns its connection. Every statement runs on that thread, never
// on the caller's executor; coroutines resume on the caller's executor.
// Dropping the last handle finishes the queued statements, closes the
// connection and joins the thread.
#pragma once

#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_schema.hpp"
#include "lockstore/detail/sqlite_wake.hpp"
#include "lockstore/detail/sqlite_wakeups.hpp"
#include "lockstore/detail/sqlite_worker.hpp"
#include "lockstore/error.hpp"
#include "lockstore/log.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

namespace lockstore {

namespace asio = boost::asio;

/// SQLite's `PRAGMA synchronous` levels that keep a WAL database consistent.
enum class SqliteSynchronous { normal, full, extra };

struct SqliteOptions {
  /// How long a statement waits for another connection's write lock. It
  /// looks again at least every ~1.5 ms meanwhile (SQLite's own handler
  /// sleeps up to 100 ms past the lock's release).
  std::chrono::milliseconds busy_timeout{15'000};
  /// How often a waiter looks again while the lease is held by another
  /// process and cross-process wake-ups are unavailable (each look is
  /// jittered to between half and all of this). Waiters in this process are
  /// woken by release at once; with the wake file (see README, "SQLite
  /// wake-ups") so are waiters in other processes, which then look again on
  /// their own only every SqliteDatabase::watched_poll_interval.
  std::chrono::milliseconds poll_interval{2};
  /// How long a caller waits on its own thread for a statement's result
  /// before it suspends: handing a result back through a parked executor
  /// costs a thread wake-up, as much as a lease statement itself. The spin
  /// ends as soon as the result is there, and adapts: after spins that miss,
  /// the next few statements suspend at once. 0 disables it. Figures: README,
  /// "The hop to the connection thread".
  std::chrono::microseconds completion_spin{300};
  /// SQLite's `synchronous` setting for a file opened read-write. NORMAL
  /// (the default) may lose the last commits, never consistency, when the
  /// machine (not just the process) stops; FULL syncs every commit, which
  /// makes a lease outlive a power loss at the cost of an fsync per write.
  SqliteSynchronous synchronous = SqliteSynchronous::normal;
};

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
  static asio::awaitable<SqliteDatabase> open(std::filesystem::path path, SqliteOptions options = {}) {
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
    auto opening = database.run([](detail::SqliteConnection& connection) { return connection.read_only(); });
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

  /// How often a waiter whose holder is in another process looks again on
  /// its own when the wake file is active: a backstop for a release that was
  /// not announced (a process of an older build, or one that could not map
  /// the file), not the way waiters normally learn of a release.
  static constexpr std::chrono::milliseconds watched_poll_interval{250};

  /// A private in-memory database (one connection: not shared with others).
  static asio::awaitable<SqliteDatabase> open_memory(SqliteOptions options = {}) {
    validate(options);
    SqliteDatabase database(":memory:", options, false, [options] {
      auto connection = std::make_unique<detail::SqliteConnection>(
          ":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY);
      configure(*connection, options);
      detail::migrate(*connection);
      return connection;
    });
    co_await database.run([](detail::SqliteConnection&) {});
    co_return database;
  }

  /// Opens an existing file for reading only. Reads work; every write is
  /// refused with errc::backend_failure naming the file. The file must carry
  /// this build's schema version (errc::unsupported_schema otherwise). A
  /// WAL file that cannot be read normally because its directory is not
  /// writable (read-only media: SQLite cannot create the -shm file) is
  /// opened immutable: read without locks, so it must not change while open.
  static asio::awaitable<SqliteDatabase> open_readonly(std::filesystem::path path, SqliteOptions options = {}) {
    validate(options);
    SqliteDatabase database(path, options, true, [path, options] {
      auto connection = open_connection(path, SQLITE_OPEN_READONLY, options);
      detail::require_lockstore_file(*connection);
      detail::check_schema(*connection, connection->pragma_int("user_version"));
      return connection;
    });
    co_await database.run([](detail::SqliteConnection&) {});
    co_return database;
  }

  /// Runs `f(detail::SqliteConnection&)` on the connection thread and returns
  /// its result. This is how lockstore's SQLite components talk to the file;
  /// `f` must not capture a SqliteDatabase. Not cancellable once queued.
  template <class F>
  asio::awaitable<std::invoke_result_t<F&, detail::SqliteConnection&>> run(F f) const {
    return shared_->worker.run(std::move(f));
  }

  /// As run(), in two steps: start() queues `f` at once, from any thread,
  /// and outcome() awaits its result (once). Jobs run in the order queued.
  template <class F>
  auto start(F f) const {
    return shared_->worker.start(std::move(f));
  }

  template <class Result>
  asio::awaitable<Result> outcome(detail::SqliteWorker::Started<Result> started) const {
    return shared_->worker.outcome(std::move(started));
  }

  /// Queues `f(detail::SqliteConnection&)` on the connection thread and
  /// returns at once, dropping its result and errors (clean-up only).
  template <class F>
  void post(F f) const {
    shared_->worker.post(std::move(f));
  }

  const std::filesystem::path& path() const noexcept { return shared_->path; }
  bool read_only() const noexcept { return shared_->read_only; }
  const SqliteOptions& options() const noexcept { return shared_->options; }

  /// Throws errc::backend_failure if this handle was opened read-only.
  void require_writable(std::string_view operation) const {
    if (shared_->read_only)
      throw Error(errc::backend_failure,
                  fmt::format("{}: '{}' was opened read-only; writes are refused", operation, path().string()));
  }

  /// Internal: how waiters on this handle are woken (in-process wake-ups,
  /// the wake file, early attempts). Lives as long as the connection thread.
  detail::SqliteWakeups& wakeups() const noexcept { return shared_->wakeups; }

  /// Tokens of leases granted through this handle and not yet released:
  /// a waiter whose holder is local needs no polling, release wakes it.
  class LocalTokens {
   public:
    void insert(std::string token) {
      std::lock_guard lock(mutex_);
      tokens_.insert(std::move(token));
    }
    void erase(const std::string& token) {
      std::lock_guard lock(mutex_);
      tokens_.erase(token);
    }
    bool contains(const std::string& token) const {
      std::lock_guard lock(mutex_);
      return tokens_.contains(token);
    }

   private:
    mutable std::mutex mutex_;
    std::unordered_set<std::string> tokens_;
  };
  LocalTokens& local_tokens() const noexcept { return shared_->local_tokens; }

  friend bool operator==(const SqliteDatabase& a, const SqliteDatabase& b) noexcept {
    return a.shared_ == b.shared_;
  }

 private:
  struct Shared {
    Shared(std::filesystem::path p, SqliteOptions o, bool ro, detail::SqliteWorker::Opener opener)
        : path(std::move(p)), options(o), read_only(ro), worker(std::move(opener), o.completion_spin) {}

    std::filesystem::path path;
    SqliteOptions options;
    bool read_only;
    mutable detail::SqliteWakeups wakeups;  // its wake file: file databases opened for writing; set once by open()
    mutable LocalTokens local_tokens;
    detail::SqliteWorker worker;  // last: destroyed first, while the rest still exists
  };

  SqliteDatabase(std::filesystem::path path, SqliteOptions options, bool read_only,
                 detail::SqliteWorker::Opener opener)
      : shared_(std::make_shared<Shared>(std::move(path), options, read_only, std::move(opener))) {}

  static const char* synchronous_pragma(SqliteSynchronous level) {
    switch (level) {
      case SqliteSynchronous::full: return "PRAGMA synchronous=FULL";
      case SqliteSynchronous::extra: return "PRAGMA synchronous=EXTRA";
      case SqliteSynchronous::normal: break;
    }
    return "PRAGMA synchronous=NORMAL";
  }

  static void validate(const SqliteOptions& options) {
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

  /// Opens the file. A connection SQLite could open only read-only that
  /// cannot open what a WAL reader needs (its -shm file, in a directory it
  /// may not write) is opened again immutable, but only when no WAL content
  /// is waiting: immutable reads ignore the WAL, and would miss it.
  static std::unique_ptr<detail::SqliteConnection> open_connection(const std::filesystem::path& path, int flags,
                                                                   const SqliteOptions& options) {
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

  static void configure(detail::SqliteConnection& connection, const SqliteOptions& options) {
    connection.set_busy_timeout(options.busy_timeout);
    connection.exec("PRAGMA foreign_keys=ON");
    connection.register_clock();
  }

  std::shared_ptr<Shared> shared_;
};

}  // namespace lockstore
