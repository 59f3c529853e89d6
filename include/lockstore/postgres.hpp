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
#include "lockstore/owner.hpp"
#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/pg_connection.hpp"
#include "lockstore/detail/random.hpp"
#include "lockstore/detail/remote_lock.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

namespace detail::postgres_sql {

/// The version of the lease table layout, recorded in lockstore_schema.
inline constexpr int schema_version = 2;

/// Channel of the release notifications; the payload is the key in hex.
inline constexpr const char* channel = "lockstore_released";

// Creating the tables is serialised by a transaction-scoped advisory lock, so
// many clients connecting to a new database at once all succeed.
inline constexpr const char* schema = R"sql(
SET client_min_messages = warning;
BEGIN;
SELECT pg_advisory_xact_lock(7526311204373160121);
CREATE TABLE IF NOT EXISTS lockstore_schema (version integer NOT NULL);
INSERT INTO lockstore_schema (version) SELECT 2 WHERE NOT EXISTS (SELECT FROM lockstore_schema);
CREATE TABLE IF NOT EXISTS lockstore_leases (
  key         bytea PRIMARY KEY,
  owner       bytea NOT NULL,
  token       text NOT NULL,
  fence       bigint NOT NULL,
  acquired_at timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL
);
-- Version 2: the queue of waiting acquire() callers (see acquire below).
CREATE TABLE IF NOT EXISTS lockstore_waiters (
  ticket     bigserial PRIMARY KEY,
  key        bytea NOT NULL,
  expires_at timestamptz NOT NULL,
  channel    text
);
CREATE INDEX IF NOT EXISTS lockstore_waiters_by_key ON lockstore_waiters (key, ticket);
-- Where to notify the waiter: its listening connection's own channel (NULL:
-- the shared one). Added in place to a table of lockstore 0.2.0, whose
-- clients leave it NULL. Only when missing: ALTER TABLE locks the table.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'lockstore_waiters'::regclass
                 AND attname = 'channel' AND NOT attisdropped) THEN
    ALTER TABLE lockstore_waiters ADD COLUMN channel text;
  END IF;
END $$;
UPDATE lockstore_schema SET version = 2 WHERE version = 1;
COMMIT;
SELECT max(version) FROM lockstore_schema;)sql";

// One clock reading (`now`, the server's) decides everything, as in the
// SQLite backend: only a free (expired or released) row is taken, whoever
// the owner (every acquisition is its own holder), with a new token and a
// fence of max(last + 1, the clock in microseconds), so fences keep growing
// even when the table is dropped and created again. When refused, the
// second branch reports how long the holder has left.
//
// The queue of acquire() callers: $5 is the caller's ticket ceiling (NULL for
// try_acquire, which ignores the queue; the largest bigint for a caller
// without a ticket yet) and $6 its ticket. A free row goes to a caller only
// when no live ticket of the key is older than its own. A refused acquire()
// takes a ticket (or refreshes its own) in the same statement; a granted one
// drops its ticket. $7 is the channel its listening connection LISTENs on
// (NULL while it has none); $8 how long a ticket lives without a refresh
// (detail::ticket_lifetime), in milliseconds.
inline constexpr detail::PgStatement acquire{"lockstore_acquire", R"sql(
WITH now AS (SELECT clock_timestamp() AS t),
granted AS (
  INSERT INTO lockstore_leases AS l (key, owner, token, fence, acquired_at, expires_at)
  SELECT $1::bytea, $2::bytea, $3::text, (extract(epoch FROM t) * 1000000)::bigint, t,
         t + $4::bigint * interval '1 millisecond' FROM now
  ON CONFLICT (key) DO UPDATE SET
    token       = excluded.token,
    fence       = greatest(l.fence + 1, excluded.fence),
    acquired_at = excluded.acquired_at,
    owner       = excluded.owner,
    expires_at  = excluded.expires_at
  WHERE l.expires_at <= excluded.acquired_at
    AND ($5::bigint IS NULL OR NOT EXISTS (
          SELECT FROM lockstore_waiters w WHERE w.key = $1::bytea AND w.ticket < $5::bigint
                                            AND w.expires_at > excluded.acquired_at))
  RETURNING l.token, l.fence),
swept AS (
  DELETE FROM lockstore_waiters w USING now
  WHERE $5::bigint IS NOT NULL AND $6::bigint IS NULL AND w.key = $1::bytea AND w.expires_at <= now.t),
queued AS (
  INSERT INTO lockstore_waiters (ticket, key, expires_at, channel)
  SELECT coalesce($6::bigint, nextval('lockstore_waiters_ticket_seq')), $1::bytea, t + $8::bigint * interval '1 millisecond', $7::text
  FROM now WHERE $5::bigint IS NOT NULL AND NOT EXISTS (SELECT FROM granted)
  ON CONFLICT (ticket) DO UPDATE SET expires_at = excluded.expires_at, channel = excluded.channel
  RETURNING ticket),
dequeued AS (
  DELETE FROM lockstore_waiters WHERE ticket = $6::bigint AND EXISTS (SELECT FROM granted))
SELECT token, fence, NULL::bigint, NULL::bigint FROM granted
UNION ALL
SELECT NULL, NULL, ceil(extract(epoch FROM (greatest(l.expires_at, now.t) - now.t)) * 1000)::bigint,
       (SELECT ticket FROM queued)
FROM lockstore_leases l, now
WHERE l.key = $1::bytea AND NOT EXISTS (SELECT FROM granted))sql"};

