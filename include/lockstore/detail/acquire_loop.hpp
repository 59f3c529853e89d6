// The one waiting strategy every backend's acquire() shares: subscribe to
// wake-ups for the key, try once, and if refused wait until notified, until
// the holder's lease expires, or until the backend's poll time (whichever is
// first), bounded by the caller's deadline.
#pragma once

#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/lock_guard.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace lockstore::detail {

/// The outcome of one acquisition attempt.
struct Attempt {
  std::optional<LockGuard> guard;
  /// false when the guard refreshed a lease this owner already held: undoing
  /// it after a cancellation must not remove the earlier holder's lease.
  bool fresh = true;
  /// When to look again if refused (holder's expiry or a poll time).
  std::chrono::steady_clock::time_point retry_at = std::chrono::steady_clock::time_point::max();
  /// The caller's ticket in the backend's queue of waiters (0: none).
  std::int64_t ticket = 0;
};

/// Gives back a lease the caller will not get: undone when the attempt made
/// it (`fresh`), only marked released otherwise; a failure is logged (the
/// lease then expires by its TTL), never thrown.
template <class Undo>
asio::awaitable<void> give_back(Attempt& attempt, Undo& undo, const AdvisoryKey& key, std::string_view why) {
  if (!attempt.fresh) {
    attempt.guard->mark_released();  // not ours to undo
    co_return;
  }
  const auto fence = attempt.guard->fence();
  try {
    // Called in its own statement: g++ 12 mishandles by-value arguments of a
    // call made inside a co_await expression.
    auto undoing = undo(std::move(*attempt.guard));
    co_await std::move(undoing);
  } catch (const std::exception& error) {
    detail::log(LogLevel::warning, fmt::format("giving back lock '{}' (fence {}) {} failed: {}; it will expire by TTL",
                                               key.str(), fence, why, error.what()));
  }
}

/// try_once: () -> awaitable<Attempt>; undo: (LockGuard) -> awaitable<void>.
/// on_wake (optional): see KeyedWaiters::Subscription::on_wake.
template <class TryOnce, class Undo>
asio::awaitable<LockGuard> acquire_loop(KeyedWaiters& waiters, const AdvisoryKey& key,
                                        std::chrono::milliseconds deadline, TryOnce try_once,
                                        Undo undo, std::function<void()> on_wake = {}) {
  const auto give_up_at =
      saturating_deadline<std::chrono::steady_clock>(std::chrono::steady_clock::now(), deadline);
  auto subscription = waiters.subscribe(key.str());
  if (on_wake) subscription.on_wake(std::move(on_wake));
  for (;;) {
    subscription.rearm();
    Attempt attempt = co_await try_once();

    // A cancellation that arrived while the attempt ran may have raced with
    // a grant: give the lease back before reporting the cancellation.
    const auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) {
      if (attempt.guard) {
        // Asio throws at any co_await of a cancelled coroutine, in this very
        // frame, so the switch is flipped here, around the undo.
        const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
        co_await asio::this_coro::throw_if_cancelled(false);
        auto giving_back = give_back(attempt, undo, key, "after a cancelled acquire");
        co_await std::move(giving_back);
        co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
      }
      throw boost::system::system_error(asio::error::operation_aborted);
    }
    if (attempt.guard && std::chrono::steady_clock::now() < attempt.guard->valid_until())
      co_return std::move(*attempt.guard);
    if (attempt.guard) {
      // The grant's answer came after the lease's assumed end (its request
      // waited that long): it is worth nothing to the caller. Give it back
      // and try again.
      auto giving_back = give_back(attempt, undo, key, "granted too late");
      co_await std::move(giving_back);
      attempt.retry_at = std::chrono::steady_clock::now();
    }

    if (std::chrono::steady_clock::now() >= give_up_at)
      throw Error(errc::timeout, fmt::format("could not acquire lock '{}' within {} ms", key.str(),
                                             deadline.count()));
    subscription.set_ticket(attempt.ticket);
    co_await subscription.wait_until(std::min(attempt.retry_at, give_up_at));
  }
}

}  // namespace lockstore::detail
