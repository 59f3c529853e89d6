// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SqliteLock: leases in a SQLite file, safe across threads and processes.
// Each lock has an owner name; several SqliteLocks (owners) may share one
// SqliteDatabase. Waiters in this process are woken by release at once;
// waiters in other processes through the wake file next to the database
// (detail/sqlite_wake.hpp), or, without one, by looking again every
// SqliteOptions::poll_interval (jittered). Every waiter also looks again at
// the holder's expiry.
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/detail/config.hpp"
#include "lockstore/owner.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"
#include "lockstore/sql.hpp"
#include "lockstore/sqlite_database.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

namespace detail {
struct Attempt;
class SqliteConnection;
class WakeBoard;
}  // namespace detail

class SqliteLock : public detail::CompletionTokenOverloads<SqliteLock> {
 public:
  // Each operation below also takes a completion token as its last argument
  // (detail/completion.hpp): `void(error_code, T)`, `void(error_code)` for
  // release; without one it is the coroutine, as documented here.
  using detail::CompletionTokenOverloads<SqliteLock>::try_acquire;
  using detail::CompletionTokenOverloads<SqliteLock>::acquire;
  using detail::CompletionTokenOverloads<SqliteLock>::extend;
  using detail::CompletionTokenOverloads<SqliteLock>::release;
  using detail::CompletionTokenOverloads<SqliteLock>::take_over;
  using detail::CompletionTokenOverloads<SqliteLock>::list;
  using detail::CompletionTokenOverloads<SqliteLock>::force_release;
  using detail::CompletionTokenOverloads<SqliteLock>::release_all;
  using detail::CompletionTokenOverloads<SqliteLock>::fenced;
  using detail::CompletionTokenOverloads<SqliteLock>::admit;

  /// Throws errc::invalid_argument for an empty owner, one over 512 bytes or
  /// one with a NUL byte.
  explicit SqliteLock(SqliteDatabase database, std::string owner = random_owner());

  const std::string& owner() const noexcept { return owner_; }
  const SqliteDatabase& database() const noexcept { return database_; }