// An acquire() caller that gives up leaves the queue and tells the next in
// line (on that waiter's own channel; everyone when no live ticket is left).
inline constexpr detail::PgStatement leave_queue{"lockstore_leave_queue", R"sql(
WITH left_queue AS (DELETE FROM lockstore_waiters WHERE ticket = $1::bigint RETURNING key),
next AS (
  SELECT w.ticket, w.channel FROM lockstore_waiters w, left_queue
  WHERE w.key = left_queue.key AND w.ticket <> $1::bigint AND w.expires_at > clock_timestamp()
  ORDER BY w.ticket LIMIT 1)
SELECT pg_notify(coalesce((SELECT channel FROM next), 'lockstore_released'),
                 encode(key, 'hex') || coalesce(':' || (SELECT ticket FROM next), ''))
FROM left_queue)sql"};

// The explicit takeover (PostgresLock::take_over): like a try_acquire, but a
// live lease of the same owner is taken too, with a new token and a larger
// fence (its old guard is fenced out), and its expiry never moves earlier.
// The third column is how long the lease now runs (ms).
inline constexpr detail::PgStatement take_over{"lockstore_take_over", R"sql(
WITH now AS (SELECT clock_timestamp() AS t)
INSERT INTO lockstore_leases AS l (key, owner, token, fence, acquired_at, expires_at)
SELECT $1::bytea, $2::bytea, $3::text, (extract(epoch FROM t) * 1000000)::bigint, t,
       t + $4::bigint * interval '1 millisecond' FROM now
ON CONFLICT (key) DO UPDATE SET
  token       = excluded.token,
  fence       = greatest(l.fence + 1, excluded.fence),
  acquired_at = excluded.acquired_at,
  expires_at  = CASE WHEN l.owner = excluded.owner THEN greatest(l.expires_at, excluded.expires_at)
                     ELSE excluded.expires_at END,
  owner       = excluded.owner
WHERE l.owner = excluded.owner OR l.expires_at <= excluded.acquired_at
RETURNING l.token, l.fence, floor(extract(epoch FROM (l.expires_at - l.acquired_at)) * 1000)::bigint)sql"};

inline constexpr detail::PgStatement extend{"lockstore_extend", R"sql(
UPDATE lockstore_leases SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
WHERE key = $1::bytea AND token = $2::text AND expires_at > clock_timestamp())sql"};

