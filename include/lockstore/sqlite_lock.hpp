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
#include "lockstore/owner.hpp"
#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/random.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"
#include "lockstore/sqlite_database.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

// Every job and every call with by-value arguments below is made in its own
// statement and only then awaited: g++ 12 corrupts by-value arguments of a
// call made inside a co_await expression (see README "Known compiler traps").

namespace detail::sqlite_lock_sql {

// A single statement is its own transaction, and SQLite takes the write lock
// before it reads (OP_Transaction with the write flag), so this upsert is
// already a read-then-write under the write lock, as BEGIN IMMEDIATE would be.
// Its clock is read by lockstore_now_ms() in the statement, so after that
// lock is held: a statement that waited seconds for another connection's
// write still gives its lease the full TTL from the moment it runs.
//
// The clock has whole milliseconds: a lease runs to now + ttl + 1 ms, so that
// it never ends before the holder's valid_until (its request's send time +
// ttl), however late in its millisecond the statement ran.
//
// The row is taken only when it is free (expired or released): every
// acquisition is its own holder, whoever the owner. The fence is
// max(last + 1, the clock in microseconds), so fences keep growing even
// when the file is deleted and created again.
inline constexpr const char* acquire = R"sql(
INSERT INTO lockstore_leases (key, owner, token, fence, acquired_ms, expires_ms)
SELECT ?1, ?2, ?3, now.ms * 1000, now.ms, now.ms + ?4 + 1 FROM (SELECT lockstore_now_ms() AS ms) AS now WHERE true
ON CONFLICT (key) DO UPDATE SET
  token       = excluded.token,
  fence       = max(fence + 1, excluded.fence),
  acquired_ms = excluded.acquired_ms,
  owner       = excluded.owner,
  expires_ms  = excluded.expires_ms
WHERE expires_ms <= excluded.acquired_ms
  AND (?5 IS NULL OR NOT EXISTS (SELECT 1 FROM lockstore_waiters AS w
                                 WHERE w.key = excluded.key AND w.ticket < ?5
                                   AND w.expires_ms > excluded.acquired_ms))
RETURNING token, fence)sql";

// The explicit takeover (SqliteLock::take_over): like acquire, but a live
// lease of the same owner is taken too, with a new token and a larger fence
// (its old guard is fenced out), and its expiry never moves earlier. It
// returns how long the lease now runs (the new guard's valid_until).
inline constexpr const char* take_over = R"sql(
INSERT INTO lockstore_leases (key, owner, token, fence, acquired_ms, expires_ms)
SELECT ?1, ?2, ?3, now.ms * 1000, now.ms, now.ms + ?4 + 1 FROM (SELECT lockstore_now_ms() AS ms) AS now WHERE true
ON CONFLICT (key) DO UPDATE SET
  token       = excluded.token,
  fence       = max(fence + 1, excluded.fence),
  acquired_ms = excluded.acquired_ms,
  expires_ms  = max(CASE WHEN owner = excluded.owner THEN expires_ms ELSE 0 END, excluded.expires_ms),
  owner       = excluded.owner
WHERE owner = excluded.owner OR expires_ms <= excluded.acquired_ms
RETURNING token, fence, expires_ms - acquired_ms - 1)sql";

// The queue of acquire() callers (schema v3). ?5 above is the caller's
// ticket: older live tickets go first. NULL (try_acquire) ignores the queue;
// a caller without a ticket yet passes the largest integer, behind everyone.
inline constexpr const char* take_ticket = R"sql(
INSERT INTO lockstore_waiters (ticket, key, expires_ms) VALUES (?1, ?2, ?3)
ON CONFLICT (ticket) DO UPDATE SET expires_ms = excluded.expires_ms
RETURNING ticket)sql";

inline constexpr const char* drop_expired_tickets =
    "DELETE FROM lockstore_waiters WHERE key = ?1 AND expires_ms <= ?2";

inline constexpr const char* drop_ticket = "DELETE FROM lockstore_waiters WHERE ticket = ?1";

inline constexpr const char* next_ticket =
    "SELECT ticket FROM lockstore_waiters WHERE key = ?1 AND expires_ms > ?2 ORDER BY ticket LIMIT 1";

