// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// PostgresLock's definitions (see postgres.hpp; detail/config.hpp for the
// separately compiled mode).
#pragma once

#include "lockstore/postgres.hpp"

#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/postgres_sql.hpp"

#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/pg_connection.hpp"
#include "lockstore/detail/random.hpp"
#include "lockstore/detail/remote_lock.hpp"

#include <boost/asio/this_coro.hpp>

#include <limits>

namespace lockstore {


namespace detail {

struct PostgresState {
  PostgresState(detail::LockStrand executor, std::string info)
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

// On the strand, holding the command connection's turn.
inline asio::awaitable<void> postgres_connect_command(std::shared_ptr<PostgresState> state) {
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
                                              detail::postgres_sql::leave_queue, detail::postgres_sql::take_over,
                                              detail::postgres_sql::lease_is_live, detail::postgres_sql::admit};
  co_await command.prepare(statements);
}

// Not a local class of postgres_execute(): g++ 12 crashes mangling a local class
// of a coroutine when the header is precompiled.
struct PostgresDisarmDeadline {
  detail::PgConnection& connection;
  ~PostgresDisarmDeadline() { connection.disarm_deadline(); }
};

// Runs one prepared statement on the command connection, reconnecting first
// if an earlier operation found the connection broken.
// `answer_by`: for a request that serves a lease, its assumed end
// (LockGuard::valid_until): a reply later than that is worth nothing, so
// the request is cut off then (errc::connection_lost, "no answer").
inline asio::awaitable<detail::PgResult> postgres_execute(
    std::shared_ptr<PostgresState> state, detail::PgStatement statement, std::vector<detail::PgParam> params,
    LockGuard::TimePoint answer_by = LockGuard::TimePoint::max()) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto turn = co_await state->command_turn.lock();
  if (!state->command.connected()) co_await postgres_connect_command(state);
  if (answer_by == LockGuard::TimePoint::max()) co_return co_await state->command.execute(statement.name, params);
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(answer_by - std::chrono::steady_clock::now());
  state->command.arm_deadline(std::max(left, std::chrono::milliseconds(1)));
  PostgresDisarmDeadline disarm{state->command};
  co_return co_await state->command.execute(statement.name, params);
}

}  // namespace detail

// An acquire() caller's place in its key's queue (detail::QueueSeat): the
// ticket is taken by the first refused attempt and dropped by the
// granting one. Leaving is spawned on the strand, not awaited (a caller
// that gives up, or whose frame is destroyed, does not wait for it); a
// failure leaves the ticket to lapse.
struct PostgresLock::LeaveQueue {
  std::shared_ptr<State> state;
  void operator()(std::int64_t ticket) const { asio::co_spawn(state->strand, leave(state, ticket), asio::detached); }

  static asio::awaitable<void> leave(std::shared_ptr<State> state, std::int64_t ticket) {
    try {
      std::vector<detail::PgParam> params;
      params.push_back({std::to_string(ticket), false});
      co_await detail::postgres_execute(state, detail::postgres_sql::leave_queue, std::move(params));
    } catch (const std::exception&) {  // the ticket expires by itself
    }
  }
};

LOCKSTORE_DECL asio::awaitable<PostgresLock> PostgresLock::connect(std::string conninfo, std::string owner) {
  detail::PgConnection::validate(conninfo);
  detail::validate_owner(owner, "PostgresLock");
  auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<State>(detail::LockStrand(executor), std::move(conninfo));
  auto connecting = detail::on_strand(state->strand, detail::postgres_connect_command(state));
  co_await std::move(connecting);
  co_return PostgresLock(std::move(state), std::move(owner));
}

LOCKSTORE_DECL PostgresLock PostgresLock::with_owner(std::string owner) const {
  detail::validate_owner(owner, "PostgresLock");
  return PostgresLock(state_, std::move(owner));
}

LOCKSTORE_DECL asio::awaitable<std::optional<LockGuard>> PostgresLock::try_acquire(AdvisoryKey key,
                                                                                  std::chrono::milliseconds ttl) {
  detail::validate_ttl(ttl, "PostgresLock::try_acquire");
  auto attempting = detail::on_strand(state_->strand, attempt_once(state_, owner_, std::move(key), ttl));
  auto attempt = co_await std::move(attempting);
  co_return std::move(attempt.guard);
}

