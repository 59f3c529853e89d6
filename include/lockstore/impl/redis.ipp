// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The definitions of RedisLock (lockstore/redis.hpp), header-only or compiled once by <lockstore/src/redis.hpp>.
#pragma once

#include "lockstore/redis.hpp"

#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/redis_scripts.hpp"

#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/redis_connection.hpp"
#include "lockstore/detail/remote_lock.hpp"
#include "lockstore/detail/wire_text.hpp"

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


namespace detail {

inline std::uint64_t to_u64(const redisReply* reply) {
  if (reply->type == REDIS_REPLY_INTEGER) return static_cast<std::uint64_t>(reply->integer);
  return std::stoull(std::string(detail::RedisReply::text_of(reply)));
}

}  // namespace detail

// Not a local class of the coroutines that use it: g++ 12 crashes
// mangling a local class of a coroutine when the header is precompiled.
struct RedisLock::DisarmDeadline {
  detail::RedisConnection* connection = nullptr;
  ~DisarmDeadline() {
    if (connection != nullptr) connection->disarm_deadline();
  }
};

struct RedisLock::State {
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

// An acquire() caller's place in the key's queue (detail::QueueSeat, as
// PostgresLock's): taken at the first refusal, dropped by the granting script. A caller that gives
// up leaves without waiting (the script is spawned on the strand); were
// that lost, the ticket expires.
struct RedisLock::LeaveQueue {
  std::shared_ptr<State> state;
  AdvisoryKey key;
  void operator()(std::int64_t ticket) const {
    asio::co_spawn(state->strand, leave(state, key, ticket), asio::detached);
  }

  static asio::awaitable<void> leave(std::shared_ptr<State> state, AdvisoryKey key, std::int64_t ticket) {
    try {
      std::vector<std::string> keys{state->lease_key(key), state->queue_key(key), state->queue_expiry_key(key)};
      std::vector<std::string> arguments{std::to_string(ticket), state->channel, key.str()};
      co_await State::run_script(state, detail::redis_scripts::leave_script, std::move(keys), std::move(arguments));
    } catch (const std::exception&) {  // the ticket expires by itself
    }
  }
};

LOCKSTORE_DECL asio::awaitable<RedisLock> RedisLock::connect(RedisOptions options, std::string owner) {
  validate(options, owner);
  auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<State>(detail::LockStrand(executor), std::move(options));
  auto connecting = detail::on_strand(state->strand, connect_command(state));
  co_await std::move(connecting);
  co_return RedisLock(std::move(state), std::move(owner));
}

LOCKSTORE_DECL RedisLock RedisLock::with_owner(std::string owner) const {
  validate(state_->options, owner);
  return RedisLock(state_, std::move(owner));
}

LOCKSTORE_DECL const std::string& RedisLock::owner() const noexcept { return owner_; }

LOCKSTORE_DECL asio::awaitable<std::optional<LockGuard>> RedisLock::try_acquire(AdvisoryKey key,
                                                                                std::chrono::milliseconds ttl) {
  detail::validate_ttl(ttl, "RedisLock::try_acquire");
  auto attempting = detail::on_strand(state_->strand, attempt_once(state_, owner_, std::move(key), ttl));
  auto attempt = co_await std::move(attempting);
  co_return std::move(attempt.guard);
}

LOCKSTORE_DECL asio::awaitable<LockGuard> RedisLock::acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
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

LOCKSTORE_DECL asio::awaitable<bool> RedisLock::extend(LockGuard& guard, std::chrono::milliseconds ttl) {
  detail::validate_ttl(ttl, "RedisLock::extend");
  std::vector<std::string> keys{state_->lease_key(guard.key())};
  std::vector<std::string> arguments{guard.token(), std::to_string(ttl.count())};
  const auto sent = std::chrono::steady_clock::now();
  const auto assumed_end = guard.valid_until();
  if (sent >= assumed_end) co_return false;  // the holder must already assume it lost
  auto extending = detail::on_strand(state_->strand, State::run_script(state_, detail::redis_scripts::extend_script,
                                                                       std::move(keys), std::move(arguments), assumed_end));
  auto reply = co_await std::move(extending);
  // A confirmation that arrives after the lease's assumed end counts as lost.
  const bool extended = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1 &&
                        std::chrono::steady_clock::now() < assumed_end;
  if (extended) guard.confirm_until(sent + ttl);
  co_return extended;
}

LOCKSTORE_DECL asio::awaitable<std::optional<LockGuard>> RedisLock::take_over(AdvisoryKey key,
                                                                              std::chrono::milliseconds ttl) {
  detail::validate_ttl(ttl, "RedisLock::take_over");
  std::vector<std::string> keys{state_->lease_key(key), state_->fence_key(key)};
  std::vector<std::string> arguments{random_token(), owner_, std::to_string(ttl.count())};
  const auto sent = std::chrono::steady_clock::now();
  auto taking = detail::on_strand(
      state_->strand, State::run_script(state_, detail::redis_scripts::take_over_script, std::move(keys), std::move(arguments)));
  auto reply = co_await std::move(taking);
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) co_return std::nullopt;
  std::string token(detail::RedisReply::text_of(reply->element[0]));
  const auto runs = std::chrono::milliseconds(detail::to_u64(reply->element[2]));
  co_return LockGuard(std::move(key), std::move(token), detail::to_u64(reply->element[1]), sent + runs);
}