  /// One attempt: std::nullopt while any live lease holds the key, this
  /// owner's included (every acquisition is its own holder; see take_over).
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Waits until acquired; errc::timeout after `deadline`; operation_aborted
  /// on per-operation cancellation, with any lease granted meanwhile undone.
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline);

  /// New expiry = now + ttl while the guard's token holds a live lease
  /// ("now" read once the statement holds the write lock). On true, the
  /// guard's valid_until() becomes the time this call was made + ttl. False
  /// also when the guard's valid_until() passed before the answer came.
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl);

  /// The explicit form of "this owner takes its lease back" (a session
  /// resuming after a crash before the old lease ran out): granted when the
  /// key is free or held by this lock's owner, with a new token and a larger
  /// fence, so the old holder's guard can neither extend nor release it any
  /// more. The expiry is the later of the old one and now + ttl: a takeover
  /// never shortens a lease. std::nullopt when another owner holds the key.
  /// It does not wait in the queue of acquire() callers.
  asio::awaitable<std::optional<LockGuard>> take_over(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Removes the lease if the guard's token still holds it (never anyone
  /// else's), wakes this process's waiters, and marks the guard released.
  /// On a backend error the guard stays unreleased and the error is thrown.
  asio::awaitable<void> release(LockGuard guard);

  /// Removes every lease of this owner; returns how many were still live.
  asio::awaitable<std::size_t> release_all();

  /// The live leases of every owner, ordered by key.
  asio::awaitable<std::vector<LockInfo>> list();

  /// For operators: clears whatever lease holds `key`, whoever owns it, and
  /// returns it (std::nullopt when nothing held it). Its holder's extend and
  /// release then fail or do nothing; its fence stays used.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key);

  /// A fenced write: runs `statements` (the caller's SQL on its own tables
  /// in this file, `?1`-style parameters) in one BEGIN IMMEDIATE transaction
  /// that first checks, under the write lock, that `guard`'s token still
  /// holds a live lease on its key; returns one SqlResult per statement.
  /// Throws errc::lock_lost with nothing written when the lease expired or
  /// was taken over (a holder paused past its lease cannot write any more),
  /// errc::invalid_argument for a released guard, a statement that does not
  /// compile, holds more than one statement, has the wrong number of
  /// parameters, or would end the transaction, attach a file, run a pragma
  /// or write lockstore's own tables (nothing written either), and
  /// errc::backend_failure when a statement fails while running (a
  /// constraint): the transaction is rolled back. Not cancellable once
  /// queued, like every statement. The lease is not extended.
  asio::awaitable<std::vector<SqlResult>> fenced(const LockGuard& guard, std::vector<SqlStatement> statements);

  /// The fence gate for a resource lockstore cannot see (a file, an object
  /// store, a service): true when `fence` is at least every fence admitted
  /// before for `resource`, which then remembers it; false for a smaller
  /// one. Atomic across processes (one statement under the file's write
  /// lock). errc::invalid_argument for an empty resource or a fence above
  /// 2^63 - 1.
  asio::awaitable<bool> admit(std::string resource, std::uint64_t fence);

 private:
  // An acquire() caller's place in the key's queue. The ticket is taken at
  // the first refusal and dropped by the statement that grants the lease;
  // if the caller gives up (deadline, cancellation, error, or its frame is
  // destroyed) the destructor drops it without waiting, and wakes the
  // waiters behind it.
  // Leaving the queue: the ticket is dropped on the connection thread
  // (queued, not awaited), and the next in line is woken, here and in other
  // processes.
  struct LeaveQueue;
  using QueueSeat = detail::QueueSeat<std::int64_t, LeaveQueue>;

  // What a job may keep of the handle: the parts that live as long as the
  // connection thread (a job must not hold a SqliteDatabase, nor point into
  // a SqliteLock that may be gone by the time it runs).
  struct Shared;

  // Removes the lease if `token` still holds it and wakes the next waiter,
  // here and in other processes. On the connection thread.
  static void release_on(detail::SqliteConnection& connection, const Shared& shared, const std::string& key,
                         const std::string& token);

  // Tells waiters in other processes that `key` may be free, naming the
  // ticket next in line so that only its holder looks. Runs on the
  // connection thread, after the statement that freed the key.
  static void announce_release(detail::SqliteConnection& connection, detail::WakeBoard* board,
                               const std::string& key);

  struct Outcome;

  // An attempt queued on the connection thread, until its caller takes the
  // outcome. For acquire() it may be queued early, by the thread that woke
  // the waiter, before the waiter's own executor has run it; the waiter
  // takes it as its next attempt. If the caller never takes it (its
  // coroutine was cancelled first, or destroyed, as when its io_context
  // shuts down), a job queued behind it gives back what it was granted.
  class PendingAttempt;

  // The job of one attempt: one statement when granted. A queued attempt
  // (acquire) that is refused also takes or refreshes its ticket; try_acquire
  // ignores the queue. `proposed` is the token a new lease gets.
  auto attempt_job(std::string key, std::chrono::milliseconds ttl, std::string proposed, bool queued,
                   std::optional<std::int64_t> ticket);

  // Queues an attempt in `pending`: for acquire() (`queued`) with the
  // caller's queue ticket (0: none yet), for try_acquire() outside the queue.
  void start_attempt(PendingAttempt& pending, const AdvisoryKey& key, std::chrono::milliseconds ttl, bool queued,
                     std::int64_t ticket);

  // Awaits the attempt in `pending` and takes it. Taken only once its
  // outcome is in hand: if this coroutine is cancelled before (Asio throws
  // at the co_await) or destroyed, `pending` gives back what it was granted.
  asio::awaitable<detail::Attempt> take_attempt(PendingAttempt& pending, AdvisoryKey key,
                                                std::chrono::milliseconds ttl, QueueSeat* seat);

  detail::Attempt settle(AdvisoryKey key, const std::string& proposed, Outcome outcome, QueueSeat* seat,
                         std::chrono::steady_clock::time_point valid_until);

  // When to look again: at the holder's expiry, and, if the holder is in
  // another process, no later than a jittered poll interval: the long
  // backstop one when that process's release will be announced on the wake
  // file, the short one otherwise. A holder in this process wakes us itself.
  // The first wait on another process's holder starts this handle's watcher;
  // a release announced before it started is not delivered, so that waiter
  // looks again at once instead of sleeping to the backstop (and files its
  // ticket under the watcher's new doorbell).
  std::chrono::steady_clock::time_point retry_time(const Outcome& outcome);

  static std::chrono::system_clock::time_point from_epoch_ms(std::int64_t ms);

  SqliteDatabase database_;
  std::string owner_;
};

static_assert(AdministrableLock<SqliteLock>);

}  // namespace lockstore

#ifndef LOCKSTORE_SEPARATE_COMPILATION
#include "lockstore/impl/sqlite_lock.ipp"
#endif