LOCKSTORE_DECL asio::awaitable<LockGuard> PostgresLock::acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
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

LOCKSTORE_DECL asio::awaitable<bool> PostgresLock::extend(LockGuard& guard, std::chrono::milliseconds ttl) {
  detail::validate_ttl(ttl, "PostgresLock::extend");
  std::vector<detail::PgParam> params;
  params.push_back({guard.key().str(), true});
  params.push_back({guard.token(), false});
  params.push_back({std::to_string(ttl.count()), false});
  const auto sent = std::chrono::steady_clock::now();
  const auto assumed_end = guard.valid_until();
  if (sent >= assumed_end) co_return false;  // the holder must already assume it lost
  auto extending = detail::on_strand(
      state_->strand, detail::postgres_execute(state_, detail::postgres_sql::extend, std::move(params), assumed_end));
  auto result = co_await std::move(extending);
  // A confirmation that arrives after the lease's assumed end counts as lost.
  const bool extended =
      std::string_view(PQcmdTuples(result.get())) == "1" && std::chrono::steady_clock::now() < assumed_end;
  if (extended) guard.confirm_until(sent + ttl);
  co_return extended;
}

LOCKSTORE_DECL asio::awaitable<std::optional<LockGuard>> PostgresLock::take_over(AdvisoryKey key,
                                                                                std::chrono::milliseconds ttl) {
  detail::validate_ttl(ttl, "PostgresLock::take_over");
  std::vector<detail::PgParam> params;
  params.push_back({key.str(), true});
  params.push_back({owner_, true});
  params.push_back({random_token(), false});
  params.push_back({std::to_string(ttl.count()), false});
  const auto sent = std::chrono::steady_clock::now();
  auto taking = detail::on_strand(state_->strand,
                                  detail::postgres_execute(state_, detail::postgres_sql::take_over, std::move(params)));
  auto result = co_await std::move(taking);
  if (PQntuples(result.get()) != 1) co_return std::nullopt;
  co_return LockGuard(std::move(key), PQgetvalue(result.get(), 0, 0), std::stoull(PQgetvalue(result.get(), 0, 1)),
                      sent + std::chrono::milliseconds(std::stoll(PQgetvalue(result.get(), 0, 2))));
}

LOCKSTORE_DECL asio::awaitable<void> PostgresLock::release(LockGuard guard) {
  if (guard.released()) co_return;
  auto releasing = detail::on_strand(
      state_->strand, release_on_strand(state_, guard.key(), guard.token(), detail::release_answer_by(guard)));
  co_await std::move(releasing);
  guard.mark_released();
}

LOCKSTORE_DECL asio::awaitable<std::size_t> PostgresLock::release_all() {
  std::vector<detail::PgParam> params;
  params.push_back({owner_, true});
  auto releasing = detail::on_strand(
      state_->strand, detail::postgres_execute(state_, detail::postgres_sql::release_owned, std::move(params)));
  auto result = co_await std::move(releasing);
  std::size_t live = 0;
  for (int row = 0; row < PQntuples(result.get()); ++row) live += PQgetvalue(result.get(), row, 0)[0] == 't' ? 1 : 0;
  co_return live;
}

