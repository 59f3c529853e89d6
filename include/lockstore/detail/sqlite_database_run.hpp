// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// What lockstore's SQLite components (the lock, the store, the tool and the
// tests) need of a SqliteDatabase beyond its public declarations: its shared
// state and the templates that run jobs on its connection thread.
#pragma once

#include "lockstore/sqlite_database.hpp"

#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_shared.hpp"

#include <utility>

namespace lockstore::detail {

struct SqliteDatabaseAccess {
  static SqliteShared& shared(const SqliteDatabase& database) noexcept { return *database.shared_; }
};

/// Runs `f(SqliteConnection&)` on the database's connection thread and
/// returns its result. `f` must not capture a SqliteDatabase. Not
/// cancellable once queued.
template <class F>
asio::awaitable<std::invoke_result_t<F&, SqliteConnection&>> run_on(const SqliteDatabase& database, F f) {
  return SqliteDatabaseAccess::shared(database).worker.run(std::move(f));
}

/// As run_on, in two steps: start_on queues `f` at once, from any thread,
/// and outcome_on awaits its result (once). Jobs run in the order queued.
template <class F>
auto start_on(const SqliteDatabase& database, F f) {
  return SqliteDatabaseAccess::shared(database).worker.start(std::move(f));
}

template <class Started>
auto outcome_on(const SqliteDatabase& database, Started started) {
  return SqliteDatabaseAccess::shared(database).worker.outcome(std::move(started));
}

/// Queues `f(SqliteConnection&)` on the connection thread and returns at
/// once, dropping its result and errors (clean-up only).
template <class F>
void post_on(const SqliteDatabase& database, F f) {
  SqliteDatabaseAccess::shared(database).worker.post(std::move(f));
}

/// How waiters on this handle are woken (in-process wake-ups, the wake
/// file, early attempts). Lives as long as the connection thread.
inline SqliteWakeups& wakeups_of(const SqliteDatabase& database) noexcept {
  return SqliteDatabaseAccess::shared(database).wakeups;
}

/// Tokens of leases granted through this handle and not yet released.
inline LocalTokens& local_tokens_of(const SqliteDatabase& database) noexcept {
  return SqliteDatabaseAccess::shared(database).local_tokens;
}

}  // namespace lockstore::detail
