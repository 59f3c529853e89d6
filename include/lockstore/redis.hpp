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
// take the key at once (see README "Redis and restarts").
//
// I/O runs non-blocking on the executor the lock was connected on, through a
// strand, as for PostgresLock.
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/owner.hpp"
#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/redis_connection.hpp"
#include "lockstore/detail/remote_lock.hpp"
#include "lockstore/detail/wire_text.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

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
  /// so connect() refuses it unless this is true (README, "Redis").
  bool accept_eviction = false;
};

namespace detail::redis_scripts {

// A lease is a string `<prefix>lease:<key>` with a PEXPIRE TTL:
// "<token> <fence> <acquired ms> <owner>" (the owner last: it may hold
// spaces). A string, so that a free key is taken by one SET NX PX.
#define LOCKSTORE_REDIS_LEASE_FIELDS                                                         \
  "local function lease_fields(value)\n"                                                     \
  "  local a = string.find(value, ' ', 1, true)\n"                                           \
  "  local b = string.find(value, ' ', a + 1, true)\n"                                       \
  "  local c = string.find(value, ' ', b + 1, true)\n"                                       \
  "  return string.sub(value, 1, a - 1), string.sub(value, a + 1, b - 1),\n"                 \
  "         string.sub(value, b + 1, c - 1), string.sub(value, c + 1)\n"                     \
  "end\n"

// The queue of acquire() callers, per key: a sorted set `<prefix>queue:<key>`
// of tickets (score = ticket) and a hash `<prefix>queue-expiry:<key>` of
// each ticket's expiry (server ms) plus the key's ticket counter ('next').
// Both expire when no waiter has refreshed a ticket for twice the ticket TTL.

// KEYS[1] lease, KEYS[2] fence counter, KEYS[3] queue, KEYS[4] queue
// expiries; ARGV token, owner, ttl ms, ticket, ticket ttl ms. The ticket is
// '' for try_acquire (the queue is ignored), '0' for a waiter without one yet.
// Granted: {token, fence} (strings). Refused: {ms to wait at most, the
// caller's ticket} (integers). A live lease refuses everyone, its own owner
// included (every acquisition is its own holder). A free lease goes to a
// queued caller only if no live ticket is older.
// The fence is max(last + 1, server clock in µs): the clock alone when the
// counter was lost (see README, "Redis and restarts").
inline constexpr const char* acquire = R"lua(
local mine = tonumber(ARGV[4])
local now = redis.call('TIME')
local micros = string.sub(now[2] + 1000000, 2)
local fence = now[1] .. micros
local rest = ' ' .. now[1] .. string.sub(micros, 1, 3) .. ' ' .. ARGV[2]
local function granted()
  local last = redis.call('SET', KEYS[2], fence, 'GET')
  if last and tonumber(last) >= tonumber(fence) then
    fence = string.format('%.0f', tonumber(last) + 1)
    redis.call('SET', KEYS[2], fence)
    redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. rest, 'PX', ARGV[3])
  end
  return {ARGV[1], fence}
end
if not mine and redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. rest, 'NX', 'PX', ARGV[3]) then
  return granted()
end
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local wait_ms = nil
-- GET, not EXISTS: a lease key of another layout (a hash) fails WRONGTYPE.
if redis.call('GET', KEYS[1]) then
  wait_ms = redis.call('PTTL', KEYS[1])
elseif mine then
  while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head then break end
    local expires = tonumber(redis.call('HGET', KEYS[4], head) or '0')
    if expires > now_ms then
      if mine == 0 or tonumber(head) < mine then wait_ms = expires - now_ms end
      break
    end
    redis.call('ZREM', KEYS[3], head)
    redis.call('HDEL', KEYS[4], head)
  end
end
if wait_ms then
  if not mine then return {wait_ms, 0} end
  if mine == 0 then mine = redis.call('HINCRBY', KEYS[4], 'next', 1) end
  redis.call('ZADD', KEYS[3], mine, mine)
  redis.call('HSET', KEYS[4], mine, now_ms + tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[3], 2 * tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[4], 2 * tonumber(ARGV[5]))
  return {wait_ms, mine}
end
-- Free, and this acquire() caller is first in line.
if mine ~= 0 then
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HDEL', KEYS[4], ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. rest, 'PX', ARGV[3])
return granted())lua";

