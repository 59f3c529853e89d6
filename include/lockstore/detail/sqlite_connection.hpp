// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// One SQLite connection and its cached prepared statements. It lives on
// (and is only touched by) its SqliteWorker's thread. Errors become
// lockstore::Error carrying the file, SQLite's message and extended code.
#pragma once

#include "lockstore/detail/random.hpp"
#include "lockstore/error.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace lockstore::detail {

[[noreturn]] inline void throw_sqlite(sqlite3* db, int rc, std::string_view what,
                                      const std::filesystem::path& path) {
  const int extended = db != nullptr ? sqlite3_extended_errcode(db) : rc;
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int primary = extended & 0xff;
  const errc code = (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) ? errc::corrupt_data
                                                                            : errc::backend_failure;
  throw Error(code, fmt::format("{} on '{}': {} (SQLite extended code {})", what, path.string(),
                                message, extended));
}

/// A cached prepared statement in use. Binds are 1-based like SQLite's;
/// the statement is reset when this handle goes out of scope.
class Statement {
 public:
  Statement(sqlite3_stmt* statement, const std::filesystem::path& path)
      : statement_(statement), path_(&path) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

  Statement& bind(int index, std::string_view text) {
    check(sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    check(sqlite3_bind_int64(statement_, index, value));
    return *this;
  }
  Statement& bind_blob(int index, std::string_view bytes) {
    check(sqlite3_bind_blob64(statement_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind_null(int index) {
    check(sqlite3_bind_null(statement_, index));
    return *this;
  }
  Statement& bind(int index, double value) {
    check(sqlite3_bind_double(statement_, index, value));
    return *this;
  }

  int parameter_count() const { return sqlite3_bind_parameter_count(statement_); }
  int column_count() const { return sqlite3_column_count(statement_); }
  /// SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB or SQLITE_NULL.
  int column_type(int column) const { return sqlite3_column_type(statement_, column); }
  double real(int column) const { return sqlite3_column_double(statement_, column); }
  /// True for a statement that writes nothing (a SELECT).
  bool read_only() const { return sqlite3_stmt_readonly(statement_) != 0; }

  /// Advances; true when a row is available, false when done.
  bool step() {
    const int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw_sqlite(sqlite3_db_handle(statement_), rc,
                 fmt::format("SQL statement \"{:.60}...\" failed", sqlite3_sql(statement_)), *path_);
  }

  /// Runs to completion, ignoring rows; returns the number of changed rows.
  int run() {
    while (step()) {
    }
    return sqlite3_changes(sqlite3_db_handle(statement_));
  }

  std::int64_t int64(int column) const { return sqlite3_column_int64(statement_, column); }
  bool is_null(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }
  std::string text(int column) const {
    const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    return data ? std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }
  std::string blob(int column) const {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(statement_, column));
    return data ? std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw_sqlite(sqlite3_db_handle(statement_), rc, "binding a parameter", *path_);
  }

  sqlite3_stmt* statement_;
  const std::filesystem::path* path_;
};

class SqliteConnection {
 public:
  /// How a file is opened. `immutable`: read-only, with no locks and no
  /// -wal or -shm files (SQLite's immutable=1), for a file on read-only
  /// media that nobody writes while it is open.
  enum class Mode { normal, immutable };

  SqliteConnection(const std::filesystem::path& path, int flags, Mode mode = Mode::normal) : path_(path) {
    sqlite3* raw = nullptr;
    const int rc = mode == Mode::immutable
                       ? sqlite3_open_v2(immutable_uri(path).c_str(), &raw,
                                         SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, nullptr)
                       : sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    db_.reset(raw);
    if (rc != SQLITE_OK) throw_sqlite(raw, rc, "opening the database", path_);
    sqlite3_extended_result_codes(raw, 1);
    // SQLite opens a file it may not write read-only even when asked for
    // read-write: what it did, not what was asked, decides.
    read_only_ = sqlite3_db_readonly(raw, "main") == 1;
  }

  /// "file:" URI of `path` with immutable=1; '%', '?' and '#' are escaped,
  /// the only characters a URI path may not carry as they are.
  // Not copied or moved: SQLite keeps the address of gate_.
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  static std::string immutable_uri(const std::filesystem::path& path) {
    std::string uri = "file://";  // an empty authority: the path may start with "//"
    for (const char c : std::filesystem::absolute(path).string()) {
      if (c == '%' || c == '?' || c == '#') {
        uri += fmt::format("%{:02X}", static_cast<unsigned char>(c));
      } else {
        uri += c;
      }
    }
    return uri + "?immutable=1";
  }

  /// A prepared statement for `sql`, compiled once per connection. `sql`
  /// must be a string constant: the cache is keyed by its address.
  Statement prepare(const char* sql) {
    auto& slot = statements_[sql];
    if (!slot) {
      sqlite3_stmt* raw = nullptr;
      const int rc = sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
      if (rc != SQLITE_OK) {
        statements_.erase(sql);
        throw_sqlite(db_.get(), rc, fmt::format("preparing \"{:.60}...\"", sql), path_);
      }
      slot.reset(raw);
    }
    return Statement(slot.get(), path_);
  }

  /// A prepared statement for SQL the caller wrote (fenced writes): exactly
  /// one statement. Whoever calls it installs the authorizer that checks
  /// such SQL first (detail/sqlite_fenced.hpp). Kept for reuse, keyed by
  /// its text; the cache is emptied when it holds `dynamic_cache_size`.
  /// Throws errc::invalid_argument naming the statement and SQLite's reason.
  Statement prepare_dynamic(const std::string& sql) {
    auto found = dynamic_statements_.find(sql);
    if (found != dynamic_statements_.end()) return Statement(found->second.get(), path_);
    if (dynamic_statements_.size() >= dynamic_cache_size) dynamic_statements_.clear();
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v3(db_.get(), sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                      &raw, &tail);
    std::unique_ptr<sqlite3_stmt, Finalizer> statement(raw);
    if (rc != SQLITE_OK)
      throw Error(errc::invalid_argument, fmt::format("statement \"{:.80}\" cannot be prepared on '{}': {}", sql,
                                                      path_.string(), sqlite3_errmsg(db_.get())));
    if (!statement) throw Error(errc::invalid_argument, fmt::format("statement \"{:.80}\" is empty", sql));
    const std::string_view rest(tail, static_cast<std::size_t>(sql.c_str() + sql.size() - tail));
    if (rest.find_first_not_of(" \t\r\n;") != std::string_view::npos)
      throw Error(errc::invalid_argument,
                  fmt::format("statement \"{:.80}\" holds more than one statement: give each its own", sql));
    auto& slot = dynamic_statements_[sql];
    slot = std::move(statement);
    return Statement(slot.get(), path_);
  }

  static constexpr std::size_t dynamic_cache_size = 64;

  using Authorizer = int (*)(void*, int, const char*, const char*, const char*, const char*);

  /// From here until end_user_sql(), `check` decides on every statement
  /// compiled on this connection (SQLite also compiles a cached statement
  /// again after a schema change). Installed once and then only switched
  /// on and off: installing an authorizer expires every prepared statement
  /// of the connection, lockstore's own included.
  void begin_user_sql(Authorizer check) {
    if (gate_.check != check) {
      gate_.check = check;
      sqlite3_set_authorizer(db_.get(), &SqliteConnection::gate, &gate_);
    }
    gate_.active = true;
  }
  void end_user_sql() noexcept { gate_.active = false; }

  /// Runs a script of one or more statements (schema, pragmas).
  void exec(const std::string& sql) {
    const int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) throw_sqlite(db_.get(), rc, fmt::format("running \"{:.60}\"", sql), path_);
  }

  std::int64_t pragma_int(const std::string& name) {
    sqlite3_stmt* raw = nullptr;
    const std::string sql = "PRAGMA " + name;
    int rc = sqlite3_prepare_v2(db_.get(), sql.c_str(), -1, &raw, nullptr);
    if (rc != SQLITE_OK) throw_sqlite(db_.get(), rc, "reading PRAGMA " + name, path_);
    std::unique_ptr<sqlite3_stmt, Finalizer> statement(raw);
    rc = sqlite3_step(raw);
    if (rc != SQLITE_ROW) throw_sqlite(db_.get(), rc, "reading PRAGMA " + name, path_);
    return sqlite3_column_int64(raw, 0);
  }

  /// The longest a connection waiting for the write lock sleeps between two
  /// tries (its busy handler).
  static constexpr std::chrono::microseconds longest_busy_sleep{1500};

  /// How long a statement retries while another connection holds the write
  /// lock, before it fails with SQLITE_BUSY. Replaces sqlite3_busy_timeout,
  /// whose sleeps grow to 100 ms: a sleeper does not notice the lock come
  /// free, and with several processes writing one file, such sleeps were the
  /// longest acquire waits on a contended key. Here a retry comes after at
  /// most about a millisecond (20 us doubling, jittered), for the same total.
  void set_busy_timeout(std::chrono::milliseconds timeout) {
    busy_->timeout = timeout;
    sqlite3_busy_handler(db_.get(), timeout > std::chrono::milliseconds::zero() ? &BusyWait::retry : nullptr,
                         busy_.get());
  }

  /// Registers lockstore_now_ms(): the wall clock in ms since the Unix
  /// epoch, read when a statement calls it. A statement's write lock is taken
  /// before any of its rows are computed, so a lease statement that reads
  /// the clock through this function reads it once it holds the lock, never
  /// before a wait for another connection's write.
  void register_clock() {
    const int rc = sqlite3_create_function_v2(
        db_.get(), "lockstore_now_ms", 0, SQLITE_UTF8, nullptr,
        [](sqlite3_context* context, int, sqlite3_value**) {
          sqlite3_result_int64(context, std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
        },
        nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) throw_sqlite(db_.get(), rc, "registering lockstore_now_ms()", path_);
  }

  /// Writes `bytes` into the BLOB column `column` of row `rowid` of
  /// `table`, which already holds a zeroblob of that size, in pieces:
  /// SQLite never holds a second copy of a large value.
  void write_blob(const char* table, const char* column, std::int64_t rowid, std::string_view bytes) {
    auto blob = open_blob(table, column, rowid, true);
    for (std::size_t offset = 0; offset < bytes.size(); offset += blob_chunk) {
      const auto size = std::min(blob_chunk, bytes.size() - offset);
      const int rc = sqlite3_blob_write(blob.get(), bytes.data() + offset, static_cast<int>(size),
                                        static_cast<int>(offset));
      if (rc != SQLITE_OK) throw_sqlite(db_.get(), rc, fmt::format("writing a blob into {}", table), path_);
    }
  }

  /// Reads the BLOB column `column` of row `rowid` of `table` straight into
  /// the string returned, in pieces.
  std::string read_blob(const char* table, const char* column, std::int64_t rowid) {
    auto blob = open_blob(table, column, rowid, false);
    std::string bytes(static_cast<std::size_t>(sqlite3_blob_bytes(blob.get())), '\0');
    for (std::size_t offset = 0; offset < bytes.size(); offset += blob_chunk) {
      const auto size = std::min(blob_chunk, bytes.size() - offset);
      const int rc = sqlite3_blob_read(blob.get(), bytes.data() + offset, static_cast<int>(size),
                                       static_cast<int>(offset));
      if (rc != SQLITE_OK) throw_sqlite(db_.get(), rc, fmt::format("reading a blob from {}", table), path_);
    }
    return bytes;
  }

  /// Copies the WAL into the database and truncates it to zero bytes, if
  /// no other connection is reading or writing now; never waits for one
  /// (true when it was done). After deleting much, the WAL has grown by
  /// what was deleted and keeps that size until such a checkpoint.
  bool truncate_wal() {
    const auto timeout = busy_->timeout;
    set_busy_timeout(std::chrono::milliseconds::zero());
    const int rc = sqlite3_wal_checkpoint_v2(db_.get(), "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    set_busy_timeout(timeout);
    return rc == SQLITE_OK;
  }

  /// Copies what it can of the WAL into the database without taking any
  /// lock another connection waits for (SQLite's PASSIVE checkpoint).
  void checkpoint_wal() { sqlite3_wal_checkpoint_v2(db_.get(), "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr); }

  sqlite3* handle() const noexcept { return db_.get(); }
  const std::filesystem::path& path() const noexcept { return path_; }
  bool read_only() const noexcept { return read_only_; }

 private:
  struct Closer {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
  };
  struct Finalizer {
    void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
  };
  struct BlobCloser {
    void operator()(sqlite3_blob* blob) const noexcept { sqlite3_blob_close(blob); }
  };

  static constexpr std::size_t blob_chunk = 1 << 20;

  std::unique_ptr<sqlite3_blob, BlobCloser> open_blob(const char* table, const char* column, std::int64_t rowid,
                                                      bool writing) {
    sqlite3_blob* raw = nullptr;
    const int rc = sqlite3_blob_open(db_.get(), "main", table, column, rowid, writing ? 1 : 0, &raw);
    std::unique_ptr<sqlite3_blob, BlobCloser> blob(raw);
    if (rc != SQLITE_OK) throw_sqlite(db_.get(), rc, fmt::format("opening a blob of {}", table), path_);
    return blob;
  }

  struct BusyWait {
    std::chrono::milliseconds timeout{0};
    std::chrono::steady_clock::time_point started;

    // `attempts`: how often SQLite has called this for the current wait.
    static int retry(void* context, int attempts) noexcept {
      auto& self = *static_cast<BusyWait*>(context);
      const auto now = std::chrono::steady_clock::now();
      if (attempts == 0) self.started = now;
      const auto left = self.started + self.timeout - now;
      if (left <= std::chrono::steady_clock::duration::zero()) return 0;
      // Between 10 us and longest_busy_sleep, jittered, growing with the attempts.
      const auto base = std::chrono::microseconds(
          std::min<std::int64_t>(longest_busy_sleep.count() * 2 / 3, 20 << std::min(attempts, 6)));
      const auto pause = std::chrono::microseconds(ThreadRandom::between(base.count() / 2, base.count() * 3 / 2));
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, left));
      return 1;
    }
  };

  std::filesystem::path path_;
  bool read_only_ = false;
  std::unique_ptr<BusyWait> busy_ = std::make_unique<BusyWait>();  // SQLite keeps its address
  // statements_ is declared after db_ so that it is destroyed first: every
  // statement is finalized before the connection closes.
  std::unique_ptr<sqlite3, Closer> db_;
  std::unordered_map<const char*, std::unique_ptr<sqlite3_stmt, Finalizer>> statements_;
  std::unordered_map<std::string, std::unique_ptr<sqlite3_stmt, Finalizer>> dynamic_statements_;

  struct UserSqlGate {
    Authorizer check = nullptr;
    bool active = false;
  };
  static int gate(void* state, int action, const char* first, const char* second, const char* database,
                  const char* trigger) {
    const auto* user = static_cast<const UserSqlGate*>(state);
    return user->active ? user->check(nullptr, action, first, second, database, trigger) : SQLITE_OK;
  }
  UserSqlGate gate_;
};

/// BEGIN IMMEDIATE on construction; rolls back in the destructor unless
/// committed. The destructor never throws.
class Transaction {
 public:
  /// A write transaction (BEGIN IMMEDIATE: the write lock is taken at once).
  explicit Transaction(SqliteConnection& connection) : Transaction(connection, "BEGIN IMMEDIATE") {}

  /// A read transaction: every statement in it sees one snapshot of the
  /// file (WAL), whatever other connections commit meanwhile.
  static Transaction read(SqliteConnection& connection) { return Transaction(connection, "BEGIN DEFERRED"); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void commit() {
    static constexpr const char* commit_sql = "COMMIT";
    connection_.prepare(commit_sql).run();
    committed_ = true;
  }

  ~Transaction() {
    if (!committed_) sqlite3_exec(connection_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  Transaction(SqliteConnection& connection, const char* begin) : connection_(connection) {
    connection_.prepare(begin).run();
  }

  SqliteConnection& connection_;
  bool committed_ = false;
};

}  // namespace lockstore::detail