LOCKSTORE_DECL asio::awaitable<void> RedisLock::release(LockGuard guard) {
  if (guard.released()) co_return;
  auto releasing = detail::on_strand(
      state_->strand, delete_if(state_, guard.key(), "token", guard.token(), detail::release_answer_by(guard)));
  co_await std::move(releasing);
  guard.mark_released();
}

LOCKSTORE_DECL asio::awaitable<std::size_t> RedisLock::release_all() {
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

LOCKSTORE_DECL asio::awaitable<std::vector<LockInfo>> RedisLock::list() {
  auto listing = detail::on_strand(state_->strand, list_on_strand(state_));
  co_return co_await std::move(listing);
}

LOCKSTORE_DECL asio::awaitable<std::vector<std::optional<std::string>>> RedisLock::fenced(
    const LockGuard& guard, std::vector<RedisCommand> commands) {
  if (guard.released() || guard.token().empty())
    throw Error(errc::invalid_argument,
                fmt::format("RedisLock::fenced: the guard for '{}' was released; a fenced write needs a held lease",
                            guard.key().str()));
  std::vector<std::string> arguments{guard.token()};
  for (std::size_t index = 0; index < commands.size(); ++index) {
    auto& command = commands[index];
    if (command.empty()) throw Error(errc::invalid_argument, fmt::format("RedisLock::fenced: command {} is empty", index));
    std::string name = command[0];
    for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (std::find(fenced_commands.begin(), fenced_commands.end(), name) == fenced_commands.end())
      throw Error(errc::invalid_argument,
                  fmt::format("RedisLock::fenced: command {} ('{}') is not one a fenced write may run (RedisLock::"
                              "fenced_commands)",
                              index, command[0]));
    // DEL names only keys; the others name one key first.
    const std::size_t keys_end = name == "DEL" ? command.size() : std::min<std::size_t>(2, command.size());
    for (std::size_t k = 1; k < keys_end; ++k)
      if (command[k].starts_with(state_->options.key_prefix))
        throw Error(errc::invalid_argument,
                    fmt::format("RedisLock::fenced: command {} names '{}', under this lock's key prefix '{}': "
                                "lockstore's own keys are not the caller's to write",
                                index, command[k], state_->options.key_prefix));
    if (command.size() > max_fenced_arguments)
      throw Error(errc::invalid_argument,
                  fmt::format("RedisLock::fenced: command {} has {} arguments; at most {} (a Lua script unpacks "
                              "them on the stack)",
                              index, command.size(), max_fenced_arguments));
    arguments.push_back(std::to_string(command.size()));
    for (auto& argument : command) arguments.push_back(std::move(argument));
  }
  std::vector<std::string> keys{state_->lease_key(guard.key())};
  auto running = detail::on_strand(
      state_->strand, State::run_script(state_, detail::redis_scripts::fenced_script, std::move(keys), std::move(arguments)));
  detail::RedisReply reply;
  try {
    reply = co_await std::move(running);
  } catch (const Error& error) {
    if (error.code() == errc::backend_failure && error.message().find("LOCKSTORE_LEASE_LOST") != std::string::npos)
      throw Error(errc::lock_lost, fmt::format("the lease on '{}' is no longer this guard's (it expired or was taken "
                                               "over); nothing was written",
                                               guard.key().str()));
    throw;
  }
  std::vector<std::optional<std::string>> replies;
  if (reply->type != REDIS_REPLY_ARRAY) co_return replies;
  for (std::size_t index = 0; index < reply->elements; ++index) {
    const auto text = detail::RedisReply::text_of(reply->element[index]);
    if (text.empty() || text[0] == 'n') replies.emplace_back(std::nullopt);
    else replies.emplace_back(std::string(text.substr(1)));
  }
  co_return replies;
}

LOCKSTORE_DECL asio::awaitable<bool> RedisLock::admit(std::string resource, std::uint64_t fence) {
  if (resource.empty()) throw Error(errc::invalid_argument, "RedisLock::admit: the resource name is empty");
  if (fence > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    throw Error(errc::invalid_argument, fmt::format("RedisLock::admit: fence {} is above 2^63 - 1", fence));
  std::vector<std::string> keys{state_->options.key_prefix + "fence-gate:" + resource};
  std::vector<std::string> arguments{fmt::format("{:020}", fence)};
  auto admitting = detail::on_strand(
      state_->strand, State::run_script(state_, detail::redis_scripts::admit_script, std::move(keys), std::move(arguments)));
  auto reply = co_await std::move(admitting);
  co_return reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
}

LOCKSTORE_DECL asio::awaitable<std::optional<LockInfo>> RedisLock::force_release(AdvisoryKey key) {
  auto clearing = detail::on_strand(state_->strand, inspect_on_strand(state_, std::move(key), true));
  co_return co_await std::move(clearing);
}

LOCKSTORE_DECL RedisLock::RedisLock(std::shared_ptr<State> state, std::string owner)
    : state_(std::move(state)), owner_(std::move(owner)) {}

LOCKSTORE_DECL void RedisLock::validate(const RedisOptions& options, const std::string& owner) {
  detail::validate_owner(owner, "RedisLock");
  if (options.host.empty()) throw Error(errc::invalid_argument, "RedisOptions::host is empty");
  if (options.port == 0) throw Error(errc::invalid_argument, "RedisOptions::port is 0");
  if (options.database < 0)
    throw Error(errc::invalid_argument, fmt::format("RedisOptions::database is negative ({})", options.database));
  if (options.connect_timeout <= std::chrono::milliseconds(0))
    throw Error(errc::invalid_argument, "RedisOptions::connect_timeout must be positive");
}

LOCKSTORE_DECL asio::awaitable<void> RedisLock::connect_command(std::shared_ptr<State> state) {
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await State::open(*state, state->command);
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
LOCKSTORE_DECL asio::awaitable<void> RedisLock::refuse_evicting_server(std::shared_ptr<State> state) {
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

LOCKSTORE_DECL asio::awaitable<bool> RedisLock::delete_if(std::shared_ptr<State> state, AdvisoryKey key, std::string field,
                                                          std::string expected, LockGuard::TimePoint answer_by) {
  std::vector<std::string> keys{state->lease_key(key), state->queue_key(key), state->queue_expiry_key(key)};
  std::vector<std::string> arguments{std::move(field), std::move(expected), state->channel, key.str()};
  auto reply = co_await State::run_script(state, detail::redis_scripts::release_script, std::move(keys), std::move(arguments),
                                          answer_by);
  const bool removed = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
  if (removed) state->waiters.notify(key.str());
  co_return removed;
}

// Undoes a grant that raced with a cancellation.
LOCKSTORE_DECL asio::awaitable<void> RedisLock::give_back(std::shared_ptr<State> state, LockGuard guard) {
  co_await delete_if(state, guard.key(), "token", guard.token());
  guard.mark_released();
}

// `seat` is null for try_acquire, which ignores the queue.
LOCKSTORE_DECL asio::awaitable<detail::Attempt> RedisLock::attempt_once(std::shared_ptr<State> state, std::string owner,
                                                                        AdvisoryKey key, std::chrono::milliseconds ttl,
                                                                        QueueSeat* seat) {
  auto proposed = random_token();
  std::vector<std::string> keys{state->lease_key(key), state->fence_key(key), state->queue_key(key),
                                state->queue_expiry_key(key)};
  std::string ticket;
  if (seat != nullptr) ticket = std::to_string(seat->ticket.value_or(0));
  std::vector<std::string> arguments{proposed, std::move(owner), std::to_string(ttl.count()), std::move(ticket),
                                     std::to_string(detail::ticket_lifetime.count())};
  const auto sent = std::chrono::steady_clock::now();
  auto reply = co_await State::run_script(state, detail::redis_scripts::acquire_script, std::move(keys), std::move(arguments));
  detail::Attempt attempt;
  const bool answered = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2;
  if (answered && reply->element[0]->type != REDIS_REPLY_INTEGER) {
    if (seat != nullptr) seat->ticket.reset();
    std::string token(detail::RedisReply::text_of(reply->element[0]));
    attempt.fresh = token == proposed;
    attempt.guard.emplace(std::move(key), std::move(token), detail::to_u64(reply->element[1]), sent + ttl);
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

LOCKSTORE_DECL asio::awaitable<void> RedisLock::start_listening(std::shared_ptr<State> state) {
  auto turn = co_await state->listen_turn.lock();
  if (state->pump.listening()) co_return;  // another acquire set it up meanwhile
  try {
    if (!state->subscriber.connected()) co_await State::open(*state, state->subscriber);
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

LOCKSTORE_DECL asio::awaitable<LockGuard> RedisLock::acquire_on_strand(std::shared_ptr<State> state, std::string owner,
                                                                       AdvisoryKey key, std::chrono::milliseconds ttl,
                                                                       std::chrono::milliseconds deadline) {
  detail::WaitingScope waiting(state->pump, state);
  LeaveQueue leave{state, key};
  QueueSeat seat(std::move(leave));
  auto acquiring = detail::acquire_loop(
      state->waiters, key, deadline, [&] { return attempt_once(state, owner, key, ttl, &seat); },
      [&](LockGuard guard) { return give_back(state, std::move(guard)); });
  co_return co_await std::move(acquiring);
}

LOCKSTORE_DECL asio::awaitable<std::optional<LockInfo>> RedisLock::inspect_on_strand(std::shared_ptr<State> state,
                                                                                     AdvisoryKey key, bool clear) {
  std::vector<std::string> keys{state->lease_key(key)};
  std::vector<std::string> arguments;
  if (clear) arguments = {state->channel, key.str()};
  auto reply = co_await State::run_script(state, detail::redis_scripts::inspect_script, std::move(keys), std::move(arguments));
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) co_return std::nullopt;
  if (clear) state->waiters.notify(key.str());
  auto at = [&](std::size_t index) {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(static_cast<std::int64_t>(detail::to_u64(reply->element[index]))));
  };
  co_return LockInfo{key, std::string(detail::RedisReply::text_of(reply->element[0])), detail::to_u64(reply->element[1]),
                     at(2), at(3)};
}

// SCAN MATCH needs the prefix with its glob characters escaped.
LOCKSTORE_DECL std::string RedisLock::glob_escaped(std::string_view text) {
  std::string escaped;
  for (const char c : text) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') escaped.push_back('\\');
    escaped.push_back(c);
  }
  return escaped;
}

LOCKSTORE_DECL asio::awaitable<std::vector<std::string>> RedisLock::scan_leases(std::shared_ptr<State> state) {
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

LOCKSTORE_DECL asio::awaitable<std::vector<LockInfo>> RedisLock::list_on_strand(std::shared_ptr<State> state) {
  auto names = co_await scan_leases(state);
  std::vector<LockInfo> leases;
  for (auto& name : names) {
    auto info = co_await inspect_on_strand(state, AdvisoryKey(std::move(name)), false);
    if (info) leases.push_back(std::move(*info));  // it may have expired since the scan
  }
  co_return leases;
}

}  // namespace lockstore
