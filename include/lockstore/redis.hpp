// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// RedisLock: leases in Redis. A lease is a string "<token> <fence>
// <acquired ms> <owner>" under `<prefix>lease:<key>` with a PEXPIRE TTL,
// taken only when absent (SET NX PX) by a Lua script that also takes the
// fence; release and extend are token-checked scripts; a release with
// waiters queued PUBLISHes the key and the next ticket on
// `<prefix>released`, which every waiting RedisLock subscribes to.
//
// Fences survive a restart that loses the keys. The counter key
// `<prefix>fence:<key>` holds the last fence, and a new fence is
// max(last + 1, the server's clock in microseconds): after the counter is
// lost, the clock alone is still beyond every fence handed out before, as
// long as the server's clock does not step back across the restart. Leases
// themselves are lost with the keys unless persistence (AOF) is on: after
// such a restart a holder's extend() returns false, and a new acquirer may
// take the key at once (see docs/BACKENDS.md, "Redis and restarts").
//
// I/O runs non-blocking on the executor the lock was connected on, through a
// strand, as for PostgresLock.
#pragma once

#include "lockstore/detail/config.hpp"
#include "lockstore/detail/completion.hpp"
#include "lockstore/owner.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"

#include <boost/asio/awaitable.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstore {

namespace detail {
struct Attempt;
}  // namespace detail

/// Where the Redis server is and how to log in.
struct RedisOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::optional<std::string> username;  ///< ACL user (Redis 6+); default user when unset
  std::optional<std::string> password;  ///< AUTH when set
  int database = 0;                     ///< SELECT when not 0
  std::string key_prefix = "lockstore:";
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);
  /// A server whose maxmemory-policy may evict keys (allkeys-*, volatile-*)
  /// can drop a live lease under memory pressure and let a second holder in,
  /// so connect() refuses it unless this is true (docs/BACKENDS.md, "Redis must not evict leases").
  bool accept_eviction = false;
};

/// One command of a fenced write: its name, then its arguments.
using RedisCommand = std::vector<std::string>;

class RedisLock : public detail::CompletionTokenOverloads<RedisLock> {
 public:
  // Each operation below also takes a completion token as its last argument
  // (detail/completion.hpp): `void(error_code, T)`, `void(error_code)` for
  // release; without one it is the coroutine, as documented here.
  using detail::CompletionTokenOverloads<RedisLock>::try_acquire;
  using detail::CompletionTokenOverloads<RedisLock>::acquire;
  using detail::CompletionTokenOverloads<RedisLock>::extend;
  using detail::CompletionTokenOverloads<RedisLock>::release;
  using detail::CompletionTokenOverloads<RedisLock>::take_over;
  using detail::CompletionTokenOverloads<RedisLock>::list;
  using detail::CompletionTokenOverloads<RedisLock>::force_release;
  using detail::CompletionTokenOverloads<RedisLock>::release_all;
  using detail::CompletionTokenOverloads<RedisLock>::fenced;
  using detail::CompletionTokenOverloads<RedisLock>::admit;

  /// Connects, logs in (AUTH), selects the database and loads the scripts.
  /// Throws errc::invalid_argument for bad options or a database index the
  /// server does not have, errc::backend_failure naming host and port when
  /// the server cannot be reached or refuses the credentials.
  static asio::awaitable<RedisLock> connect(RedisOptions options, std::string owner = random_owner());

  /// Another owner on this lock's connections (see PostgresLock::with_owner).
  RedisLock with_owner(std::string owner) const;

  const std::string& owner() const noexcept;