LOCKSTORE_DECL asio::awaitable<std::vector<LockInfo>> PostgresLock::list() {
  auto listing = detail::on_strand(state_->strand, detail::postgres_execute(state_, detail::postgres_sql::list, {}));
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

LOCKSTORE_DECL asio::awaitable<std::optional<LockInfo>> PostgresLock::force_release(AdvisoryKey key) {
  std::vector<detail::PgParam> params;
  params.push_back({key.str(), true});
  auto clearing = detail::on_strand(
      state_->strand, detail::postgres_execute(state_, detail::postgres_sql::force_release, std::move(params)));
  auto result = co_await std::move(clearing);
  if (PQntuples(result.get()) == 0) co_return std::nullopt;
  state_->waiters.notify(key.str());
  co_return LockInfo{key, detail::pg_unhex_bytea(PQgetvalue(result.get(), 0, 0)),
                     std::stoull(PQgetvalue(result.get(), 0, 1)), from_epoch_ms(PQgetvalue(result.get(), 0, 2)),
                     from_epoch_ms(PQgetvalue(result.get(), 0, 3))};
}

namespace detail {

inline PgParam pg_param(const SqlValue& value) {
  return std::visit(
      [](const auto& v) -> PgParam {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::nullptr_t>) return PgParam{{}, false, true};
        else if constexpr (std::is_same_v<V, SqlBlob>) return PgParam{v.bytes, true, false};
        else if constexpr (std::is_same_v<V, std::string>) return PgParam{v, false, false};
        else return PgParam{fmt::format("{}", v), false, false};
      },
      value);
}

inline SqlResult sql_result(const PGresult* result) {
  SqlResult out;
  const std::string_view status = PQcmdStatus(const_cast<PGresult*>(result));
  if (!status.starts_with("SELECT")) {
    const char* tuples = PQcmdTuples(const_cast<PGresult*>(result));
    if (tuples != nullptr && *tuples != '\0') out.changed = std::stoll(tuples);
  }
  for (int row = 0; row < PQntuples(result); ++row) {
    std::vector<SqlValue> values;
    for (int column = 0; column < PQnfields(result); ++column) {
      if (PQgetisnull(result, row, column) != 0) values.emplace_back(nullptr);
      else values.emplace_back(std::string(PQgetvalue(result, row, column),
                                           static_cast<std::size_t>(PQgetlength(result, row, column))));
    }
    out.rows.push_back(std::move(values));
  }
  return out;
}

// The fenced write's pipeline on the command connection: the lease check,
// then the caller's statements, in one implicit transaction.
inline asio::awaitable<std::vector<SqlResult>> postgres_fenced(std::shared_ptr<PostgresState> state, std::string key,
                                                               std::string token,
                                                               std::vector<SqlStatement> statements) {
  co_await asio::this_coro::throw_if_cancelled(false);
  // [lease check, statement 0, ..., statement n - 1]. Only the
  // statements allowed_in_fenced_write() admits come here: none of them can
  // end the transaction (a function cannot commit; CALL and DO are refused).
  std::vector<PgConnection::PipelineQuery> queries;
  PgConnection::PipelineQuery check;
  check.name = postgres_sql::lease_is_live.name;
  check.params.push_back({key, true});
  check.params.push_back({token, false});
  queries.push_back(std::move(check));
  for (auto& statement : statements) {
    PgConnection::PipelineQuery query;
    query.sql = std::move(statement.sql);
    for (const auto& value : statement.params) query.params.push_back(pg_param(value));
    queries.push_back(std::move(query));
  }
  auto turn = co_await state->command_turn.lock();
  if (!state->command.connected()) co_await postgres_connect_command(state);
  auto running = state->command.execute_pipeline("a fenced write", queries);
  auto outcome = co_await std::move(running);
  if (outcome.failed == std::size_t{0} && outcome.sqlstate == postgres_sql::lease_not_live_sqlstate)
    throw Error(errc::lock_lost, fmt::format("the lease on '{}' is no longer this guard's (it expired or was taken "
                                             "over); nothing was written",
                                             key));
  if (outcome.error) {
    const auto failed = *outcome.failed;
    if (failed >= queries.size())
      throw Error(errc::backend_failure,
                  fmt::format("a fenced write failed at commit: {}; nothing was written", outcome.error->message()));
    if (failed > 0)
      throw Error(errc::backend_failure, fmt::format("statement {} of a fenced write: {}; nothing was written",
                                                     failed - 1, outcome.error->message()));
    throw *outcome.error;
  }
  std::vector<SqlResult> results;
  for (std::size_t index = 1; index < queries.size(); ++index)
    results.push_back(sql_result(outcome.results[index].get()));
  co_return results;
}

}  // namespace detail

