// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The one driver of every backend's acquire(): it runs the waiting protocol
// of acquire_machine.hpp with the backend's primitives (one attempt, the
// undo of a grant) and the in-process wake-ups of keyed_waiters.hpp.
#pragma once

#include "lockstore/detail/acquire_machine.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/lock_guard.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
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
  /// See AttemptReport::ticket_expires.
  bool ticket_expires = true;
  /// For an attempt that a release started before its caller resumed (the
  /// SQLite backend's early attempts): the caller's notification count then.
  /// Notifications after it were not seen by the attempt and still end the
  /// next wait.
  std::optional<std::uint64_t> notifications_seen{};
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

/// Drives an AcquireMachine with a backend's primitives. try_once: () ->
/// awaitable<Attempt>; undo: (LockGuard) -> awaitable<void>. `subscription`
/// is the caller's interest in the key, taken before the first attempt: a
/// release between a refusal and the wait marks it, and the wait returns at
/// once.
template <class TryOnce, class Undo>
asio::awaitable<LockGuard> acquire_loop(KeyedWaiters::Subscription& subscription, const AdvisoryKey& key,
                                        std::chrono::milliseconds deadline, TryOnce try_once, Undo undo) {
  AcquireMachine machine(std::chrono::steady_clock::now(), deadline);
  Attempt attempt;
  for (auto step = machine.start();;) {
    switch (step.kind) {
      case AcquireStep::Kind::attempt: {
        const auto seen = subscription.notifications();
        attempt = co_await try_once();
        subscription.rearm(attempt.notifications_seen.value_or(seen));
        // A cancellation that arrived while the attempt ran may have raced
        // with a grant: the machine has it given back before reporting it.
        const auto state = co_await asio::this_coro::cancellation_state;
        AttemptReport report;
        report.granted = attempt.guard.has_value();
        if (attempt.guard) report.valid_until = attempt.guard->valid_until();
        report.retry_at = attempt.retry_at;
        report.ticket = attempt.ticket;
        report.ticket_expires = attempt.ticket_expires;
        step = machine.attempted(report, std::chrono::steady_clock::now(),
                                 state.cancelled() != asio::cancellation_type::none);
        break;
      }
      case AcquireStep::Kind::give_back: {
        if (step.cancelled) {
          // Asio throws at any co_await once the caller is cancelled (the
          // switch is one for the whole chain of coroutines): it is turned
          // off around the undo, and back as it was after it.
          const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
          co_await asio::this_coro::throw_if_cancelled(false);
          auto giving_back = give_back(attempt, undo, key, "after a cancelled acquire");
          co_await std::move(giving_back);
          co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
        } else {
          auto giving_back = give_back(attempt, undo, key, "granted too late");
          co_await std::move(giving_back);
        }
        step = machine.given_back(std::chrono::steady_clock::now());
        break;
      }
      case AcquireStep::Kind::wait:
        subscription.set_ticket(step.ticket);
        co_await subscription.wait_until(step.until);
        step = machine.woken();
        break;
      case AcquireStep::Kind::done:
        co_return std::move(*attempt.guard);
      case AcquireStep::Kind::timed_out:
        throw Error(errc::timeout, fmt::format("could not acquire lock '{}' within {} ms", key.str(),
                                               deadline.count()));
      case AcquireStep::Kind::aborted:
        throw boost::system::system_error(asio::error::operation_aborted);
    }
  }
}

/// As above, subscribing to `key` in `waiters` itself.
template <class TryOnce, class Undo>
asio::awaitable<LockGuard> acquire_loop(KeyedWaiters& waiters, const AdvisoryKey& key,
                                        std::chrono::milliseconds deadline, TryOnce try_once, Undo undo) {
  auto subscription = waiters.subscribe(key.str());
  auto acquiring = acquire_loop(subscription, key, deadline, std::move(try_once), std::move(undo));
  co_return co_await std::move(acquiring);
}

}  // namespace lockstore::detail
