// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// What the server-backed locks (PostgresLock, RedisLock) share: every
// operation runs on the lock's strand, and a second, listening connection
// (PostgreSQL LISTEN, Redis SUBSCRIBE) is read while any acquire() waits, so
// a release anywhere wakes the waiters here.
//
// The listening connection listens only while someone waits: when the last
// waiter leaves it stops listening (UNLISTEN / UNSUBSCRIBE) and stays open,
// unread but sent nothing. Left listening and unread, a LISTEN connection
// pins PostgreSQL's cluster-wide notification queue, which every release
// anywhere then grows, and a Redis subscriber fills its output buffer until
// the server drops it. An idle lock also leaves no operation outstanding on
// its io_context, so io_context::run() returns when the caller's own work is
// done. The next acquire that has to wait listens again (one round trip; a
// new connection only if the old one broke).
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/detail/random.hpp"
#include "lockstore/lock_guard.hpp"
#include "lockstore/log.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <string>

namespace lockstore::detail {

namespace asio = boost::asio;

using LockStrand = asio::strand<asio::any_io_executor>;

/// Runs `operation` on `strand` and resumes the caller on its own executor.
/// The caller's per-operation cancellation reaches the operation.
template <class T>
asio::awaitable<T> on_strand(const LockStrand& strand, asio::awaitable<T> operation) {
  auto relay = std::make_shared<StrandCancelRelay>();
  asio::cancellation_state caller_state = co_await asio::this_coro::cancellation_state;
  auto caller_slot = caller_state.slot();
  relay_cancellation(caller_slot, relay, strand);
  auto spawned = asio::co_spawn(strand, run_relayed(relay, std::move(operation)),
                                asio::bind_cancellation_slot(relay->signal.slot(), asio::use_awaitable));
  std::exception_ptr failure;
  StrandResult<T> result{};
  try {
    result = co_await std::move(spawned);
  } catch (...) {
    failure = std::current_exception();
  }
  if (caller_slot.is_connected()) caller_slot.clear();
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<T>) co_return std::move(*result);
}

/// After an acquire on the strand has returned a lease: a cancellation of
/// the caller that came too late to reach the strand operation (the relay
/// drops a cancellation that arrives after the operation finished) gives the
/// lease back and throws operation_aborted, as one that came in time would
/// have, instead of handing a guard to a cancelled caller.
///
/// The caller turns throw_if_cancelled off before awaiting this and passes
/// the value it had (`throw_if_cancelled`), which is restored here: awaiting
/// any awaitable in a cancelled coroutine throws at once (Asio's
/// await_transform), which would destroy the guard unreleased.
template <class GiveBack>
asio::awaitable<LockGuard> keep_unless_cancelled(LockGuard guard, GiveBack give_back, bool throw_if_cancelled) {
  asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
  if (state.cancelled() == asio::cancellation_type::none) {
    co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    co_return guard;
  }
  const auto key = guard.key();
  try {
    auto giving_back = give_back(std::move(guard));
    co_await std::move(giving_back);
  } catch (const std::exception& error) {
    log(LogLevel::warning, fmt::format("giving back lock '{}' after a cancelled acquire failed: {}; it will expire "
                                       "by TTL", key.str(), error.what()));
  }
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  throw boost::system::system_error(asio::error::operation_aborted);
}

/// How long a release may wait for its answer: until the lease's assumed
/// end, and at least a second (a release after that end still frees the key
/// sooner than its expiry would), so that a release through a partition
/// fails (errc::connection_lost) instead of hanging. Unbounded for a guard
/// that does not know its end.
inline LockGuard::TimePoint release_answer_by(const LockGuard& guard) {
  if (guard.valid_until() == LockGuard::TimePoint::max()) return guard.valid_until();
  return std::max(guard.valid_until(), std::chrono::steady_clock::now() + std::chrono::seconds(1));
}

/// When a refused acquirer looks again on its own: at the holder's expiry,
/// and no later than a jittered fallback poll (notifications may be missed
/// while the listening connection is down or being set up).
inline std::chrono::steady_clock::time_point remote_retry_time(std::chrono::milliseconds holder_remaining,
                                                               bool listening) {
  const auto now = std::chrono::steady_clock::now();
  const std::int64_t poll_ms = listening ? 1000 : 50;
  const auto jittered = std::chrono::microseconds(ThreadRandom::between(poll_ms * 500, poll_ms * 1000));
  const auto until_expiry = std::chrono::duration_cast<std::chrono::microseconds>(
      std::max(holder_remaining, std::chrono::milliseconds(0)) + std::chrono::milliseconds(1));
  return now + std::min(until_expiry, jittered);
}