// The explicit takeover (RedisLock::take_over). KEYS[1] lease, KEYS[2] fence
// counter; ARGV token, owner, ttl ms. Takes the key when it is free or held
// by the same owner, with a new token and a larger fence (the old guard is
// fenced out), never shortening the lease. {token, fence, ms it runs}
// (strings, then an integer) when taken; {ms left} when another owner holds it.
inline constexpr const char* take_over = LOCKSTORE_REDIS_LEASE_FIELDS R"lua(
local keep_ms = 0
local lease = redis.call('GET', KEYS[1])
if lease then
  local _, _, _, owner = lease_fields(lease)
  if owner ~= ARGV[2] then return {redis.call('PTTL', KEYS[1])} end
  keep_ms = redis.call('PTTL', KEYS[1])
end
local now = redis.call('TIME')
local micros = string.sub(now[2] + 1000000, 2)
local fence = now[1] .. micros
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(fence) then fence = string.format('%.0f', tonumber(last) + 1) end
redis.call('SET', KEYS[2], fence)
local ttl = math.max(tonumber(ARGV[3]), keep_ms)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. ' ' .. now[1] .. string.sub(micros, 1, 3) .. ' ' .. ARGV[2],
           'PX', ttl)
return {ARGV[1], fence, ttl})lua";

// KEYS[1] lease; ARGV token, ttl ms. 1 when extended.
inline constexpr const char* extend = R"lua(
local lease = redis.call('GET', KEYS[1])
if lease and string.sub(lease, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0)lua";

// The announcement of a freed key on the channel: '<next ticket>:<key>',
// the oldest live ticket among the first few, or 0 (anyone may look). None
// when nobody is queued: every acquire() caller that waits holds a ticket
// (one whose ticket lapsed looks again on its own, within a third of the
// ticket TTL).
#define LOCKSTORE_REDIS_ANNOUNCE                                                             \
  "local function announce(channel, queue, expiries, key)\n"                                 \
  "  local tickets = redis.call('ZRANGE', queue, 0, 4)\n"                                    \
  "  if #tickets == 0 then return end\n"                                                     \
  "  local now = redis.call('TIME')\n"                                                       \
  "  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"         \
  "  local next_ticket = '0'\n"                                                              \
  "  for _, ticket in ipairs(tickets) do\n"                                                  \
  "    if tonumber(redis.call('HGET', expiries, ticket) or '0') > now_ms then\n"             \
  "      next_ticket = ticket\n"                                                             \
  "      break\n"                                                                            \
  "    end\n"                                                                                \
  "  end\n"                                                                                  \
  "  redis.call('PUBLISH', channel, next_ticket .. ':' .. key)\n"                            \
  "end\n"

// KEYS[1] lease, KEYS[2] queue, KEYS[3] queue expiries; ARGV field ('token'
// or 'owner'), expected value, channel, key. Deletes the lease when that
// field matches, and announces it. 1 when deleted.
inline constexpr const char* release = LOCKSTORE_REDIS_LEASE_FIELDS LOCKSTORE_REDIS_ANNOUNCE R"lua(
local lease = redis.call('GET', KEYS[1])
if not lease then return 0 end
local matches
if ARGV[1] == 'token' then
  matches = string.sub(lease, 1, #ARGV[2] + 1) == ARGV[2] .. ' '
else
  local _, _, _, owner = lease_fields(lease)
  matches = owner == ARGV[2]
end
if not matches then return 0 end
redis.call('DEL', KEYS[1])
announce(ARGV[3], KEYS[2], KEYS[3], ARGV[4])
return 1)lua";

// KEYS[1] lease, KEYS[2] queue, KEYS[3] queue expiries; ARGV ticket, channel,
// key. A waiter that gives up leaves the queue; if the lease is free, the
// next in line is told.
inline constexpr const char* leave = LOCKSTORE_REDIS_ANNOUNCE R"lua(
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then announce(ARGV[2], KEYS[2], KEYS[3], ARGV[3]) end
return 1)lua";