inline constexpr const char* holder = "SELECT token, expires_ms FROM lockstore_leases WHERE key = ?1";

// The clock is read under the write lock, as in acquire.
inline constexpr const char* extend = R"sql(
UPDATE lockstore_leases SET expires_ms = now.ms + ?3 + 1 FROM (SELECT lockstore_now_ms() AS ms) AS now
WHERE key = ?1 AND token = ?2 AND expires_ms > now.ms)sql";

inline constexpr const char* release =
    "UPDATE lockstore_leases SET owner = '', token = '', expires_ms = 0 WHERE key = ?1 AND token = ?2";

// RETURNING reports the row after the update, so the operator paths that
// report what they cleared read first, in the same BEGIN IMMEDIATE.
inline constexpr const char* owned_by = R"sql(
SELECT key, token, expires_ms > ?2 FROM lockstore_leases WHERE owner = ?1 AND token <> '')sql";

inline constexpr const char* release_owned =
    "UPDATE lockstore_leases SET owner = '', token = '', expires_ms = 0 WHERE owner = ?1 AND token <> ''";

inline constexpr const char* held = R"sql(
SELECT owner, fence, acquired_ms, expires_ms, token FROM lockstore_leases WHERE key = ?1 AND token <> '')sql";

inline constexpr const char* clear =
    "UPDATE lockstore_leases SET owner = '', token = '', expires_ms = 0 WHERE key = ?1";