/// Reads the listening connection on the strand while at least one acquire
/// waits, and has it stop listening when none does. `read_once` waits for
/// input (ending early on cancellation), hands notifications to the
/// waiters, and throws when the connection broke. `quiet` takes the
/// connection's set-up turn and, if nobody waits by then, calls
/// set_listening(false) and stops listening on the connection (or closes
/// it); it never throws and is not cancelled.
class WakeupPump {
 public:
  using ReadOnce = std::function<asio::awaitable<void>()>;
  using Quiet = std::function<asio::awaitable<void>()>;

  WakeupPump(LockStrand strand, ReadOnce read_once, Quiet quiet)
      : strand_(std::move(strand)), read_once_(std::move(read_once)), quiet_(std::move(quiet)) {}

  /// On the strand: an acquire starts waiting. `owner` (the lock's shared
  /// state) is kept alive by the reading loop until it ends.
  void waiter_arrived(const std::shared_ptr<void>& owner) {
    ++waiting_;
    start_if_needed(owner);
  }

  /// On the strand: an acquire stopped waiting.
  void waiter_left() {
    if (--waiting_ == 0 && running_) stop_.emit(asio::cancellation_type::terminal);
  }

  /// On the strand: the listening connection is (again) up; read it if
  /// anyone waits, quiet it if nobody does any more.
  void start_if_needed(const std::shared_ptr<void>& owner) {
    if (running_ || !listening_) return;
    running_ = true;
    asio::co_spawn(strand_, loop(owner), asio::bind_cancellation_slot(stop_.slot(), asio::detached));
  }

  void set_listening(bool listening) { listening_ = listening; }
  bool listening() const noexcept { return listening_; }
  int waiting() const noexcept { return waiting_; }

 private:
  // Started by the first waiter that finds the connection listening; runs
  // until nobody waits and the connection is quiet (or broken).
  asio::awaitable<void> loop(std::shared_ptr<void> keep_alive) {
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
      if (waiting_ > 0 && listening_) {
        try {
          co_await read_once_();
        } catch (const std::exception& error) {
          listening_ = false;  // the next refused acquire reconnects it
          log(LogLevel::debug, fmt::format("lock wake-up connection lost ({}); polling until it is back", error.what()));
        }
        auto state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() != asio::cancellation_type::none) co_await asio::this_coro::reset_cancellation_state();
        continue;
      }
      if (waiting_ == 0 && listening_) {
        // Nobody reads it any more: it must not go on receiving. A waiter
        // that comes meanwhile waits for the set-up turn `quiet` holds, and
        // the loop looks again afterwards.
        co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
        co_await quiet_();
        co_await asio::this_coro::reset_cancellation_state();
        continue;
      }
      break;
    }
    running_ = false;
    keep_alive.reset();
  }

  LockStrand strand_;
  ReadOnce read_once_;
  asio::cancellation_signal stop_;
  Quiet quiet_;
  int waiting_ = 0;
  bool running_ = false;
  bool listening_ = false;
};

/// After a refused attempt: when to look again. Makes sure the listening
/// connection is up first (`start_listening()` returns an awaitable that
/// never throws); if it came up only now, a release may have slipped by
/// before it listened, so look again at once.
template <class StartListening>
asio::awaitable<std::chrono::steady_clock::time_point> retry_after_refusal(const WakeupPump& pump,
                                                                           std::chrono::milliseconds holder_remaining,
                                                                           StartListening start_listening) {
  if (pump.listening()) co_return remote_retry_time(holder_remaining, true);
  auto starting = start_listening();
  co_await std::move(starting);
  if (!pump.listening()) co_return remote_retry_time(holder_remaining, false);
  co_return std::chrono::steady_clock::now();
}

/// Decrements the pump's waiter count when an acquire ends, however it ends.
class WaitingScope {
 public:
  WaitingScope(WakeupPump& pump, const std::shared_ptr<void>& owner) : pump_(pump) { pump_.waiter_arrived(owner); }
  ~WaitingScope() { pump_.waiter_left(); }
  WaitingScope(const WaitingScope&) = delete;
  WaitingScope& operator=(const WaitingScope&) = delete;

 private:
  WakeupPump& pump_;
};

}  // namespace lockstore::detail
