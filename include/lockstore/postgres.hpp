// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// PostgresLock: leases in a PostgreSQL table, for processes on several
// machines. Times come from the server's clock (clock_timestamp()), so the
// clients' clocks do not matter. A release sends NOTIFY, and every
// PostgresLock that has a waiter LISTENs, so a waiter anywhere takes the lock
// within about a round trip of its release. The notification goes to the
// channel of the process whose waiter is next in line, so one process wakes
// per release, not every listening one.
//
// libpq runs non-blocking on the executor the lock was connected on (through
// a strand; the lock may be used from any thread, but that executor's
// io_context must keep running while the lock is used). One PostgresLock has
// one command connection (its operations take turns on it) and, once an
// acquire has had to wait, one listening connection.
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/detail/config.hpp"
#include "lockstore/owner.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"
#include "lockstore/sql.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

namespace detail {
struct Attempt;
struct PostgresState;
}  // namespace detail

class PostgresLock : public detail::CompletionTokenOverloads<PostgresLock> {
 public:
  // Each operation below also takes a completion token as its last argument
  // (detail/completion.hpp): `void(error_code, T)`, `void(error_code)` for
  // release; without one it is the coroutine, as documented here.
  using detail::CompletionTokenOverloads<PostgresLock>::try_acquire;
  using detail::CompletionTokenOverloads<PostgresLock>::acquire;
  using detail::CompletionTokenOverloads<PostgresLock>::extend;
  using detail::CompletionTokenOverloads<PostgresLock>::release;
  using detail::CompletionTokenOverloads<PostgresLock>::take_over;
  using detail::CompletionTokenOverloads<PostgresLock>::list;
  using detail::CompletionTokenOverloads<PostgresLock>::force_release;
  using detail::CompletionTokenOverloads<PostgresLock>::release_all;
  using detail::CompletionTokenOverloads<PostgresLock>::fenced;
  using detail::CompletionTokenOverloads<PostgresLock>::admit;

  /// Connects (within the conninfo's connect_timeout, default 10 s), creates
  /// the lease table on first use, and checks its schema version. Throws
  /// errc::invalid_argument for a malformed conninfo or owner,
  /// errc::backend_failure naming host and port when the server cannot be
  /// reached or refuses, errc::unsupported_schema for a newer table layout.
  /// Host names are resolved by libpq itself, which blocks while it does;
  /// give an address (host=127.0.0.1 or hostaddr=) to avoid that.
  static asio::awaitable<PostgresLock> connect(std::string conninfo, std::string owner = random_owner());

  /// Another owner on this lock's connections (cheaper than connect(); its
  /// operations take turns with this lock's on the same connection, and
  /// releases by either wake the other's waiters at once).
  PostgresLock with_owner(std::string owner) const;

  const std::string& owner() const noexcept { return owner_; }

  /// One attempt: std::nullopt while any live lease holds the key, this
  /// owner's included (every acquisition is its own holder; see take_over).
  /// Throws errc::connection_lost when the connection broke (the next call
  /// reconnects). Not cancellable: the statement always completes.
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Waits until acquired, woken by NOTIFY; errc::timeout after `deadline`;
  /// operation_aborted on per-operation cancellation, with any lease granted
  /// meanwhile given back.
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline);

  /// New expiry = server now + ttl while the guard's token holds a live
  /// lease. On true, the guard's valid_until() becomes the time this call was
  /// made + ttl. False also when the guard's valid_until() has passed, or
  /// passes before the answer comes (the request is cut off then:
  /// errc::connection_lost, "no answer").
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl);

  /// The explicit form of "this owner takes its lease back" (a session
  /// resuming after a crash before the old lease ran out): granted when the
  /// key is free or held by this lock's owner, with a new token and a larger
  /// fence, so the old holder's guard can neither extend nor release it any
  /// more. The expiry is the later of the old one and now + ttl: a takeover
  /// never shortens a lease. std::nullopt when another owner holds the key.
  /// It does not wait in the queue of acquire() callers.
  asio::awaitable<std::optional<LockGuard>> take_over(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Removes the lease if the guard's token still holds it, notifies the
  /// waiters everywhere, and marks the guard released. On an error the guard
  /// stays unreleased and the error is thrown (the lease then expires).
  asio::awaitable<void> release(LockGuard guard);

  /// Removes every lease of this owner; returns how many were still live.
  asio::awaitable<std::size_t> release_all();

  /// The live leases of every owner, ordered by key (times on the server's clock).
  asio::awaitable<std::vector<LockInfo>> list();

  /// For operators: clears whatever live lease holds `key` and returns it
  /// (std::nullopt when nothing held it). Its fence stays used.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key);

  /// A fenced write: runs `statements` (the caller's SQL on its own tables
  /// in this database, `$1`-style parameters) in one transaction whose
  /// first query locks the lease row (FOR UPDATE) and checks that `guard`'s
  /// token still holds a live lease by the server's clock; the row lock
  /// holds until commit, so no other holder is granted before the writes
  /// commit. One round trip (libpq's pipeline mode, one implicit
  /// transaction). Returns one SqlResult per statement (values as text,
  /// NULL as nullptr). Throws errc::lock_lost with nothing written when the
  /// lease expired or was taken over; errc::invalid_argument for a released
  /// guard, a statement that does not start with SELECT, INSERT, UPDATE,
  /// DELETE, MERGE, WITH, VALUES, TABLE, CREATE, ALTER, DROP, TRUNCATE,
  /// COMMENT or LOCK, or one that names lockstore's tables, set_config or
  /// search_path (lockstore's connection keeps its settings);
  /// errc::backend_failure with the server's message and SQLSTATE when a
  /// statement (or the commit) fails: all of it is rolled back;
  /// connection_lost when the connection broke (rolled back by the server
  /// unless its commit had already been made: the outcome is unknown).
  asio::awaitable<std::vector<SqlResult>> fenced(const LockGuard& guard, std::vector<SqlStatement> statements);

  /// The fence gate (see SqliteLock::admit), in the table
  /// lockstore_fence_gate of this database.
  asio::awaitable<bool> admit(std::string resource, std::uint64_t fence);

 private:
  // Defined in impl/postgres.ipp, with the functions that need libpq.
  using State = detail::PostgresState;

  PostgresLock(std::shared_ptr<State> state, std::string owner);

  static std::chrono::system_clock::time_point from_epoch_ms(const char* text);

  static asio::awaitable<void> release_on_strand(std::shared_ptr<State> state, AdvisoryKey key, std::string token,
                                                 LockGuard::TimePoint answer_by = LockGuard::TimePoint::max());

  static asio::awaitable<void> give_back(std::shared_ptr<State> state, LockGuard guard);

  struct LeaveQueue;
  using QueueSeat = detail::QueueSeat<std::int64_t, LeaveQueue>;

  static asio::awaitable<detail::Attempt> attempt_once(std::shared_ptr<State> state, std::string owner,
                                                       AdvisoryKey key, std::chrono::milliseconds ttl,
                                                       QueueSeat* seat = nullptr);

  static asio::awaitable<void> start_listening(std::shared_ptr<State> state);

  static asio::awaitable<LockGuard> acquire_on_strand(std::shared_ptr<State> state, std::string owner, AdvisoryKey key,
                                                      std::chrono::milliseconds ttl, std::chrono::milliseconds deadline);

  std::shared_ptr<State> state_;
  std::string owner_;
};

static_assert(AdministrableLock<PostgresLock>);

}  // namespace lockstore

#ifndef LOCKSTORE_SEPARATE_COMPILATION
#include "lockstore/impl/postgres.ipp"
#endif