// KEYS[1] lease. {owner, fence, acquired_ms, expires_ms} of a live lease, or
// nil. With ARGV[1] set (channel, ARGV[2] key), also deletes it and tells
// anyone listening (an operator's act, so not by ticket).
inline constexpr const char* inspect = LOCKSTORE_REDIS_LEASE_FIELDS R"lua(
local lease = redis.call('GET', KEYS[1])
if not lease then return nil end
local _, fence, acquired_ms, owner = lease_fields(lease)
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expires = string.format('%.0f', now_ms + redis.call('PTTL', KEYS[1]))
if ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[1], '0:' .. ARGV[2])
end
return {owner, fence, acquired_ms, expires})lua";

#undef LOCKSTORE_REDIS_ANNOUNCE
#undef LOCKSTORE_REDIS_LEASE_FIELDS

inline constexpr std::array<const char*, 6> all = {acquire, extend, release, inspect, leave, take_over};
enum Script { acquire_script, extend_script, release_script, inspect_script, leave_script, take_over_script };

}  // namespace detail::redis_scripts

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

  /// Connects, logs in (AUTH), selects the database and loads the scripts.
  /// Throws errc::invalid_argument for bad options or a database index the
  /// server does not have, errc::backend_failure naming host and port when
  /// the server cannot be reached or refuses the credentials.
  static asio::awaitable<RedisLock> connect(RedisOptions options, std::string owner = random_owner()) {
    validate(options, owner);
    auto executor = co_await asio::this_coro::executor;
    auto state = std::make_shared<State>(detail::LockStrand(executor), std::move(options));
    auto connecting = detail::on_strand(state->strand, connect_command(state));
    co_await std::move(connecting);
    co_return RedisLock(std::move(state), std::move(owner));
  }

  /// Another owner on this lock's connections (see PostgresLock::with_owner).
  RedisLock with_owner(std::string owner) const {
    validate(state_->options, owner);
    return RedisLock(state_, std::move(owner));
  }

  const std::string& owner() const noexcept { return owner_; }

  /// One attempt: std::nullopt while any live lease holds the key, this
  /// owner's included (every acquisition is its own holder; see take_over).
  /// Throws errc::connection_lost when the connection broke (the next
  /// call reconnects). Not cancellable: the script always completes.
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "RedisLock::try_acquire");
    auto attempting = detail::on_strand(state_->strand, attempt_once(state_, owner_, std::move(key), ttl));
    auto attempt = co_await std::move(attempting);
    co_return std::move(attempt.guard);
  }

  /// Waits until acquired, woken by pub/sub; errc::timeout after `deadline`;
  /// operation_aborted on per-operation cancellation, with any lease granted
  /// meanwhile given back.
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline) {
    detail::validate_ttl(ttl, "RedisLock::acquire");
    auto acquiring = detail::on_strand(state_->strand, acquire_on_strand(state_, owner_, std::move(key), ttl, deadline));
    auto guard = co_await std::move(acquiring);
    const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    auto keeping = detail::keep_unless_cancelled(
        std::move(guard), [this](LockGuard granted) { return release(std::move(granted)); }, throw_if_cancelled);
    co_return co_await std::move(keeping);
  }

  /// New expiry = now + ttl while the guard's token holds the lease. On
  /// true, the guard's valid_until() becomes the time this call was made + ttl.
  /// False also when the guard's valid_until() has passed, or passes before
  /// the answer comes (the request is cut off then: errc::connection_lost,
  /// "no answer").
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "RedisLock::extend");
    std::vector<std::string> keys{state_->lease_key(guard.key())};
    std::vector<std::string> arguments{guard.token(), std::to_string(ttl.count())};
    const auto sent = std::chrono::steady_clock::now();
    const auto assumed_end = guard.valid_until();
    if (sent >= assumed_end) co_return false;  // the holder must already assume it lost
    auto extending = detail::on_strand(state_->strand, run_script(state_, detail::redis_scripts::extend_script,
                                                                  std::move(keys), std::move(arguments), assumed_end));
    auto reply = co_await std::move(extending);
    // A confirmation that arrives after the lease's assumed end counts as lost.
    const bool extended = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1 &&
                          std::chrono::steady_clock::now() < assumed_end;
    if (extended) guard.confirm_until(sent + ttl);
    co_return extended;
  }

  /// The explicit form of "this owner takes its lease back" (a session
  /// resuming after a crash before the old lease ran out): granted when the
  /// key is free or held by this lock's owner, with a new token and a larger
  /// fence, so the old holder's guard can neither extend nor release it any
  /// more. The expiry is the later of the old one and now + ttl: a takeover
  /// never shortens a lease. std::nullopt when another owner holds the key.
  /// It does not wait in the queue of acquire() callers.
  asio::awaitable<std::optional<LockGuard>> take_over(AdvisoryKey key, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "RedisLock::take_over");
    std::vector<std::string> keys{state_->lease_key(key), state_->fence_key(key)};
    std::vector<std::string> arguments{random_token(), owner_, std::to_string(ttl.count())};
    const auto sent = std::chrono::steady_clock::now();
    auto taking = detail::on_strand(
        state_->strand, run_script(state_, detail::redis_scripts::take_over_script, std::move(keys), std::move(arguments)));
    auto reply = co_await std::move(taking);
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) co_return std::nullopt;
    std::string token(detail::RedisReply::text_of(reply->element[0]));
    const auto runs = std::chrono::milliseconds(to_u64(reply->element[2]));
    co_return LockGuard(std::move(key), std::move(token), to_u64(reply->element[1]), sent + runs);
  }

  /// Removes the lease if the guard's token still holds it, publishes the
  /// release, and marks the guard released. On an error the guard stays
  /// unreleased and the error is thrown (the lease then expires).
  asio::awaitable<void> release(LockGuard guard) {
    if (guard.released()) co_return;
    auto releasing = detail::on_strand(
        state_->strand, delete_if(state_, guard.key(), "token", guard.token(), detail::release_answer_by(guard)));
    co_await std::move(releasing);
    guard.mark_released();
  }

  /// Removes every lease of this owner; returns how many (all were live:
  /// Redis drops expired ones itself).
  asio::awaitable<std::size_t> release_all() {
    auto leases = co_await list();
    std::size_t removed = 0;
    for (const auto& lease : leases) {
      if (lease.owner != owner_) continue;
      auto releasing = detail::on_strand(state_->strand, delete_if(state_, lease.key, "owner", owner_));
      const bool removed_one = co_await std::move(releasing);  // never co_await inside ?: (g++ 12)
      removed += removed_one ? 1 : 0;
    }
    co_return removed;
  }

  /// The live leases of every owner under this prefix, ordered by key
  /// (times on the server's clock). Not a snapshot: SCAN, then one look per key.
  asio::awaitable<std::vector<LockInfo>> list() {
    auto listing = detail::on_strand(state_->strand, list_on_strand(state_));
    co_return co_await std::move(listing);
  }

  /// For operators: clears whatever lease holds `key` and returns it
  /// (std::nullopt when nothing held it). Its fence stays used.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key) {
    auto clearing = detail::on_strand(state_->strand, inspect_on_strand(state_, std::move(key), true));
    co_return co_await std::move(clearing);
  }

 private:
  // Not a local class of the coroutines that use it: g++ 12 crashes
  // mangling a local class of a coroutine when the header is precompiled.
  struct DisarmDeadline {
    detail::RedisConnection* connection = nullptr;
    ~DisarmDeadline() {
      if (connection != nullptr) connection->disarm_deadline();
    }
  };

  struct State {
    State(detail::LockStrand executor, RedisOptions settings)
        : strand(std::move(executor)),
          options(std::move(settings)),
          channel(options.key_prefix + "released"),
          command(strand),
          subscriber(strand),
          pump(
              strand, [this]() { return read_message(); }, [this]() { return quiet_subscriber(); }) {}

    std::string lease_key(const AdvisoryKey& key) const { return options.key_prefix + "lease:" + key.str(); }
    std::string fence_key(const AdvisoryKey& key) const { return options.key_prefix + "fence:" + key.str(); }
    std::string queue_key(const AdvisoryKey& key) const { return options.key_prefix + "queue:" + key.str(); }
    std::string queue_expiry_key(const AdvisoryKey& key) const {
      return options.key_prefix + "queue-expiry:" + key.str();
    }

    // Unsubscribes once nobody waits; the connection stays for the next
    // wait. Messages published before the server took the UNSUBSCRIBE may
    // come first: they are read and dropped.
    asio::awaitable<void> quiet_subscriber() {
      auto turn = co_await listen_turn.lock();
      if (pump.waiting() > 0 || !pump.listening()) co_return;
      pump.set_listening(false);
      try {
        subscriber.arm_deadline(options.connect_timeout);
        DisarmDeadline disarm{&subscriber};
        std::vector<std::string_view> unsubscribe{"UNSUBSCRIBE"};
        auto reply = co_await subscriber.command(unsubscribe);
        while (reply.get() == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
               detail::RedisReply::text_of(reply->element[0]) != "unsubscribe")
          reply = co_await subscriber.next_message();
      } catch (const std::exception& error) {
        subscriber.close();  // the next wait connects again
        detail::log(LogLevel::debug, fmt::format("RedisLock could not unsubscribe ({}); closed", error.what()));
      }
    }

    asio::awaitable<void> read_message() {
      auto message = co_await subscriber.next_message();
      if (message.get() == nullptr) co_return;  // the wait was cancelled
      // ["message", channel, "<next ticket>:<key>"]
      if (message->type != REDIS_REPLY_ARRAY || message->elements != 3 ||
          detail::RedisReply::text_of(message->element[0]) != "message")
        co_return;
      if (auto wakeup = detail::parse_redis_wakeup(detail::RedisReply::text_of(message->element[2])))
        waiters.notify(wakeup->key, wakeup->next_ticket);
    }

    detail::LockStrand strand;
    RedisOptions options;
    std::string channel;
    detail::RedisConnection command;
    detail::AsyncMutex command_turn;
    // Several acquires of one lock may find the listening connection down at
    // once; one of them sets it up while the others wait for it, since two
    // setting up one connection would close it under each other.
    detail::AsyncMutex listen_turn;
    std::array<std::string, detail::redis_scripts::all.size()> script_sha;
    detail::RedisConnection subscriber;
    detail::KeyedWaiters waiters;
    detail::WakeupPump pump;
  };

  RedisLock(std::shared_ptr<State> state, std::string owner) : state_(std::move(state)), owner_(std::move(owner)) {}

  static void validate(const RedisOptions& options, const std::string& owner) {
    detail::validate_owner(owner, "RedisLock");
    if (options.host.empty()) throw Error(errc::invalid_argument, "RedisOptions::host is empty");
    if (options.port == 0) throw Error(errc::invalid_argument, "RedisOptions::port is 0");
    if (options.database < 0)
      throw Error(errc::invalid_argument, fmt::format("RedisOptions::database is negative ({})", options.database));
    if (options.connect_timeout <= std::chrono::milliseconds(0))
      throw Error(errc::invalid_argument, "RedisOptions::connect_timeout must be positive");
  }

  // Connects a connection and logs it in; for both the command connection
  // and the subscriber.
  static asio::awaitable<void> open(State& state, detail::RedisConnection& connection) {
    const auto& options = state.options;
    co_await connection.connect(options.host, options.port, options.connect_timeout);
    // The login must answer within the connect timeout too: a server that
    // accepts and then says nothing must not hang connect().
    connection.arm_deadline(options.connect_timeout);
    DisarmDeadline disarm{&connection};
    if (options.password) {
      std::vector<std::string_view> auth{"AUTH"};
      if (options.username) auth.push_back(*options.username);
      auth.push_back(*options.password);
      auto reply = co_await connection.command(auth);
      if (reply.error()) {
        connection.close();
        throw Error(errc::backend_failure,
                    fmt::format("Redis at {} refused the credentials: {}", connection.endpoint(), reply.text()));
      }
    }
    if (options.database != 0) {
      const auto index = std::to_string(options.database);
      std::vector<std::string_view> select{"SELECT", index};
      auto reply = co_await connection.command(select);
      if (reply.error()) {
        connection.close();
        const bool auth = reply.text().rfind("NOAUTH", 0) == 0;
        throw Error(auth ? errc::backend_failure : errc::invalid_argument,
                    fmt::format("Redis at {} refused database {}: {}", connection.endpoint(), options.database,
                                reply.text()));
      }
    }
    // A server that wants a password nobody gave answers NOAUTH here.
    std::vector<std::string_view> ping{"PING"};
    auto reply = co_await connection.command(ping);
    if (reply.error()) {
      connection.close();
      throw Error(errc::backend_failure, fmt::format("Redis at {} refused the connection: {}{}", connection.endpoint(),
                                                     reply.text(), options.password ? "" : " (no password was given)"));
    }
  }

  static asio::awaitable<void> connect_command(std::shared_ptr<State> state) {
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await open(*state, state->command);
    co_await refuse_evicting_server(state);
    for (std::size_t index = 0; index < detail::redis_scripts::all.size(); ++index) {
      std::vector<std::string_view> load{"SCRIPT", "LOAD", detail::redis_scripts::all[index]};
      auto reply = co_await state->command.command(load);
      if (reply.error()) {
        state->command.close();
        // NOAUTH: a password is needed and none was given.
        throw Error(errc::backend_failure, fmt::format("Redis at {} refused to load lockstore's scripts: {}",
                                                       state->command.endpoint(), reply.text()));
      }
      state->script_sha[index] = std::string(reply.text());
    }
  }

  // A lease is a key with a TTL: a server that may evict such keys under
  // memory pressure (allkeys-*, volatile-*) can hand a key to a second holder
  // inside the first one's lease. INFO, not CONFIG GET: managed servers often
  // disable CONFIG.
  static asio::awaitable<void> refuse_evicting_server(std::shared_ptr<State> state) {
    if (state->options.accept_eviction) co_return;
    std::vector<std::string_view> info{"INFO", "memory"};
    auto reply = co_await state->command.command(info);
    const std::string_view text = reply.error() ? std::string_view() : reply.text();
    constexpr std::string_view field = "maxmemory_policy:";
    const auto at = text.find(field);
    std::string policy = "unknown";
    if (at != std::string_view::npos) {
      const auto begin = at + field.size();
      policy = std::string(text.substr(begin, text.find_first_of("\r\n", begin) - begin));
    }
    if (policy == "noeviction") co_return;
    state->command.close();
    throw Error(errc::backend_failure,
                fmt::format("Redis at {} has maxmemory-policy '{}', which may evict a live lease and let a second "
                            "holder in; set it to 'noeviction' (or RedisOptions::accept_eviction to accept the risk)",
                            state->command.endpoint(), policy));
  }

  // EVALSHA, falling back to EVAL when the server has lost the script
  // (restart, SCRIPT FLUSH); an error reply throws backend_failure.
  static asio::awaitable<detail::RedisReply> run_script(std::shared_ptr<State> state, detail::redis_scripts::Script script,
                                                        std::vector<std::string> keys, std::vector<std::string> arguments,
                                                        LockGuard::TimePoint answer_by = LockGuard::TimePoint::max()) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto turn = co_await state->command_turn.lock();
    if (!state->command.connected()) co_await connect_command(state);
    const auto key_count = std::to_string(keys.size());
    std::vector<std::string_view> call{"EVALSHA", state->script_sha[script], key_count};
    for (const auto& key : keys) call.push_back(key);
    for (const auto& argument : arguments) call.push_back(argument);
    // A request that serves a lease is cut off at the lease's assumed end
    // (errc::connection_lost, "no answer"): a later reply is worth nothing.
    DisarmDeadline disarm;
    if (answer_by != LockGuard::TimePoint::max()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(answer_by - std::chrono::steady_clock::now());
      state->command.arm_deadline(std::max(left, std::chrono::milliseconds(1)));
      disarm.connection = &state->command;
    }
    auto reply = co_await state->command.command(call);
    if (reply.error() && reply.text().rfind("NOSCRIPT", 0) == 0) {
      call[0] = "EVAL";
      call[1] = detail::redis_scripts::all[script];
      reply = co_await state->command.command(call);
    }
    if (reply.error())
      throw Error(errc::backend_failure,
                  fmt::format("Redis at {} failed a lockstore script: {}", state->command.endpoint(), reply.text()));
    co_return reply;
  }

  static asio::awaitable<bool> delete_if(std::shared_ptr<State> state, AdvisoryKey key, std::string field,
                                         std::string expected,
                                         LockGuard::TimePoint answer_by = LockGuard::TimePoint::max()) {
    std::vector<std::string> keys{state->lease_key(key), state->queue_key(key), state->queue_expiry_key(key)};
    std::vector<std::string> arguments{std::move(field), std::move(expected), state->channel, key.str()};
    auto reply = co_await run_script(state, detail::redis_scripts::release_script, std::move(keys), std::move(arguments),
                                     answer_by);
    const bool removed = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    if (removed) state->waiters.notify(key.str());
    co_return removed;
  }

  // Undoes a grant that raced with a cancellation.
  static asio::awaitable<void> give_back(std::shared_ptr<State> state, LockGuard guard) {
    co_await delete_if(state, guard.key(), "token", guard.token());
    guard.mark_released();
  }

  static std::uint64_t to_u64(const redisReply* reply) {
    if (reply->type == REDIS_REPLY_INTEGER) return static_cast<std::uint64_t>(reply->integer);
    return std::stoull(std::string(detail::RedisReply::text_of(reply)));
  }

  // An acquire() caller's place in the key's queue (detail::QueueSeat, as
  // PostgresLock's): taken at the first refusal, dropped by the granting script. A caller that gives
  // up leaves without waiting (the script is spawned on the strand); were
  // that lost, the ticket expires.
  struct LeaveQueue {
    std::shared_ptr<State> state;
    AdvisoryKey key;
    void operator()(std::int64_t ticket) const {
      asio::co_spawn(state->strand, leave(state, key, ticket), asio::detached);
    }

    static asio::awaitable<void> leave(std::shared_ptr<State> state, AdvisoryKey key, std::int64_t ticket) {
      try {
        std::vector<std::string> keys{state->lease_key(key), state->queue_key(key), state->queue_expiry_key(key)};
        std::vector<std::string> arguments{std::to_string(ticket), state->channel, key.str()};
        co_await run_script(state, detail::redis_scripts::leave_script, std::move(keys), std::move(arguments));
      } catch (const std::exception&) {  // the ticket expires by itself
      }
    }
  };
  using QueueSeat = detail::QueueSeat<std::int64_t, LeaveQueue>;

  // `seat` is null for try_acquire, which ignores the queue.
  static asio::awaitable<detail::Attempt> attempt_once(std::shared_ptr<State> state, std::string owner, AdvisoryKey key,
                                                       std::chrono::milliseconds ttl, QueueSeat* seat = nullptr) {
    auto proposed = random_token();
    std::vector<std::string> keys{state->lease_key(key), state->fence_key(key), state->queue_key(key),
                                  state->queue_expiry_key(key)};
    std::string ticket;
    if (seat != nullptr) ticket = std::to_string(seat->ticket.value_or(0));
    std::vector<std::string> arguments{proposed, std::move(owner), std::to_string(ttl.count()), std::move(ticket),
                                       std::to_string(detail::ticket_lifetime.count())};
    const auto sent = std::chrono::steady_clock::now();
    auto reply = co_await run_script(state, detail::redis_scripts::acquire_script, std::move(keys), std::move(arguments));
    detail::Attempt attempt;
    const bool answered = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2;
    if (answered && reply->element[0]->type != REDIS_REPLY_INTEGER) {
      if (seat != nullptr) seat->ticket.reset();
      std::string token(detail::RedisReply::text_of(reply->element[0]));
      attempt.fresh = token == proposed;
      attempt.guard.emplace(std::move(key), std::move(token), to_u64(reply->element[1]), sent + ttl);
      co_return attempt;
    }
    std::chrono::milliseconds remaining(0);
    if (answered) {
      remaining = std::chrono::milliseconds(reply->element[0]->integer);
      if (seat != nullptr && reply->element[1]->type == REDIS_REPLY_INTEGER && reply->element[1]->integer > 0)
        seat->ticket = reply->element[1]->integer;
    }
    if (seat != nullptr) attempt.ticket = seat->ticket.value_or(0);
    auto retrying = detail::retry_after_refusal(state->pump, remaining, [&] { return start_listening(state); });
    attempt.retry_at = co_await std::move(retrying);
    co_return attempt;
  }

  static asio::awaitable<void> start_listening(std::shared_ptr<State> state) {
    auto turn = co_await state->listen_turn.lock();
    if (state->pump.listening()) co_return;  // another acquire set it up meanwhile
    try {
      if (!state->subscriber.connected()) co_await open(*state, state->subscriber);
      std::vector<std::string_view> subscribe{"SUBSCRIBE", state->channel};
      auto reply = co_await state->subscriber.command(subscribe);
      if (reply.error()) throw Error(errc::backend_failure, std::string(reply.text()));
      state->pump.set_listening(true);
      state->pump.start_if_needed(state);
    } catch (const Error& error) {
      state->subscriber.close();
      detail::log(LogLevel::debug, fmt::format("RedisLock could not subscribe to releases ({}); polling", error.what()));
    } catch (...) {
      state->subscriber.close();  // cancelled half-way: nothing may stay half set up
      throw;
    }
  }

  static asio::awaitable<LockGuard> acquire_on_strand(std::shared_ptr<State> state, std::string owner, AdvisoryKey key,
                                                      std::chrono::milliseconds ttl, std::chrono::milliseconds deadline) {
    detail::WaitingScope waiting(state->pump, state);
    LeaveQueue leave{state, key};
    QueueSeat seat(std::move(leave));
    auto acquiring = detail::acquire_loop(
        state->waiters, key, deadline, [&] { return attempt_once(state, owner, key, ttl, &seat); },
        [&](LockGuard guard) { return give_back(state, std::move(guard)); });
    co_return co_await std::move(acquiring);
  }

  static asio::awaitable<std::optional<LockInfo>> inspect_on_strand(std::shared_ptr<State> state, AdvisoryKey key,
                                                                    bool clear) {
    std::vector<std::string> keys{state->lease_key(key)};
    std::vector<std::string> arguments;
    if (clear) arguments = {state->channel, key.str()};
    auto reply = co_await run_script(state, detail::redis_scripts::inspect_script, std::move(keys), std::move(arguments));
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) co_return std::nullopt;
    if (clear) state->waiters.notify(key.str());
    auto at = [&](std::size_t index) {
      return std::chrono::system_clock::time_point(std::chrono::milliseconds(static_cast<std::int64_t>(to_u64(reply->element[index]))));
    };
    co_return LockInfo{key, std::string(detail::RedisReply::text_of(reply->element[0])), to_u64(reply->element[1]),
                       at(2), at(3)};
  }

  // SCAN MATCH needs the prefix with its glob characters escaped.
  static std::string glob_escaped(std::string_view text) {
    std::string escaped;
    for (const char c : text) {
      if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') escaped.push_back('\\');
      escaped.push_back(c);
    }
    return escaped;
  }

  static asio::awaitable<std::vector<std::string>> scan_leases(std::shared_ptr<State> state) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto turn = co_await state->command_turn.lock();
    if (!state->command.connected()) co_await connect_command(state);
    const auto pattern = glob_escaped(state->options.key_prefix + "lease:") + "*";
    const auto prefix_size = state->options.key_prefix.size() + 6;
    std::vector<std::string> names;
    std::string cursor = "0";
    do {
      std::vector<std::string_view> scan{"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
      auto reply = co_await state->command.command(scan);
      if (reply.error() || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
        throw Error(errc::backend_failure, fmt::format("Redis at {} failed SCAN: {}", state->command.endpoint(),
                                                       reply.error() ? reply.text() : "unexpected reply"));
      cursor = std::string(detail::RedisReply::text_of(reply->element[0]));
      const auto* batch = reply->element[1];
      for (std::size_t index = 0; index < batch->elements; ++index)
        names.push_back(std::string(detail::RedisReply::text_of(batch->element[index])).substr(prefix_size));
    } while (cursor != "0");
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());  // SCAN may repeat a key
    co_return names;
  }

  static asio::awaitable<std::vector<LockInfo>> list_on_strand(std::shared_ptr<State> state) {
    auto names = co_await scan_leases(state);
    std::vector<LockInfo> leases;
    for (auto& name : names) {
      auto info = co_await inspect_on_strand(state, AdvisoryKey(std::move(name)), false);
      if (info) leases.push_back(std::move(*info));  // it may have expired since the scan
    }
    co_return leases;
  }

  std::shared_ptr<State> state_;
  std::string owner_;
};

static_assert(AdministrableLock<RedisLock>);

}  // namespace lockstore
