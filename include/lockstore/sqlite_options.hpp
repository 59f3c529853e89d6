// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// How a SqliteDatabase opens and uses its file.
#pragma once

#include <chrono>

namespace lockstore {

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
  /// woken by release at once; with the wake file (see docs/DECISIONS.md,
  /// "SQLite wake-ups") so are waiters in other processes, which then look again on
  /// their own only every SqliteDatabase::watched_poll_interval.
  std::chrono::milliseconds poll_interval{2};
  /// How long a caller waits on its own thread for a statement's result
  /// before it suspends: handing a result back through a parked executor
  /// costs a thread wake-up, as much as a lease statement itself. The spin
  /// ends as soon as the result is there, and adapts: after spins that miss,
  /// the next few statements suspend at once. 0 disables it. Figures: docs/DECISIONS.md,
  /// "The hop to the connection thread".
  std::chrono::microseconds completion_spin{300};
  /// SQLite's `synchronous` setting for a file opened read-write. NORMAL
  /// (the default) may lose the last commits, never consistency, when the
  /// machine (not just the process) stops; FULL syncs every commit, which
  /// makes a lease outlive a power loss at the cost of an fsync per write.
  SqliteSynchronous synchronous = SqliteSynchronous::normal;
};

}  // namespace lockstore