// A released row keeps its fence; the notification goes out at commit. Its
// payload is the key in hex, then ':' and the next ticket in line: only that
// waiter needs to look again, so it goes to that waiter's own channel (its
// process alone wakes). With no live ticket in sight it goes to everyone,
// without a ticket: the statement's snapshot may predate a waiter queueing
// at this very moment (whose later ticket is never next while an older one
// is in sight), so "nobody waits" cannot be trusted here, unlike in Redis,
// whose scripts run one at a time.
inline constexpr detail::PgStatement release{"lockstore_release", R"sql(
WITH cleared AS (
  UPDATE lockstore_leases SET owner = ''::bytea, token = '', expires_at = '-infinity'
  WHERE key = $1::bytea AND token = $2::text RETURNING key),
next AS (
  SELECT w.ticket, w.channel FROM lockstore_waiters w, cleared
  WHERE w.key = cleared.key AND w.expires_at > clock_timestamp()
  ORDER BY w.ticket LIMIT 1)
SELECT pg_notify(coalesce((SELECT channel FROM next), 'lockstore_released'),
                 encode(key, 'hex') || coalesce(':' || (SELECT ticket FROM next), ''))
FROM cleared)sql"};

// The operator paths report the rows as they were before clearing them.
inline constexpr detail::PgStatement release_owned{"lockstore_release_owned", R"sql(
WITH old AS (
  SELECT key, expires_at FROM lockstore_leases WHERE owner = $1::bytea AND token <> '' FOR UPDATE),
cleared AS (
  UPDATE lockstore_leases l SET owner = ''::bytea, token = '', expires_at = '-infinity' FROM old
  WHERE l.key = old.key RETURNING l.key, old.expires_at > clock_timestamp() AS live)
SELECT live, pg_notify('lockstore_released', encode(key, 'hex')) FROM cleared)sql"};

inline constexpr detail::PgStatement force_release{"lockstore_force_release", R"sql(
WITH old AS (
  SELECT key, owner, fence, acquired_at, expires_at FROM lockstore_leases
  WHERE key = $1::bytea AND token <> '' AND expires_at > clock_timestamp() FOR UPDATE),
cleared AS (
  UPDATE lockstore_leases l SET owner = ''::bytea, token = '', expires_at = '-infinity' FROM old
  WHERE l.key = old.key
  RETURNING old.owner, old.fence, old.acquired_at, old.expires_at, l.key)
SELECT owner, fence, (extract(epoch FROM acquired_at) * 1000)::bigint, (extract(epoch FROM expires_at) * 1000)::bigint,
       pg_notify('lockstore_released', encode(key, 'hex'))
FROM cleared)sql"};

