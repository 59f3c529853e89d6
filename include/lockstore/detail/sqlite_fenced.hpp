// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Fenced writes and the fence gate on SQLite (SqliteLock::fenced and
// SqliteLock::admit), run on the connection thread.
//
// fenced: one BEGIN IMMEDIATE transaction. The write lock is taken first,
// then the lease row is checked (this guard's token, expiry after
// lockstore_now_ms(), read under that lock), then the caller's statements
// run, then COMMIT. No other connection can grant or change a lease while
// the write lock is held, so no other holder exists between the check and
// the commit: the writes are ordered before any later holder's. The
// caller's statements may only read, and write the caller's own tables: an
// authorizer (below) refuses everything else when they are compiled, and is
// installed while they run, so that a statement SQLite compiles again is
// checked again. Statements are compiled before the transaction begins: a
// table created by one statement cannot be used by a later one of the same
// call (create it in an earlier call).
#pragma once

#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/error.hpp"
#include "lockstore/sql.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace lockstore::detail::sqlite_fenced {

inline constexpr const char* lease_is_live =
    "SELECT 1 FROM lockstore_leases WHERE key = ?1 AND token = ?2 AND expires_ms > lockstore_now_ms()";

/// The fence gate's table, created by the first admit() on a file (older
/// builds ignore it). One row per resource: the largest fence admitted.
inline constexpr const char* create_gate = R"sql(
CREATE TABLE IF NOT EXISTS lockstore_fence_gate (
  resource TEXT PRIMARY KEY NOT NULL,
  fence    INTEGER NOT NULL
) WITHOUT ROWID)sql";

/// Admitted when the fence is at least the largest one admitted before;
/// the row then holds it. One statement: atomic under the write lock.
inline constexpr const char* admit = R"sql(
INSERT INTO lockstore_fence_gate (resource, fence) VALUES (?1, ?2)
ON CONFLICT (resource) DO UPDATE SET fence = excluded.fence WHERE excluded.fence >= fence
RETURNING fence)sql";

/// The caller's statements may read anything and write their own tables in
/// the main database, nothing else: an allow-list, so that an action SQLite
/// adds later is refused until it is looked at. Refused in particular:
/// transaction control, ATTACH, PRAGMA, triggers (a trigger would run later
/// statements' writes unchecked), temp objects (a temp table or view named
/// like a lockstore table would take its place for this connection),
/// ANALYZE, REINDEX, virtual tables, and any write to a table whose name
/// starts with "lockstore_" in any case.
inline int authorize(void*, int action, const char* first, const char* second, const char* database, const char*) {
  const auto ours = [](const char* table) { return table != nullptr && sqlite3_strnicmp(table, "lockstore_", 10) == 0; };
  const auto in_main = [&] { return database != nullptr && sqlite3_stricmp(database, "main") == 0; };
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
      return ours(first) || !in_main() ? SQLITE_DENY : SQLITE_OK;
    case SQLITE_CREATE_TABLE:
    case SQLITE_DROP_TABLE:
    case SQLITE_CREATE_VIEW:
    case SQLITE_DROP_VIEW:
      return ours(first) || !in_main() ? SQLITE_DENY : SQLITE_OK;
    case SQLITE_ALTER_TABLE:  // first: the database, second: the table
      return ours(second) || first == nullptr || sqlite3_stricmp(first, "main") != 0 ? SQLITE_DENY : SQLITE_OK;
    case SQLITE_CREATE_INDEX:
    case SQLITE_DROP_INDEX:  // first: the index, second: the table
      return ours(first) || ours(second) || !in_main() ? SQLITE_DENY : SQLITE_OK;
    default:
      return SQLITE_DENY;
  }
}

/// Installs the authorizer on the connection while alive. lockstore's own
/// statements (the lease check, COMMIT) run outside it; the caller's run
/// inside it, so one that SQLite compiles again (after a schema change)
/// is checked again.
class Authorized {
 public:
  explicit Authorized(SqliteConnection& connection) : connection_(connection) { connection_.begin_user_sql(authorize); }
  ~Authorized() { connection_.end_user_sql(); }
  Authorized(const Authorized&) = delete;
  Authorized& operator=(const Authorized&) = delete;

 private:
  SqliteConnection& connection_;
};

inline void bind(Statement& statement, int index, const SqlValue& value) {
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::nullptr_t>) statement.bind_null(index);
        else if constexpr (std::is_same_v<V, SqlBlob>) statement.bind_blob(index, v.bytes);
        else if constexpr (std::is_same_v<V, std::string>) statement.bind(index, std::string_view(v));
        else statement.bind(index, v);
      },
      value);
}

inline SqlValue column(const Statement& statement, int index) {
  switch (statement.column_type(index)) {
    case SQLITE_INTEGER: return statement.int64(index);
    case SQLITE_FLOAT: return statement.real(index);
    case SQLITE_TEXT: return statement.text(index);
    case SQLITE_BLOB: return SqlBlob{statement.blob(index)};
    default: return nullptr;
  }
}

/// Runs `statements` in one transaction if `token` holds a live lease on
/// `key`; errc::lock_lost with nothing written otherwise.
inline std::vector<SqlResult> run(SqliteConnection& connection, const std::string& key, const std::string& token,
                                  const std::vector<SqlStatement>& statements) {
  // Compiled (and refused) before the transaction: a bad statement costs
  // no write lock.
  {
    Authorized authorized(connection);
    for (std::size_t i = 0; i < statements.size(); ++i) {
      auto statement = connection.prepare_dynamic(statements[i].sql);
      if (statement.parameter_count() != static_cast<int>(statements[i].params.size()))
        throw Error(errc::invalid_argument,
                    fmt::format("statement {} (\"{:.80}\") takes {} parameters, {} were given", i, statements[i].sql,
                                statement.parameter_count(), statements[i].params.size()));
    }
  }
  Transaction transaction(connection);
  {
    auto check = connection.prepare(lease_is_live);
    check.bind(1, key).bind(2, token);
    if (!check.step())
      throw Error(errc::lock_lost, fmt::format("the lease on '{}' is no longer this guard's (it expired or was taken "
                                               "over); nothing was written",
                                               key));
  }
  std::vector<SqlResult> results;
  results.reserve(statements.size());
  {
    Authorized authorized(connection);
    for (const auto& request : statements) {
      auto statement = connection.prepare_dynamic(request.sql);
      for (std::size_t p = 0; p < request.params.size(); ++p)
        bind(statement, static_cast<int>(p + 1), request.params[p]);
      SqlResult result;
      const auto changes_before = sqlite3_total_changes64(connection.handle());
      while (statement.step()) {
        std::vector<SqlValue> row;
        row.reserve(static_cast<std::size_t>(statement.column_count()));
        for (int c = 0; c < statement.column_count(); ++c) row.push_back(column(statement, c));
        result.rows.push_back(std::move(row));
      }
      result.changed = sqlite3_total_changes64(connection.handle()) - changes_before;
      results.push_back(std::move(result));
    }
  }
  transaction.commit();
  return results;
}

/// The fence gate: true when `fence` is at least every fence admitted
/// before for `resource` (and it is remembered), false otherwise.
inline bool run_admit(SqliteConnection& connection, const std::string& resource, std::int64_t fence) {
  Transaction transaction(connection);
  connection.exec(create_gate);
  auto statement = connection.prepare(admit);
  statement.bind(1, resource).bind(2, fence);
  const bool admitted = statement.step();
  while (statement.step()) {
  }
  transaction.commit();
  return admitted;
}

}  // namespace lockstore::detail::sqlite_fenced
