// What the server-backed locks (PostgresLock, RedisLock) share: every
// operation runs on the lock's strand, and a second, listening connection
// (PostgreSQL LISTEN, Redis SUBSCRIBE) is read while any acquire() waits, so
// a release anywhere wakes the waiters here.
//
// The listening connection is read only while someone waits: an idle lock
// leaves no operation outstanding on its io_context, so io_context::run()
// returns when the caller's own work is done.
#pragma once

#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/detail/random.hpp"
#include "lockstore/log.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
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
asio::awaitable<std::optional<T>> boxed(asio::awaitable<T> operation) {
  co_return co_await std::move(operation);
}

template <class T>
asio::awaitable<T> on_strand(const LockStrand& strand, asio::awaitable<T> operation) {
  if constexpr (std::is_void_v<T> || std::is_default_constructible_v<T>) {
    auto spawned = asio::co_spawn(strand, std::move(operation), asio::use_awaitable);
    co_return co_await std::move(spawned);
  } else {
    // co_spawn needs a default-constructible result (Asio 1.81).
    auto spawned = asio::co_spawn(strand, boxed(std::move(operation)), asio::use_awaitable);
    auto result = co_await std::move(spawned);
    co_return std::move(*result);
  }
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
/// waits. `read_once` waits for input (ending early on cancellation), hands
/// notifications to the waiters, and throws when the connection broke.
class WakeupPump {
 public:
  using ReadOnce = std::function<asio::awaitable<void>()>;

  WakeupPump(LockStrand strand, ReadOnce read_once) : strand_(std::move(strand)), read_once_(std::move(read_once)) {}

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
  /// anyone waits.
  void start_if_needed(const std::shared_ptr<void>& owner) {
    if (waiting_ == 0 || running_ || !listening_) return;
    running_ = true;
    asio::co_spawn(strand_, loop(owner), asio::bind_cancellation_slot(stop_.slot(), asio::detached));
  }

  void set_listening(bool listening) { listening_ = listening; }
  bool listening() const noexcept { return listening_; }

 private:
  asio::awaitable<void> loop(std::shared_ptr<void> keep_alive) {
    co_await asio::this_coro::throw_if_cancelled(false);
    while (waiting_ > 0 && listening_) {
      try {
        co_await read_once_();
      } catch (const std::exception& error) {
        listening_ = false;  // the next refused acquire reconnects it
        log(LogLevel::debug, fmt::format("lock wake-up connection lost ({}); polling until it is back", error.what()));
      }
      auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none) co_await asio::this_coro::reset_cancellation_state();
    }
    running_ = false;
    keep_alive.reset();
  }

  LockStrand strand_;
  ReadOnce read_once_;
  asio::cancellation_signal stop_;
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
