// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Statements for fenced writes: SQL the caller writes against its own
// tables, run by SqliteLock::fenced and PostgresLock::fenced in one
// transaction that first checks that a guard's lease is still live. One
// type for both backends; parameters are `?1`, `?2`, ... on SQLite and
// `$1`, `$2`, ... on PostgreSQL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace lockstore {

/// Bytes bound (and read back) as a BLOB (SQLite) or bytea (PostgreSQL),
/// where a std::string would be text.
struct SqlBlob {
  std::string bytes;
  friend bool operator==(const SqlBlob&, const SqlBlob&) = default;
};

/// A parameter or a result value. SQLite gives each result its own type;
/// PostgreSQL gives every non-NULL result as text (std::string).
using SqlValue = std::variant<std::nullptr_t, std::int64_t, double, std::string, SqlBlob>;

/// One statement and its parameters, in order.
struct SqlStatement {
  std::string sql;
  std::vector<SqlValue> params;
};

/// What one statement did: the rows it changed, and the rows it returned
/// (a SELECT, or RETURNING), each a value per column.
struct SqlResult {
  std::int64_t changed = 0;
  std::vector<std::vector<SqlValue>> rows;
};

}  // namespace lockstore
