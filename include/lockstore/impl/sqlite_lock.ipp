// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// SqliteLock's definitions (see sqlite_lock.hpp; detail/config.hpp for the
// separately compiled mode).
#pragma once

#include "lockstore/sqlite_lock.hpp"

#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/sqlite_lock_sql.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/random.hpp"
#include "lockstore/detail/sqlite_connection.hpp"
#include "lockstore/detail/sqlite_database_run.hpp"
#include "lockstore/detail/sqlite_fenced.hpp"
#include "lockstore/detail/sqlite_wake.hpp"
#include "lockstore/detail/sqlite_wakeups.hpp"

#include <limits>
#include <mutex>

namespace lockstore {

// Every job and every call with by-value arguments below is made in its own
// statement and only then awaited: g++ 12 corrupts by-value arguments of a
// call made inside a co_await expression (see README "Known compiler traps").


struct SqliteLock::Outcome {
  std::optional<std::string> token;  // the lease's token when granted
  std::uint64_t fence = 0;
  std::string holder_token;          // when refused: who holds it, and until when
  std::int64_t holder_expires_ms = 0;
  std::optional<std::int64_t> ticket;  // the queue ticket afterwards
};

struct SqliteLock::Shared {
  explicit Shared(const SqliteDatabase& database)
      : tokens(&detail::local_tokens_of(database)),
        wakeups(&detail::wakeups_of(database)),
        board(detail::wakeups_of(database).board()) {}
  detail::LocalTokens* tokens;
  detail::SqliteWakeups* wakeups;
  detail::WakeBoard* board;
};

struct SqliteLock::LeaveQueue {
  SqliteDatabase database;
  std::string key;
  void operator()(std::int64_t ticket) const {
    detail::post_on(database,
                    [ticket, key = key, wakeups = &detail::wakeups_of(database)](detail::SqliteConnection& connection) {
                      connection.prepare(detail::sqlite_lock_sql::drop_ticket).bind(1, ticket).run();
                      wakeups->notify(key);
                      announce_release(connection, wakeups->board(), key);
                    });
  }
};

class SqliteLock::PendingAttempt {
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
    detail::post_on(database_, [job = started_->job, proposed = started_->proposed, key = key_,
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
    started_.emplace(Started{detail::start_on(database_, std::move(job)), std::move(proposed), sent});
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

LOCKSTORE_DECL SqliteLock::SqliteLock(SqliteDatabase database, std::string owner)
  : database_(std::move(database)), owner_(std::move(owner)) {
  detail::validate_owner(owner_, "SqliteLock");
}

LOCKSTORE_DECL auto SqliteLock::try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl)
    -> asio::awaitable<std::optional<LockGuard>> {
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

LOCKSTORE_DECL auto SqliteLock::acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                   std::chrono::milliseconds deadline) -> asio::awaitable<LockGuard> {
  detail::validate_ttl(ttl, "SqliteLock::acquire");
  database_.require_writable("SqliteLock::acquire");
  LeaveQueue leave{database_, key.str()};
  QueueSeat seat(std::move(leave));
  auto subscription = detail::wakeups_of(database_).waiters().subscribe(key.str());
  PendingAttempt pending(database_, key.str());
  const auto executor = co_await asio::this_coro::executor;
  // A release that wakes this caller queues its next attempt on the
  // connection thread at once (detail/sqlite_wakeups.hpp). Declared after
  // what its callback uses: it is unregistered before they are destroyed.
  detail::SqliteWakeups::EarlyStart early(
      detail::wakeups_of(database_), key.str(), subscription, detail::io_context_of(executor),
      [this, &pending, &key, ttl](std::int64_t ticket) { start_attempt(pending, key, ttl, true, ticket); });
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

LOCKSTORE_DECL auto SqliteLock::extend(LockGuard& guard, std::chrono::milliseconds ttl) -> asio::awaitable<bool> {
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
  const bool extended =
      co_await detail::run_on(database_, std::move(job)) && std::chrono::steady_clock::now() < assumed_end;
  if (extended) guard.confirm_until(sent + ttl);
  co_return extended;
}

LOCKSTORE_DECL auto SqliteLock::fenced(const LockGuard& guard, std::vector<SqlStatement> statements)
    -> asio::awaitable<std::vector<SqlResult>> {
  database_.require_writable("SqliteLock::fenced");
  if (guard.released() || guard.token().empty())
    throw Error(errc::invalid_argument,
                fmt::format("SqliteLock::fenced: the guard for '{}' was released; a fenced write needs a held lease",
                            guard.key().str()));
  auto job = [key = guard.key().str(), token = guard.token(),
              statements = std::move(statements)](detail::SqliteConnection& connection) {
    return detail::sqlite_fenced::run(connection, key, token, statements);
  };
  co_return co_await detail::run_on(database_, std::move(job));
}

LOCKSTORE_DECL auto SqliteLock::admit(std::string resource, std::uint64_t fence) -> asio::awaitable<bool> {
  database_.require_writable("SqliteLock::admit");
  if (resource.empty()) throw Error(errc::invalid_argument, "SqliteLock::admit: the resource name is empty");
  if (fence > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    throw Error(errc::invalid_argument, fmt::format("SqliteLock::admit: fence {} is above 2^63 - 1", fence));
  auto job = [resource = std::move(resource), fence](detail::SqliteConnection& connection) {
    return detail::sqlite_fenced::run_admit(connection, resource, static_cast<std::int64_t>(fence));
  };
  co_return co_await detail::run_on(database_, std::move(job));
}

LOCKSTORE_DECL auto SqliteLock::take_over(AdvisoryKey key, std::chrono::milliseconds ttl)
    -> asio::awaitable<std::optional<LockGuard>> {
  detail::validate_ttl(ttl, "SqliteLock::take_over");
  database_.require_writable("SqliteLock::take_over");
  const auto sent = std::chrono::steady_clock::now();
  auto job = [key = key.str(), owner = owner_, proposed = random_token(), ttl,
              tokens = &detail::local_tokens_of(database_)](detail::SqliteConnection& connection) {
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
  auto outcome = co_await detail::run_on(database_, std::move(job));
  if (!outcome.token) co_return std::nullopt;
  co_return LockGuard(std::move(key), std::move(*outcome.token), outcome.fence,
                      sent + std::chrono::milliseconds(outcome.holder_expires_ms));
}

LOCKSTORE_DECL auto SqliteLock::release(LockGuard guard) -> asio::awaitable<void> {
  if (guard.released()) co_return;
  database_.require_writable("SqliteLock::release");
  auto job = [key = guard.key().str(), token = guard.token(), shared = Shared(database_)](
                 detail::SqliteConnection& connection) { release_on(connection, shared, key, token); };
  co_await detail::run_on(database_, std::move(job));
  guard.mark_released();
}

LOCKSTORE_DECL auto SqliteLock::release_all() -> asio::awaitable<std::size_t> {
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
  co_return co_await detail::run_on(database_, std::move(job));
}

LOCKSTORE_DECL auto SqliteLock::list() -> asio::awaitable<std::vector<LockInfo>> {
  co_return co_await detail::run_on(database_, [](detail::SqliteConnection& connection) {
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

LOCKSTORE_DECL auto SqliteLock::force_release(AdvisoryKey key) -> asio::awaitable<std::optional<LockInfo>> {
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
  co_return co_await detail::run_on(database_, std::move(job));
}

LOCKSTORE_DECL auto SqliteLock::release_on(detail::SqliteConnection& connection, const Shared& shared, const std::string& key,
                       const std::string& token) -> void {
  auto statement = connection.prepare(detail::sqlite_lock_sql::release);
  statement.bind(1, key).bind(2, token);
  const bool removed = statement.run() == 1;
  shared.tokens->erase(token);
  if (removed) {
    shared.wakeups->notify(key);  // at once, before the releaser resumes
    announce_release(connection, shared.board, key);
  }
}

LOCKSTORE_DECL auto SqliteLock::announce_release(detail::SqliteConnection& connection, detail::WakeBoard* board,
                             const std::string& key) -> void {
  if (board == nullptr || !board->active()) return;
  auto statement = connection.prepare(detail::sqlite_lock_sql::next_ticket);
  statement.bind(1, key).bind(2, detail::wall_clock_ms());
  board->publish(key, statement.step() ? statement.int64(0) : 0);
}

LOCKSTORE_DECL auto SqliteLock::attempt_job(std::string key, std::chrono::milliseconds ttl, std::string proposed, bool queued,
                 std::optional<std::int64_t> ticket) -> auto {
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

LOCKSTORE_DECL auto SqliteLock::start_attempt(PendingAttempt& pending, const AdvisoryKey& key, std::chrono::milliseconds ttl, bool queued,
                   std::int64_t ticket) -> void {
  auto proposed = random_token();
  auto job = attempt_job(key.str(), ttl, proposed, queued, ticket != 0 ? std::optional(ticket) : std::nullopt);
  pending.start(std::move(job), std::move(proposed));
}

LOCKSTORE_DECL auto SqliteLock::take_attempt(PendingAttempt& pending, AdvisoryKey key,
                                              std::chrono::milliseconds ttl, QueueSeat* seat)
    -> asio::awaitable<detail::Attempt> {
  auto started = *pending.peek();
  auto waiting = detail::outcome_on(database_, started.job);
  auto outcome = co_await std::move(waiting);
  pending.forget();
  co_return settle(std::move(key), started.proposed, std::move(outcome), seat, started.sent + ttl);
}

LOCKSTORE_DECL auto SqliteLock::settle(AdvisoryKey key, const std::string& proposed, Outcome outcome, QueueSeat* seat,
                       std::chrono::steady_clock::time_point valid_until) -> detail::Attempt {
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

LOCKSTORE_DECL auto SqliteLock::retry_time(const Outcome& outcome) -> std::chrono::steady_clock::time_point {
  const auto now = std::chrono::steady_clock::now();
  const auto until_expiry = std::chrono::milliseconds(
      std::max<std::int64_t>(0, outcome.holder_expires_ms - detail::wall_clock_ms()) + 1);
  if (detail::local_tokens_of(database_).contains(outcome.holder_token)) return now + until_expiry;
  bool watcher_started = false;
  const bool watched = detail::wakeups_of(database_).watch(&watcher_started);
  if (watcher_started) return now;
  const auto poll = watched ? std::max(SqliteDatabase::watched_poll_interval, database_.options().poll_interval).count()
                            : database_.options().poll_interval.count();
  const auto jittered = std::chrono::microseconds(detail::ThreadRandom::between(poll * 500, poll * 1000));
  return now + std::min<std::chrono::microseconds>(until_expiry, jittered);
}

LOCKSTORE_DECL auto SqliteLock::from_epoch_ms(std::int64_t ms) -> std::chrono::system_clock::time_point {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

}  // namespace lockstore