inline constexpr detail::PgStatement list{"lockstore_list", R"sql(
SELECT key, owner, fence, (extract(epoch FROM acquired_at) * 1000)::bigint, (extract(epoch FROM expires_at) * 1000)::bigint
FROM lockstore_leases WHERE token <> '' AND expires_at > clock_timestamp() ORDER BY key)sql"};

}  // namespace detail::postgres_sql

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

  /// Connects (within the conninfo's connect_timeout, default 10 s), creates
  /// the lease table on first use, and checks its schema version. Throws
  /// errc::invalid_argument for a malformed conninfo or owner,
  /// errc::backend_failure naming host and port when the server cannot be
  /// reached or refuses, errc::unsupported_schema for a newer table layout.
  /// Host names are resolved by libpq itself, which blocks while it does;
  /// give an address (host=127.0.0.1 or hostaddr=) to avoid that.
  static asio::awaitable<PostgresLock> connect(std::string conninfo, std::string owner = random_owner()) {
    detail::PgConnection::validate(conninfo);
    detail::validate_owner(owner, "PostgresLock");
    auto executor = co_await asio::this_coro::executor;
    auto state = std::make_shared<State>(detail::LockStrand(executor), std::move(conninfo));
    auto connecting = detail::on_strand(state->strand, connect_command(state));
    co_await std::move(connecting);
    co_return PostgresLock(std::move(state), std::move(owner));
  }

  /// Another owner on this lock's connections (cheaper than connect(); its
  /// operations take turns with this lock's on the same connection, and
  /// releases by either wake the other's waiters at once).
  PostgresLock with_owner(std::string owner) const {
    detail::validate_owner(owner, "PostgresLock");
    return PostgresLock(state_, std::move(owner));
  }

  const std::string& owner() const noexcept { return owner_; }

  /// One attempt: std::nullopt while any live lease holds the key, this
  /// owner's included (every acquisition is its own holder; see take_over).
  /// Throws errc::connection_lost when the connection broke (the next call
  /// reconnects). Not cancellable: the statement always completes.
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "PostgresLock::try_acquire");
    auto attempting = detail::on_strand(state_->strand, attempt_once(state_, owner_, std::move(key), ttl));
    auto attempt = co_await std::move(attempting);
    co_return std::move(attempt.guard);
  }

  /// Waits until acquired, woken by NOTIFY; errc::timeout after `deadline`;
  /// operation_aborted on per-operation cancellation, with any lease granted
  /// meanwhile given back.
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline) {
    detail::validate_ttl(ttl, "PostgresLock::acquire");
    auto acquiring = detail::on_strand(state_->strand, acquire_on_strand(state_, owner_, std::move(key), ttl, deadline));
    auto guard = co_await std::move(acquiring);
    const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    auto keeping = detail::keep_unless_cancelled(
        std::move(guard), [this](LockGuard granted) { return release(std::move(granted)); }, throw_if_cancelled);
    co_return co_await std::move(keeping);
  }

  /// New expiry = server now + ttl while the guard's token holds a live
  /// lease. On true, the guard's valid_until() becomes the time this call was
  /// made + ttl. False also when the guard's valid_until() has passed, or
  /// passes before the answer comes (the request is cut off then:
  /// errc::connection_lost, "no answer").
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "PostgresLock::extend");
    std::vector<detail::PgParam> params;
    params.push_back({guard.key().str(), true});
    params.push_back({guard.token(), false});
    params.push_back({std::to_string(ttl.count()), false});
    const auto sent = std::chrono::steady_clock::now();
    const auto assumed_end = guard.valid_until();
    if (sent >= assumed_end) co_return false;  // the holder must already assume it lost
    auto extending =
        detail::on_strand(state_->strand, execute(state_, detail::postgres_sql::extend, std::move(params), assumed_end));
    auto result = co_await std::move(extending);
    // A confirmation that arrives after the lease's assumed end counts as lost.
    const bool extended =
        std::string_view(PQcmdTuples(result.get())) == "1" && std::chrono::steady_clock::now() < assumed_end;
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
    detail::validate_ttl(ttl, "PostgresLock::take_over");
    std::vector<detail::PgParam> params;
    params.push_back({key.str(), true});
    params.push_back({owner_, true});
    params.push_back({random_token(), false});
    params.push_back({std::to_string(ttl.count()), false});
    const auto sent = std::chrono::steady_clock::now();
    auto taking = detail::on_strand(state_->strand, execute(state_, detail::postgres_sql::take_over, std::move(params)));
    auto result = co_await std::move(taking);
    if (PQntuples(result.get()) != 1) co_return std::nullopt;
    co_return LockGuard(std::move(key), PQgetvalue(result.get(), 0, 0), std::stoull(PQgetvalue(result.get(), 0, 1)),
                        sent + std::chrono::milliseconds(std::stoll(PQgetvalue(result.get(), 0, 2))));
  }

  /// Removes the lease if the guard's token still holds it, notifies the
  /// waiters everywhere, and marks the guard released. On an error the guard
  /// stays unreleased and the error is thrown (the lease then expires).
  asio::awaitable<void> release(LockGuard guard) {
    if (guard.released()) co_return;
    auto releasing = detail::on_strand(
        state_->strand, release_on_strand(state_, guard.key(), guard.token(), detail::release_answer_by(guard)));
    co_await std::move(releasing);
    guard.mark_released();
  }

  /// Removes every lease of this owner; returns how many were still live.
  asio::awaitable<std::size_t> release_all() {
    std::vector<detail::PgParam> params;
    params.push_back({owner_, true});
    auto releasing = detail::on_strand(state_->strand, execute(state_, detail::postgres_sql::release_owned, std::move(params)));
    auto result = co_await std::move(releasing);
    std::size_t live = 0;
    for (int row = 0; row < PQntuples(result.get()); ++row) live += PQgetvalue(result.get(), row, 0)[0] == 't' ? 1 : 0;
    co_return live;
  }

  /// The live leases of every owner, ordered by key (times on the server's clock).
  asio::awaitable<std::vector<LockInfo>> list() {
    auto listing = detail::on_strand(state_->strand, execute(state_, detail::postgres_sql::list, {}));
    auto result = co_await std::move(listing);
    std::vector<LockInfo> leases;
    for (int row = 0; row < PQntuples(result.get()); ++row)
      leases.push_back(LockInfo{AdvisoryKey(detail::pg_unhex_bytea(PQgetvalue(result.get(), row, 0))),
                                detail::pg_unhex_bytea(PQgetvalue(result.get(), row, 1)),
                                std::stoull(PQgetvalue(result.get(), row, 2)),
                                from_epoch_ms(PQgetvalue(result.get(), row, 3)),
                                from_epoch_ms(PQgetvalue(result.get(), row, 4))});
    co_return leases;
  }

  /// For operators: clears whatever live lease holds `key` and returns it
  /// (std::nullopt when nothing held it). Its fence stays used.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key) {
    std::vector<detail::PgParam> params;
    params.push_back({key.str(), true});
    auto clearing = detail::on_strand(state_->strand, execute(state_, detail::postgres_sql::force_release, std::move(params)));
    auto result = co_await std::move(clearing);
    if (PQntuples(result.get()) == 0) co_return std::nullopt;
    state_->waiters.notify(key.str());
    co_return LockInfo{key, detail::pg_unhex_bytea(PQgetvalue(result.get(), 0, 0)),
                       std::stoull(PQgetvalue(result.get(), 0, 1)), from_epoch_ms(PQgetvalue(result.get(), 0, 2)),
                       from_epoch_ms(PQgetvalue(result.get(), 0, 3))};
  }

 private:
  struct State {
    State(detail::LockStrand executor, std::string info)
        : strand(std::move(executor)),
          conninfo(std::move(info)),
          connect_timeout(detail::PgConnection::connect_timeout(conninfo)),
          own_channel(fmt::format("lockstore_w{:016x}", detail::ThreadRandom::next())),
          command(strand),
          listener(strand),
          pump(
              strand, [this]() { return read_notifications(); }, [this]() { return quiet_listener(); }) {}

    // libpq may already hold notifications that came with an earlier reply.
    asio::awaitable<void> read_notifications() {
      deliver_notifications();
      co_await listener.wait_for_input();
      deliver_notifications();
    }

    // Stops listening once nobody waits; the connection stays for the next wait.
    asio::awaitable<void> quiet_listener() {
      auto turn = co_await listen_turn.lock();
      if (pump.waiting() > 0 || !pump.listening()) co_return;
      pump.set_listening(false);
      try {
        co_await listener.execute_script("UNLISTEN", "UNLISTEN *");
        listener.drain_notifications([](const std::string&) {});
      } catch (const std::exception& error) {
        listener.close();  // the next wait connects again
        detail::log(LogLevel::debug, fmt::format("PostgresLock could not stop listening ({}); closed", error.what()));
      }
    }

    void deliver_notifications() {
      listener.drain_notifications([this](const std::string& payload) {
        // Not ours (another program on the channel): ignored.
        if (auto wakeup = detail::parse_postgres_wakeup(payload)) waiters.notify(wakeup->key, wakeup->next_ticket);
      });
    }

    detail::LockStrand strand;
    std::string conninfo;
    std::chrono::milliseconds connect_timeout;
    /// This lock's own notification channel, LISTENed to beside the shared
    /// one: a release that names one of our tickets wakes this process only.
    std::string own_channel;
    detail::PgConnection command;
    detail::AsyncMutex command_turn;
    // Several acquires of one lock may find the listening connection down at
    // once; one of them sets it up while the others wait for it, since two
    // setting up one connection would close it under each other.
    detail::AsyncMutex listen_turn;
    detail::PgConnection listener;
    detail::KeyedWaiters waiters;
    detail::WakeupPump pump;
  };

  PostgresLock(std::shared_ptr<State> state, std::string owner) : state_(std::move(state)), owner_(std::move(owner)) {}

  static std::chrono::system_clock::time_point from_epoch_ms(const char* text) {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(std::stoll(text)));
  }

  // On the strand, holding the command connection's turn.
  static asio::awaitable<void> connect_command(std::shared_ptr<State> state) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto& command = state->command;
    co_await command.connect(state->conninfo, state->connect_timeout);
    auto created = co_await command.execute_script("creating the lease table", detail::postgres_sql::schema);
    const char* found = PQgetvalue(created.get(), 0, 0);
    const int version = found != nullptr && *found != '\0' ? std::atoi(found) : 0;
    if (version != detail::postgres_sql::schema_version) {
      command.close();
      throw Error(errc::unsupported_schema,
                  fmt::format("PostgreSQL at {}: the lease table has schema version {}, this lockstore supports {}",
                              command.endpoint(), version, detail::postgres_sql::schema_version));
    }
    std::vector<detail::PgStatement> statements{detail::postgres_sql::acquire, detail::postgres_sql::extend,
                                                detail::postgres_sql::release, detail::postgres_sql::release_owned,
                                                detail::postgres_sql::force_release, detail::postgres_sql::list,
                                                detail::postgres_sql::leave_queue, detail::postgres_sql::take_over};
    co_await command.prepare(statements);
  }

  // Not a local class of execute(): g++ 12 crashes mangling a local class
  // of a coroutine when the header is precompiled.
  struct DisarmDeadline {
    detail::PgConnection& connection;
    ~DisarmDeadline() { connection.disarm_deadline(); }
  };

  // Runs one prepared statement on the command connection, reconnecting first
  // if an earlier operation found the connection broken.
  // `answer_by`: for a request that serves a lease, its assumed end
  // (LockGuard::valid_until): a reply later than that is worth nothing, so
  // the request is cut off then (errc::connection_lost, "no answer").
  static asio::awaitable<detail::PgResult> execute(std::shared_ptr<State> state, detail::PgStatement statement,
                                                   std::vector<detail::PgParam> params,
                                                   LockGuard::TimePoint answer_by = LockGuard::TimePoint::max()) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto turn = co_await state->command_turn.lock();
    if (!state->command.connected()) co_await connect_command(state);
    if (answer_by == LockGuard::TimePoint::max()) co_return co_await state->command.execute(statement.name, params);
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(answer_by - std::chrono::steady_clock::now());
    state->command.arm_deadline(std::max(left, std::chrono::milliseconds(1)));
    DisarmDeadline disarm{state->command};
    co_return co_await state->command.execute(statement.name, params);
  }

  static asio::awaitable<void> release_on_strand(std::shared_ptr<State> state, AdvisoryKey key, std::string token,
                                                 LockGuard::TimePoint answer_by = LockGuard::TimePoint::max()) {
    std::vector<detail::PgParam> params;
    params.push_back({key.str(), true});
    params.push_back({std::move(token), false});
    auto result = co_await execute(state, detail::postgres_sql::release, std::move(params), answer_by);
    if (PQntuples(result.get()) == 1) state->waiters.notify(key.str());
  }

  // Undoes a grant that raced with a cancellation.
  static asio::awaitable<void> give_back(std::shared_ptr<State> state, LockGuard guard) {
    co_await release_on_strand(state, guard.key(), guard.token());
    guard.mark_released();
  }

  // An acquire() caller's place in its key's queue (detail::QueueSeat): the
  // ticket is taken by the first refused attempt and dropped by the
  // granting one. Leaving is spawned on the strand, not awaited (a caller
  // that gives up, or whose frame is destroyed, does not wait for it); a
  // failure leaves the ticket to lapse.
  struct LeaveQueue {
    std::shared_ptr<State> state;
    void operator()(std::int64_t ticket) const { asio::co_spawn(state->strand, leave(state, ticket), asio::detached); }

    static asio::awaitable<void> leave(std::shared_ptr<State> state, std::int64_t ticket) {
      try {
        std::vector<detail::PgParam> params;
        params.push_back({std::to_string(ticket), false});
        co_await execute(state, detail::postgres_sql::leave_queue, std::move(params));
      } catch (const std::exception&) {  // the ticket expires by itself
      }
    }
  };
  using QueueSeat = detail::QueueSeat<std::int64_t, LeaveQueue>;

  // `seat` is null for try_acquire, which ignores the queue.
  static asio::awaitable<detail::Attempt> attempt_once(std::shared_ptr<State> state, std::string owner,
                                                       AdvisoryKey key, std::chrono::milliseconds ttl,
                                                       QueueSeat* seat = nullptr) {
    auto proposed = random_token();
    std::vector<detail::PgParam> params;
    params.push_back({key.str(), true});
    params.push_back({std::move(owner), true});
    params.push_back({proposed, false});
    params.push_back({std::to_string(ttl.count()), false});
    const bool queued = seat != nullptr;
    const bool ticketed = queued && seat->ticket.has_value();
    params.push_back({queued ? std::to_string(seat->ticket.value_or(std::numeric_limits<std::int64_t>::max())) : "",
                      false, !queued});
    params.push_back({ticketed ? std::to_string(*seat->ticket) : "", false, !ticketed});
    const bool listening = queued && state->pump.listening();
    params.push_back({listening ? state->own_channel : "", false, !listening});
    params.push_back({std::to_string(detail::ticket_lifetime.count()), false});
    const auto sent = std::chrono::steady_clock::now();
    auto result = co_await execute(state, detail::postgres_sql::acquire, std::move(params));
    detail::Attempt attempt;
    const PGresult* rows = result.get();
    if (PQntuples(rows) == 1 && !PQgetisnull(rows, 0, 0)) {
      if (seat != nullptr) seat->ticket.reset();
      std::string token = PQgetvalue(rows, 0, 0);
      attempt.fresh = token == proposed;
      attempt.guard.emplace(std::move(key), std::move(token), std::stoull(PQgetvalue(rows, 0, 1)), sent + ttl);
      co_return attempt;
    }
    std::chrono::milliseconds remaining(0);
    if (PQntuples(rows) == 1 && !PQgetisnull(rows, 0, 2)) remaining = std::chrono::milliseconds(std::stoll(PQgetvalue(rows, 0, 2)));
    if (seat != nullptr && PQntuples(rows) == 1 && !PQgetisnull(rows, 0, 3)) seat->ticket = std::stoll(PQgetvalue(rows, 0, 3));
    if (seat != nullptr) attempt.ticket = seat->ticket.value_or(0);
    auto retrying = detail::retry_after_refusal(state->pump, remaining, [&] { return start_listening(state); });
    attempt.retry_at = co_await std::move(retrying);
    co_return attempt;
  }

  static asio::awaitable<void> start_listening(std::shared_ptr<State> state) {
    auto turn = co_await state->listen_turn.lock();
    if (state->pump.listening()) co_return;  // another acquire set it up meanwhile
    try {
      if (!state->listener.connected()) co_await state->listener.connect(state->conninfo, state->connect_timeout);
      co_await state->listener.execute_script(
          "LISTEN", fmt::format("LISTEN {}; LISTEN {}", detail::postgres_sql::channel, state->own_channel));
      state->pump.set_listening(true);
      state->pump.start_if_needed(state);
    } catch (const Error& error) {
      state->listener.close();
      detail::log(LogLevel::debug, fmt::format("PostgresLock could not listen for releases ({}); polling", error.what()));
    } catch (...) {
      state->listener.close();  // cancelled half-way: nothing may stay half set up
      throw;
    }
  }

  static asio::awaitable<LockGuard> acquire_on_strand(std::shared_ptr<State> state, std::string owner, AdvisoryKey key,
                                                      std::chrono::milliseconds ttl, std::chrono::milliseconds deadline) {
    detail::WaitingScope waiting(state->pump, state);
    LeaveQueue leave{state};
    QueueSeat seat(std::move(leave));
    auto acquiring = detail::acquire_loop(
        state->waiters, key, deadline, [&] { return attempt_once(state, owner, key, ttl, &seat); },
        [&](LockGuard guard) { return give_back(state, std::move(guard)); });
    co_return co_await std::move(acquiring);
  }

  std::shared_ptr<State> state_;
  std::string owner_;
};

static_assert(AdministrableLock<PostgresLock>);

}  // namespace lockstore