inline constexpr const char* list = R"sql(
SELECT key, owner, fence, acquired_ms, expires_ms FROM lockstore_leases
WHERE expires_ms > ?1 ORDER BY key)sql";

}  // namespace detail::sqlite_lock_sql

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

  /// Throws errc::invalid_argument for an empty owner, one over 512 bytes or
  /// one with a NUL byte.
  explicit SqliteLock(SqliteDatabase database, std::string owner = random_owner())
      : database_(std::move(database)), owner_(std::move(owner)) {
    detail::validate_owner(owner_, "SqliteLock");
  }

  const std::string& owner() const noexcept { return owner_; }
  const SqliteDatabase& database() const noexcept { return database_; }

  /// One attempt: std::nullopt while any live lease holds the key, this
  /// owner's included (every acquisition is its own holder; see take_over).
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "SqliteLock::try_acquire");
    database_.require_writable("SqliteLock::try_acquire");
    // If this frame is destroyed before it takes the outcome (its
    // io_context shut down), `pending` gives back what was granted.
    PendingAttempt pending(database_, key.str());
    start_attempt(pending, key, ttl, false, 0);
    auto taking = take_attempt(pending, std::move(key), ttl, nullptr);
    auto attempt = co_await std::move(taking);
    co_return std::move(attempt.guard);
  }

  /// Waits until acquired; errc::timeout after `deadline`; operation_aborted
  /// on per-operation cancellation, with any lease granted meanwhile undone.
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline) {
    detail::validate_ttl(ttl, "SqliteLock::acquire");
    database_.require_writable("SqliteLock::acquire");
    LeaveQueue leave{database_, key.str()};
    QueueSeat seat(std::move(leave));
    auto subscription = database_.wakeups().waiters().subscribe(key.str());
    PendingAttempt pending(database_, key.str());
    const auto executor = co_await asio::this_coro::executor;
    // A release that wakes this caller queues its next attempt on the
    // connection thread at once (detail/sqlite_wakeups.hpp). Declared after
    // what its callback uses: it is unregistered before they are destroyed.
    detail::SqliteWakeups::EarlyStart early(database_.wakeups(), key.str(), subscription,
                                            detail::io_context_of(executor),
                                            [this, &pending, &key, ttl](std::int64_t ticket) {
                                              start_attempt(pending, key, ttl, true, ticket);
                                            });
    auto acquiring = detail::acquire_loop(
        subscription, key, deadline,
        [&]() -> asio::awaitable<detail::Attempt> {
          const auto seen = subscription.notifications();
          const auto started_early = early.take();
          if (!started_early) start_attempt(pending, key, ttl, true, seat.ticket.value_or(0));
          auto taking = take_attempt(pending, key, ttl, &seat);
          auto attempt = co_await std::move(taking);
          attempt.notifications_seen = started_early;
          if (!attempt.guard) early.arm(attempt.ticket, started_early.value_or(seen));
          co_return attempt;
        },
        [this](LockGuard guard) { return release(std::move(guard)); });
    co_return co_await std::move(acquiring);
  }

  /// New expiry = now + ttl while the guard's token holds a live lease
  /// ("now" read once the statement holds the write lock). On true, the
  /// guard's valid_until() becomes the time this call was made + ttl. False
  /// also when the guard's valid_until() passed before the answer came.
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "SqliteLock::extend");
    database_.require_writable("SqliteLock::extend");
    const auto sent = std::chrono::steady_clock::now();
    const auto assumed_end = guard.valid_until();
    if (sent >= assumed_end) co_return false;  // the holder must already assume it lost
    auto job = [key = guard.key().str(), token = guard.token(), ttl](detail::SqliteConnection& connection) {
      auto statement = connection.prepare(detail::sqlite_lock_sql::extend);
      statement.bind(1, key).bind(2, token).bind(3, ttl.count());
      return statement.run() == 1;
    };
    // A confirmation that comes after the lease's assumed end (the statement
    // waited that long for the write lock) counts as lost.
    const bool extended = co_await database_.run(std::move(job)) && std::chrono::steady_clock::now() < assumed_end;
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
    detail::validate_ttl(ttl, "SqliteLock::take_over");
    database_.require_writable("SqliteLock::take_over");
    const auto sent = std::chrono::steady_clock::now();
    auto job = [key = key.str(), owner = owner_, proposed = random_token(), ttl,
                tokens = &database_.local_tokens()](detail::SqliteConnection& connection) {
      Outcome result;
      auto statement = connection.prepare(detail::sqlite_lock_sql::take_over);
      statement.bind(1, key).bind(2, owner).bind(3, proposed).bind(4, ttl.count());
      if (statement.step()) {
        result.token = statement.text(0);
        result.fence = static_cast<std::uint64_t>(statement.int64(1));
        result.holder_expires_ms = statement.int64(2);  // here: how long the lease runs from now
        tokens->insert(*result.token);
      }
      return result;
    };
    auto outcome = co_await database_.run(std::move(job));
    if (!outcome.token) co_return std::nullopt;
    co_return LockGuard(std::move(key), std::move(*outcome.token), outcome.fence,
                        sent + std::chrono::milliseconds(outcome.holder_expires_ms));
  }

  /// Removes the lease if the guard's token still holds it (never anyone
  /// else's), wakes this process's waiters, and marks the guard released.
  /// On a backend error the guard stays unreleased and the error is thrown.
  asio::awaitable<void> release(LockGuard guard) {
    if (guard.released()) co_return;
    database_.require_writable("SqliteLock::release");
    auto job = [key = guard.key().str(), token = guard.token(), shared = Shared(database_)](
                   detail::SqliteConnection& connection) { release_on(connection, shared, key, token); };
    co_await database_.run(std::move(job));
    guard.mark_released();
  }

  /// Removes every lease of this owner; returns how many were still live.
  asio::awaitable<std::size_t> release_all() {
    database_.require_writable("SqliteLock::release_all");
    auto job = [owner = owner_, shared = Shared(database_)](detail::SqliteConnection& connection) {
      detail::Transaction transaction(connection);
      std::vector<std::pair<std::string, std::string>> cleared;  // key, token
      std::size_t live = 0;
      {
        auto statement = connection.prepare(detail::sqlite_lock_sql::owned_by);
        statement.bind(1, owner).bind(2, detail::wall_clock_ms());
        while (statement.step()) {
          cleared.emplace_back(statement.text(0), statement.text(1));
          live += statement.int64(2) != 0 ? 1 : 0;
        }
      }
      connection.prepare(detail::sqlite_lock_sql::release_owned).bind(1, owner).run();
      transaction.commit();
      for (const auto& [key, token] : cleared) {
        shared.tokens->erase(token);
        shared.wakeups->notify(key);
        announce_release(connection, shared.board, key);
      }
      return live;
    };
    co_return co_await database_.run(std::move(job));
  }

  /// The live leases of every owner, ordered by key.
  asio::awaitable<std::vector<LockInfo>> list() {
    co_return co_await database_.run([](detail::SqliteConnection& connection) {
      auto statement = connection.prepare(detail::sqlite_lock_sql::list);
      statement.bind(1, detail::wall_clock_ms());
      std::vector<LockInfo> leases;
      while (statement.step())
        leases.push_back(LockInfo{AdvisoryKey(statement.text(0)), statement.text(1),
                                  static_cast<std::uint64_t>(statement.int64(2)),
                                  from_epoch_ms(statement.int64(3)), from_epoch_ms(statement.int64(4))});
      return leases;
    });
  }

  /// For operators: clears whatever lease holds `key`, whoever owns it, and
  /// returns it (std::nullopt when nothing held it). Its holder's extend and
  /// release then fail or do nothing; its fence stays used.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key) {
    database_.require_writable("SqliteLock::force_release");
    auto job = [key, shared = Shared(database_)](detail::SqliteConnection& connection) -> std::optional<LockInfo> {
      detail::Transaction transaction(connection);
      std::optional<LockInfo> info;
      std::string token;
      {
        auto statement = connection.prepare(detail::sqlite_lock_sql::held);
        statement.bind(1, key.str());
        if (!statement.step()) return std::nullopt;
        info.emplace(LockInfo{key, statement.text(0), static_cast<std::uint64_t>(statement.int64(1)),
                              from_epoch_ms(statement.int64(2)), from_epoch_ms(statement.int64(3))});
        token = statement.text(4);
      }
      connection.prepare(detail::sqlite_lock_sql::clear).bind(1, key.str()).run();
      transaction.commit();
      shared.tokens->erase(token);
      shared.wakeups->notify(key.str());
      announce_release(connection, shared.board, key.str());
      return info;
    };
    co_return co_await database_.run(std::move(job));
  }

 private:
  // An acquire() caller's place in the key's queue. The ticket is taken at
  // the first refusal and dropped by the statement that grants the lease;
  // if the caller gives up (deadline, cancellation, error, or its frame is
  // destroyed) the destructor drops it without waiting, and wakes the
  // waiters behind it.
  // Leaving the queue: the ticket is dropped on the connection thread
  // (queued, not awaited), and the next in line is woken, here and in other
  // processes.
  struct LeaveQueue {
    SqliteDatabase database;
    std::string key;
    void operator()(std::int64_t ticket) const {
      database.post([ticket, key = key, wakeups = &database.wakeups()](detail::SqliteConnection& connection) {
        connection.prepare(detail::sqlite_lock_sql::drop_ticket).bind(1, ticket).run();
        wakeups->notify(key);
        announce_release(connection, wakeups->board(), key);
      });
    }
  };
  using QueueSeat = detail::QueueSeat<std::int64_t, LeaveQueue>;

  // What a job may keep of the handle: the parts that live as long as the
  // connection thread (a job must not hold a SqliteDatabase, nor point into
  // a SqliteLock that may be gone by the time it runs).
  struct Shared {
    explicit Shared(const SqliteDatabase& database)
        : tokens(&database.local_tokens()), wakeups(&database.wakeups()), board(database.wakeups().board()) {}
    SqliteDatabase::LocalTokens* tokens;
    detail::SqliteWakeups* wakeups;
    detail::WakeBoard* board;
  };

  // Removes the lease if `token` still holds it and wakes the next waiter,
  // here and in other processes. On the connection thread.
  static void release_on(detail::SqliteConnection& connection, const Shared& shared, const std::string& key,
                         const std::string& token) {
    auto statement = connection.prepare(detail::sqlite_lock_sql::release);
    statement.bind(1, key).bind(2, token);
    const bool removed = statement.run() == 1;
    shared.tokens->erase(token);
    if (removed) {
      shared.wakeups->notify(key);  // at once, before the releaser resumes
      announce_release(connection, shared.board, key);
    }
  }

  // Tells waiters in other processes that `key` may be free, naming the
  // ticket next in line so that only its holder looks. Runs on the
  // connection thread, after the statement that freed the key.
  static void announce_release(detail::SqliteConnection& connection, detail::WakeBoard* board,
                               const std::string& key) {
    if (board == nullptr || !board->active()) return;
    auto statement = connection.prepare(detail::sqlite_lock_sql::next_ticket);
    statement.bind(1, key).bind(2, detail::wall_clock_ms());
    board->publish(key, statement.step() ? statement.int64(0) : 0);
  }

  struct Outcome {
    std::optional<std::string> token;  // the lease's token when granted
    std::uint64_t fence = 0;
    std::string holder_token;          // when refused: who holds it, and until when
    std::int64_t holder_expires_ms = 0;
    std::optional<std::int64_t> ticket;  // the queue ticket afterwards
  };

  // An attempt queued on the connection thread, until its caller takes the
  // outcome. For acquire() it may be queued early, by the thread that woke
  // the waiter, before the waiter's own executor has run it; the waiter
  // takes it as its next attempt. If the caller never takes it (its
  // coroutine was cancelled first, or destroyed, as when its io_context
  // shuts down), a job queued behind it gives back what it was granted.
  class PendingAttempt {
   public:
    struct Started {
      detail::SqliteWorker::Started<Outcome> job;
      std::string proposed;  // the token a new lease got
      std::chrono::steady_clock::time_point sent;  // when the attempt was queued
    };

    PendingAttempt(SqliteDatabase database, std::string key) : database_(std::move(database)), key_(std::move(key)) {}
    PendingAttempt(const PendingAttempt&) = delete;
    PendingAttempt& operator=(const PendingAttempt&) = delete;
    ~PendingAttempt() {
      if (!started_) return;
      database_.post([job = started_->job, proposed = started_->proposed, key = key_,
                      shared = Shared(database_)](detail::SqliteConnection& connection) {
        const Outcome* result = job.peek();
        if (result == nullptr) return;
        const Outcome& untaken = *result;
        if (untaken.ticket) connection.prepare(detail::sqlite_lock_sql::drop_ticket).bind(1, *untaken.ticket).run();
        // A refreshed lease of this owner (another token) was never ours to give back.
        if (untaken.token && *untaken.token == proposed) release_on(connection, shared, key, proposed);
      });
    }

    template <class Job>
    void start(Job job, std::string proposed) {
      std::lock_guard lock(mutex_);
      if (started_) return;  // one at a time; the caller takes it before it starts another
      const auto sent = std::chrono::steady_clock::now();
      started_.emplace(Started{database_.start(std::move(job)), std::move(proposed), sent});
    }

    std::optional<Started> peek() {
      std::lock_guard lock(mutex_);
      return started_;
    }

    void forget() {
      std::lock_guard lock(mutex_);
      started_.reset();
    }

   private:
    SqliteDatabase database_;
    std::string key_;
    std::mutex mutex_;
    std::optional<Started> started_;
  };

  // The job of one attempt: one statement when granted. A queued attempt
  // (acquire) that is refused also takes or refreshes its ticket; try_acquire
  // ignores the queue. `proposed` is the token a new lease gets.
  auto attempt_job(std::string key, std::chrono::milliseconds ttl, std::string proposed, bool queued,
                   std::optional<std::int64_t> ticket) {
    return [key = std::move(key), owner = owner_, proposed = std::move(proposed), ttl, queued, ticket,
            shared = Shared(database_)](detail::SqliteConnection& connection) {
          Outcome result;
          result.ticket = ticket;
          // A queued attempt writes twice (the lease, then the ticket): one
          // transaction makes that one commit to the WAL instead of two.
          std::optional<detail::Transaction> transaction;
          if (queued) transaction.emplace(connection);
          const auto now = detail::wall_clock_ms();
          {
            auto statement = connection.prepare(detail::sqlite_lock_sql::acquire);
            statement.bind(1, key).bind(2, owner).bind(3, proposed).bind(4, ttl.count());
            if (queued) statement.bind(5, ticket.value_or(std::numeric_limits<std::int64_t>::max()));
            if (statement.step()) {
              result.token = statement.text(0);
              result.fence = static_cast<std::uint64_t>(statement.int64(1));
            }
          }
          if (result.token) {
            if (ticket) connection.prepare(detail::sqlite_lock_sql::drop_ticket).bind(1, *ticket).run();
            if (transaction) transaction->commit();
            shared.tokens->insert(*result.token);
            result.ticket.reset();
            return result;
          }
          if (queued) {
            if (!ticket) connection.prepare(detail::sqlite_lock_sql::drop_expired_tickets).bind(1, key).bind(2, now).run();
            auto statement = connection.prepare(detail::sqlite_lock_sql::take_ticket);
            if (ticket) statement.bind(1, *ticket);  // unbound: NULL, a new ticket
            statement.bind(2, key).bind(3, now + detail::ticket_lifetime.count());
            if (statement.step()) result.ticket = statement.int64(0);
            // Filed before the commit: a release that names this ticket
            // can only follow it, and then rings this process alone.
            if (result.ticket && shared.board != nullptr) shared.board->file_ticket(*result.ticket);
          }
          auto statement = connection.prepare(detail::sqlite_lock_sql::holder);
          statement.bind(1, key);
          if (statement.step()) {
            result.holder_token = statement.text(0);
            result.holder_expires_ms = statement.int64(1);
          }
          if (transaction) transaction->commit();
          return result;
    };
  }

  // Queues an attempt in `pending`: for acquire() (`queued`) with the
  // caller's queue ticket (0: none yet), for try_acquire() outside the queue.
  void start_attempt(PendingAttempt& pending, const AdvisoryKey& key, std::chrono::milliseconds ttl, bool queued,
                     std::int64_t ticket) {
    auto proposed = random_token();
    auto job = attempt_job(key.str(), ttl, proposed, queued, ticket != 0 ? std::optional(ticket) : std::nullopt);
    pending.start(std::move(job), std::move(proposed));
  }

  // Awaits the attempt in `pending` and takes it. Taken only once its
  // outcome is in hand: if this coroutine is cancelled before (Asio throws
  // at the co_await) or destroyed, `pending` gives back what it was granted.
  asio::awaitable<detail::Attempt> take_attempt(PendingAttempt& pending, AdvisoryKey key,
                                                std::chrono::milliseconds ttl, QueueSeat* seat) {
    auto started = *pending.peek();
    auto waiting = database_.outcome(started.job);
    auto outcome = co_await std::move(waiting);
    pending.forget();
    co_return settle(std::move(key), started.proposed, std::move(outcome), seat, started.sent + ttl);
  }

  detail::Attempt settle(AdvisoryKey key, const std::string& proposed, Outcome outcome, QueueSeat* seat,
                         std::chrono::steady_clock::time_point valid_until) {
    if (seat != nullptr) seat->ticket = outcome.ticket;
    detail::Attempt attempt;
    attempt.ticket = outcome.ticket.value_or(0);
    if (outcome.token) {
      attempt.fresh = *outcome.token == proposed;
      attempt.guard.emplace(std::move(key), std::move(*outcome.token), outcome.fence, valid_until);
      return attempt;
    }
    attempt.retry_at = retry_time(outcome);
    return attempt;
  }

  // When to look again: at the holder's expiry, and, if the holder is in
  // another process, no later than a jittered poll interval: the long
  // backstop one when that process's release will be announced on the wake
  // file, the short one otherwise. A holder in this process wakes us itself.
  // The first wait on another process's holder starts this handle's watcher;
  // a release announced before it started is not delivered, so that waiter
  // looks again at once instead of sleeping to the backstop (and files its
  // ticket under the watcher's new doorbell).
  std::chrono::steady_clock::time_point retry_time(const Outcome& outcome) {
    const auto now = std::chrono::steady_clock::now();
    const auto until_expiry = std::chrono::milliseconds(
        std::max<std::int64_t>(0, outcome.holder_expires_ms - detail::wall_clock_ms()) + 1);
    if (database_.local_tokens().contains(outcome.holder_token)) return now + until_expiry;
    bool watcher_started = false;
    const bool watched = database_.wakeups().watch(&watcher_started);
    if (watcher_started) return now;
    const auto poll = watched ? std::max(SqliteDatabase::watched_poll_interval, database_.options().poll_interval).count()
                              : database_.options().poll_interval.count();
    const auto jittered = std::chrono::microseconds(detail::ThreadRandom::between(poll * 500, poll * 1000));
    return now + std::min<std::chrono::microseconds>(until_expiry, jittered);
  }

  static std::chrono::system_clock::time_point from_epoch_ms(std::int64_t ms) {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
  }

  SqliteDatabase database_;
  std::string owner_;
};

static_assert(AdministrableLock<SqliteLock>);

}  // namespace lockstore