  /// One attempt: std::nullopt while any live lease holds the key, this
  /// owner's included (every acquisition is its own holder; see take_over).
  /// Throws errc::connection_lost when the connection broke (the next
  /// call reconnects). Not cancellable: the script always completes.
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Waits until acquired, woken by pub/sub; errc::timeout after `deadline`;
  /// operation_aborted on per-operation cancellation, with any lease granted
  /// meanwhile given back.
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline);

  /// New expiry = now + ttl while the guard's token holds the lease. On
  /// true, the guard's valid_until() becomes the time this call was made + ttl.
  /// False also when the guard's valid_until() has passed, or passes before
  /// the answer comes (the request is cut off then: errc::connection_lost,
  /// "no answer").
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl);

  /// The explicit form of "this owner takes its lease back" (a session
  /// resuming after a crash before the old lease ran out): granted when the
  /// key is free or held by this lock's owner, with a new token and a larger
  /// fence, so the old holder's guard can neither extend nor release it any
  /// more. The expiry is the later of the old one and now + ttl: a takeover
  /// never shortens a lease. std::nullopt when another owner holds the key.
  /// It does not wait in the queue of acquire() callers.
  asio::awaitable<std::optional<LockGuard>> take_over(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Removes the lease if the guard's token still holds it, publishes the
  /// release, and marks the guard released. On an error the guard stays
  /// unreleased and the error is thrown (the lease then expires).
  asio::awaitable<void> release(LockGuard guard);

  /// Removes every lease of this owner; returns how many (all were live:
  /// Redis drops expired ones itself).
  asio::awaitable<std::size_t> release_all();

  /// The live leases of every owner under this prefix, ordered by key
  /// (times on the server's clock). Not a snapshot: SCAN, then one look per key.
  asio::awaitable<std::vector<LockInfo>> list();

  /// For operators: clears whatever lease holds `key` and returns it
  /// (std::nullopt when nothing held it). Its fence stays used.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key);

  /// The commands a fenced write may run, on the caller's own keys.
  static constexpr std::array<std::string_view, 20> fenced_commands = {
      "SET",  "GET",    "DEL",   "HSET",  "HGET",   "HDEL",    "INCR",   "INCRBY", "DECR",  "DECRBY",
      "HINCRBY", "APPEND", "EXPIRE", "PEXPIRE", "LPUSH", "RPUSH", "SADD", "SREM",   "ZADD",  "ZREM"};

  /// The most arguments one command of a fenced write may have.
  static constexpr std::size_t max_fenced_arguments = 1000;

  /// A fenced write: runs `commands` (each its name and arguments, e.g.
  /// {"HSET", "invoice:42", "state", "paid"}; the names in fenced_commands)
  /// in one script that first checks that `guard`'s token still holds a
  /// live lease: nothing runs once the lease expired or was taken over
  /// (errc::lock_lost), and no other holder can be granted while the script
  /// runs. Returns each command's reply as text (std::nullopt for nil).
  /// errc::invalid_argument for a released guard, an empty command, one
  /// not in fenced_commands, one with more than max_fenced_arguments, or a
  /// key under this lock's key_prefix. Integer replies above 2^53 lose
  /// precision (Lua's numbers are doubles). A
  /// command that fails on the server (a key of another type) stops the
  /// script with errc::backend_failure; Redis has no rollback, so the
  /// commands before it stay applied. Keys go as arguments, not KEYS: for a
  /// single Redis server, not a cluster.
  asio::awaitable<std::vector<std::optional<std::string>>> fenced(const LockGuard& guard,
                                                                  std::vector<RedisCommand> commands);

  /// The fence gate (see SqliteLock::admit), in the key
  /// `<key_prefix>fence-gate:<resource>` (no TTL).
  asio::awaitable<bool> admit(std::string resource, std::uint64_t fence);

 private:
  struct DisarmDeadline;
  struct State;
  struct LeaveQueue;
  using QueueSeat = detail::QueueSeat<std::int64_t, LeaveQueue>;

  RedisLock(std::shared_ptr<State> state, std::string owner);

  static void validate(const RedisOptions& options, const std::string& owner);
  static asio::awaitable<void> connect_command(std::shared_ptr<State> state);
  static asio::awaitable<void> refuse_evicting_server(std::shared_ptr<State> state);
  static asio::awaitable<bool> delete_if(std::shared_ptr<State> state, AdvisoryKey key, std::string field,
                                         std::string expected,
                                         LockGuard::TimePoint answer_by = LockGuard::TimePoint::max());
  static asio::awaitable<void> give_back(std::shared_ptr<State> state, LockGuard guard);
  static asio::awaitable<detail::Attempt> attempt_once(std::shared_ptr<State> state, std::string owner, AdvisoryKey key,
                                                       std::chrono::milliseconds ttl, QueueSeat* seat = nullptr);
  static asio::awaitable<void> start_listening(std::shared_ptr<State> state);
  static asio::awaitable<LockGuard> acquire_on_strand(std::shared_ptr<State> state, std::string owner, AdvisoryKey key,
                                                      std::chrono::milliseconds ttl, std::chrono::milliseconds deadline);
  static asio::awaitable<std::optional<LockInfo>> inspect_on_strand(std::shared_ptr<State> state, AdvisoryKey key,
                                                                    bool clear);
  static std::string glob_escaped(std::string_view text);
  static asio::awaitable<std::vector<std::string>> scan_leases(std::shared_ptr<State> state);
  static asio::awaitable<std::vector<LockInfo>> list_on_strand(std::shared_ptr<State> state);

  std::shared_ptr<State> state_;
  std::string owner_;
};

static_assert(AdministrableLock<RedisLock>);

}  // namespace lockstore

#ifndef LOCKSTORE_SEPARATE_COMPILATION
#include "lockstore/impl/redis.ipp"
#endif