LOCKSTORE_DECL asio::awaitable<std::vector<SqlResult>> PostgresLock::fenced(const LockGuard& guard,
                                                                           std::vector<SqlStatement> statements) {
  if (guard.released() || guard.token().empty())
    throw Error(errc::invalid_argument,
                fmt::format("PostgresLock::fenced: the guard for '{}' was released; a fenced write needs a held lease",
                            guard.key().str()));
  for (std::size_t index = 0; index < statements.size(); ++index)
    if (!detail::postgres_sql::allowed_in_fenced_write(statements[index].sql))
      throw Error(errc::invalid_argument,
                  fmt::format("PostgresLock::fenced: statement {} (\"{:.80}\") is not one a fenced write runs (it "
                              "must start with SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES, TABLE, CREATE, "
                              "ALTER, DROP, TRUNCATE, COMMENT or LOCK): the transaction is lockstore's to begin and "
                              "commit, and the session is lockstore's",
                              index, statements[index].sql));
  for (std::size_t index = 0; index < statements.size(); ++index)
    if (const auto found = detail::postgres_sql::touches_lockstore(statements[index].sql); !found.empty())
      throw Error(errc::invalid_argument,
                  fmt::format("PostgresLock::fenced: statement {} (\"{:.80}\") names {}: a fenced write is for the "
                              "caller's tables, and leaves lockstore's tables and its connection's settings alone",
                              index, statements[index].sql, found));
  auto writing = detail::on_strand(
      state_->strand, detail::postgres_fenced(state_, guard.key().str(), guard.token(), std::move(statements)));
  co_return co_await std::move(writing);
}

LOCKSTORE_DECL asio::awaitable<bool> PostgresLock::admit(std::string resource, std::uint64_t fence) {
  if (resource.empty()) throw Error(errc::invalid_argument, "PostgresLock::admit: the resource name is empty");
  if (fence > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    throw Error(errc::invalid_argument, fmt::format("PostgresLock::admit: fence {} is above 2^63 - 1", fence));
  std::vector<detail::PgParam> params;
  params.push_back({std::move(resource), true});
  params.push_back({std::to_string(fence), false});
  auto admitting = detail::on_strand(state_->strand,
                                     detail::postgres_execute(state_, detail::postgres_sql::admit, std::move(params)));
  auto result = co_await std::move(admitting);
  co_return PQntuples(result.get()) == 1;
}

LOCKSTORE_DECL PostgresLock::PostgresLock(std::shared_ptr<State> state, std::string owner)
    : state_(std::move(state)), owner_(std::move(owner)) {}

LOCKSTORE_DECL std::chrono::system_clock::time_point PostgresLock::from_epoch_ms(const char* text) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(std::stoll(text)));
}

LOCKSTORE_DECL asio::awaitable<void> PostgresLock::release_on_strand(std::shared_ptr<State> state, AdvisoryKey key,
                                                                   std::string token, LockGuard::TimePoint answer_by) {
  std::vector<detail::PgParam> params;
  params.push_back({key.str(), true});
  params.push_back({std::move(token), false});
  auto result = co_await detail::postgres_execute(state, detail::postgres_sql::release, std::move(params), answer_by);
  if (PQntuples(result.get()) == 1) state->waiters.notify(key.str());
}

// Undoes a grant that raced with a cancellation.
LOCKSTORE_DECL asio::awaitable<void> PostgresLock::give_back(std::shared_ptr<State> state, LockGuard guard) {
  co_await release_on_strand(state, guard.key(), guard.token());
  guard.mark_released();
}

// `seat` is null for try_acquire, which ignores the queue.
LOCKSTORE_DECL asio::awaitable<detail::Attempt> PostgresLock::attempt_once(std::shared_ptr<State> state,
                                                                         std::string owner, AdvisoryKey key,
                                                                         std::chrono::milliseconds ttl, QueueSeat* seat) {
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
  auto result = co_await detail::postgres_execute(state, detail::postgres_sql::acquire, std::move(params));
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

LOCKSTORE_DECL asio::awaitable<void> PostgresLock::start_listening(std::shared_ptr<State> state) {
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

LOCKSTORE_DECL asio::awaitable<LockGuard> PostgresLock::acquire_on_strand(std::shared_ptr<State> state,
                                                                          std::string owner, AdvisoryKey key,
                                                                          std::chrono::milliseconds ttl,
                                                                          std::chrono::milliseconds deadline) {
  detail::WaitingScope waiting(state->pump, state);
  LeaveQueue leave{state};
  QueueSeat seat(std::move(leave));
  auto acquiring = detail::acquire_loop(
      state->waiters, key, deadline, [&] { return attempt_once(state, owner, key, ttl, &seat); },
      [&](LockGuard guard) { return give_back(state, std::move(guard)); });
  co_return co_await std::move(acquiring);
}

}  // namespace lockstore
