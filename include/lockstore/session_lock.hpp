// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// with_lock and with_session_lock: the safe way to run work under a lease
// (with_session_lock: an agent turn, on AdvisoryKey::for_session(tenant,
// thread)). They acquire the key, run the body,
// renew the lease every ttl/3 while the body runs, and always release.
// If a renewal finds the lease gone, or no renewal has been confirmed by the
// lease's assumed end (LockGuard::valid_until) less a safety margin, the body
// is cancelled (Asio terminal cancellation) and the call throws
// errc::lock_lost: a partitioned holder stops before another can get in.
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

namespace lockstore {

inline constexpr std::chrono::milliseconds default_session_lock_ttl{30'000};
inline constexpr std::chrono::milliseconds default_session_lock_deadline{5'000};

struct LockOptions {
  std::chrono::milliseconds ttl = default_session_lock_ttl;            ///< lease length
  std::chrono::milliseconds deadline = default_session_lock_deadline;  ///< how long to wait
  /// Extend every ttl/3 while the body runs. Either way the body is cancelled
  /// at the lease's assumed end less the safety margin if no extend moved it.
  bool auto_renew = true;
};

/// How long before the end of its lease (LockGuard::valid_until) a holder
/// stops: max(ttl / 10, 50 ms), but at most ttl / 3, so that with a short TTL
/// the renewal due every ttl / 3 still comes first. It covers the time a
/// cancelled body needs to notice, and clock drift between this machine and
/// the backend (README, "Guarantees").
inline std::chrono::milliseconds safety_margin(std::chrono::milliseconds ttl) {
  return std::min(std::max(ttl / 10, std::chrono::milliseconds(50)), ttl / 3);
}

namespace detail {

template <class F>
using body_result_t = typename std::invoke_result_t<F&>::value_type;

template <class R>
using boxed_result_t = std::optional<std::conditional_t<std::is_void_v<R>, std::monostate, R>>;

// Runs the body and boxes its result, so that void and non-default-
// constructible results both travel through co_spawn's completion.
template <class F>
asio::awaitable<boxed_result_t<body_result_t<F>>> run_body(F& body) {
  if constexpr (std::is_void_v<body_result_t<F>>) {
    co_await body();
    co_return std::monostate{};
  } else {
    co_return co_await body();
  }
}

// When the body must have stopped: the guard's valid_until (moved by every
// confirmed extend, the body's own included) less the margin. Shared by the
// renewal and the watchdog.
struct LeaseClock {
  const LockGuard* guard;
  std::chrono::milliseconds margin;
  std::chrono::steady_clock::time_point stop_at() const { return guard->valid_until() - margin; }
};

// Extends the lease every ttl/3; each confirmed extend moves the guard's
// valid_until to the time it was sent + ttl (lockstore's backends do it
// themselves; for another backend it is done here). Returns when an extend
// answers false (the lease is lost) or confirms too late. Errors are logged
// and retried sooner; the watchdog, not this loop, decides when time has run
// out, so a renewal that hangs cannot keep the body running past its lease.
// With `renew` false it only waits to be cancelled.
template <class L>
asio::awaitable<void> renew_until_lost(L& lock, LockGuard& guard, std::chrono::milliseconds ttl, LeaseClock& lease,
                                       bool renew) {
  using Clock = std::chrono::steady_clock;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  if (!renew) {
    timer.expires_at(Clock::time_point::max());
    co_await timer.async_wait(asio::use_awaitable);
    co_return;
  }
  const auto interval = std::max<std::chrono::milliseconds>(ttl / 3, std::chrono::milliseconds(1));
  auto wait = interval;
  for (;;) {
    timer.expires_after(wait);
    co_await timer.async_wait(asio::use_awaitable);
    const auto sent = Clock::now();
    const auto assumed_end = guard.valid_until();
    try {
      auto extending = lock.extend(guard, ttl);
      const bool extended = co_await std::move(extending);
      // A confirmation that comes after the lease it would extend has ended
      // proves nothing: the key may have changed hands meanwhile.
      if (!extended || Clock::now() >= assumed_end) co_return;
      if (guard.valid_until() == assumed_end) guard.confirm_until(sent + ttl);
      wait = interval;
    } catch (const boost::system::system_error& error) {
      if (error.code() == asio::error::operation_aborted) throw;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(lease.stop_at() - Clock::now());
      if (left <= std::chrono::milliseconds::zero()) co_return;  // too late for any renewal to count
      detail::log(LogLevel::warning,
                  fmt::format("renewing lock '{}' failed ({}); retrying, the body is stopped in {} ms unless a "
                              "renewal succeeds first", guard.key().str(), error.what(), left.count()));
      wait = std::clamp<std::chrono::milliseconds>(left / 4, std::chrono::milliseconds(1), interval);
    }
  }
}

// Returns once the lease's assumed end, less the safety margin, has come
// without a renewal moving it: the body must stop now. Looks again at least
// every quarter margin (and no more often than every 10 ms), so an extend of
// the body's own that moved the end earlier is seen well within the margin.
inline asio::awaitable<void> watch_lease_end(LeaseClock& lease) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto look_every = std::max<std::chrono::milliseconds>(lease.margin / 4, std::chrono::milliseconds(10));
  while (std::chrono::steady_clock::now() < lease.stop_at()) {
    timer.expires_at(std::min(lease.stop_at(), std::chrono::steady_clock::now() + look_every));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// What running a body under a renewed lease came to.
template <class R>
struct RenewedRun {
  bool lost = false;  // the lease was lost or ran out unconfirmed: the body was cancelled
  std::exception_ptr failure;
  boxed_result_t<R> result;
};

// Runs the body while the renewal (when `renew`) and the watchdog run beside
// it; the first of the three to finish cancels the other two, and all three
// have finished when this returns. Never throws what the body throws: it is
// in `failure`. A lease with no time left is not given a body to run.
template <DistributedLock L, class F>
asio::awaitable<RenewedRun<body_result_t<F>>> run_renewed(L& lock, LockGuard& guard, std::chrono::milliseconds ttl,
                                                          F& body, bool renew = true) {
  RenewedRun<body_result_t<F>> run;
  // A backend that does not say when its lease ends (a guard built without
  // valid_until) gets its lease confirmed by an extend before the body runs.
  if (guard.valid_until() == LockGuard::TimePoint::max()) {
    const auto sent = std::chrono::steady_clock::now();
    bool confirmed = false;
    try {
      auto confirming = lock.extend(guard, ttl);
      confirmed = co_await std::move(confirming);
    } catch (...) {
      run.failure = std::current_exception();
      co_return run;
    }
    if (confirmed && guard.valid_until() == LockGuard::TimePoint::max()) guard.confirm_until(sent + ttl);
    if (!confirmed) {
      run.lost = true;
      co_return run;
    }
  }
  LeaseClock lease{&guard, safety_margin(ttl)};
  if (std::chrono::steady_clock::now() >= lease.stop_at()) {
    run.lost = true;
    co_return run;
  }
  auto executor = co_await asio::this_coro::executor;
  // Any side may throw, so wait_for_one (not `||`, which waits for a
  // success). Built in named locals: g++ 12 mishandles temporaries in
  // co_await expressions.
  auto body_op = asio::co_spawn(executor, run_body(body), asio::deferred);
  auto renew_op = asio::co_spawn(executor, renew_until_lost(lock, guard, ttl, lease, renew), asio::deferred);
  auto watch_op = asio::co_spawn(executor, watch_lease_end(lease), asio::deferred);
  auto group = asio::experimental::make_parallel_group(std::move(body_op), std::move(renew_op), std::move(watch_op));
  auto all_done = std::move(group).async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  auto [order, body_error, body_value, renew_error, watch_error] = co_await std::move(all_done);
  // The renewal or the watchdog ended first (however it ended): the body was
  // cancelled because the lease could no longer be trusted, unless the
  // caller's own cancellation is what ended them.
  asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
  run.lost = order[0] != 0 && state.cancelled() == asio::cancellation_type::none;
  run.failure = body_error;
  run.result = std::move(body_value);
  co_return run;
}

/// The completion signature of with_lock, with_session_lock and renew_while
/// through a completion token: the body's exception (or errc::lock_lost,
/// errc::timeout, ...) as an exception_ptr, since the body may throw
/// anything, then the body's result (value-initialized on failure).
template <class F>
using body_signature_t = completion_signature_t<body_result_t<F>, std::exception_ptr>;

template <class F>
concept BodyResultForToken = std::is_void_v<body_result_t<F>> || std::default_initializable<body_result_t<F>>;

inline Error lease_lost_error(const AdvisoryKey& key, std::chrono::milliseconds ttl) {
  return Error(errc::lock_lost,
               fmt::format("the lease on '{}' was lost while the body ran (a renewal found it expired or taken, "
                           "or none was confirmed before the lease's end less {} ms); the body was cancelled",
                           key.str(), safety_margin(ttl).count()));
}

}  // namespace detail

/// Acquires `key` (waiting up to options.deadline; throws errc::timeout),
/// runs `body()` (which returns asio::awaitable<R>), then releases the lease
/// whether the body returned or threw. The body's exception propagates; a
/// failed release is logged, never thrown over the body's outcome. With
/// auto_renew, a lost lease cancels the body and the call throws
/// errc::lock_lost; so does a lease whose renewals stopped being confirmed
/// (the server unreachable): the body is cancelled at
/// valid_until() - safety_margin(ttl), before another holder can get in.
/// Renewal always stops before the release.
/// Cancelling the call cancels the body and still releases the lease.
template <DistributedLock L, class F>
asio::awaitable<detail::body_result_t<F>> with_lock(L& lock, AdvisoryKey key, F body, LockOptions options = {}) {
  using Result = detail::body_result_t<F>;
  // Calls with by-value arguments are made in their own statements, then
  // awaited: g++ 12 corrupts such arguments inside a co_await expression.
  auto acquiring = lock.acquire(key, options.ttl, options.deadline);
  LockGuard guard = co_await std::move(acquiring);

  // From here the lease must be released even if the caller cancels us.
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);

  // Without auto_renew the lease is not extended, but the body is still
  // stopped before the lease's end.
  auto running = detail::run_renewed(lock, guard, options.ttl, body, options.auto_renew);
  auto run = co_await std::move(running);

  try {
    auto releasing = lock.release(std::move(guard));
    co_await std::move(releasing);
  } catch (const std::exception& error) {
    detail::log(LogLevel::error,
                fmt::format("releasing lock '{}' failed: {}; it will expire by TTL", key.str(), error.what()));
  }
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);

  if (run.lost) throw detail::lease_lost_error(key, options.ttl);
  if (run.failure) std::rethrow_exception(run.failure);
  if constexpr (!std::is_void_v<Result>) co_return std::move(*run.result);
}

/// with_lock on the session's key, AdvisoryKey::for_session(tenant, thread_id).
template <DistributedLock L, class F>
asio::awaitable<detail::body_result_t<F>> with_session_lock(L& lock, const TenantId& tenant,
                                                            std::string_view thread_id, F body,
                                                            LockOptions options = {}) {
  auto key = AdvisoryKey::for_session(tenant, thread_id);
  auto running = with_lock(lock, std::move(key), std::move(body), options);
  co_return co_await std::move(running);
}

/// with_lock through an Asio completion token (a callback, use_future,
/// deferred, ...): completes with `void(std::exception_ptr, R)`
/// (`void(std::exception_ptr)` for a body returning awaitable<void>), the
/// exception being whatever the coroutine form would have thrown. The body
/// and the renewals run on a strand of the handler's executor (the system
/// executor's pool when it has none); `lock` must outlive the call.
/// Cancelling through the handler's slot cancels the body and still releases.
template <DistributedLock L, class F, class Token>
requires detail::BodyResultForToken<F> && asio::completion_token_for<Token, detail::body_signature_t<F>>
auto with_lock(L& lock, AdvisoryKey key, F body, LockOptions options, Token&& token) {
  auto running = with_lock(lock, std::move(key), std::move(body), options);
  return detail::complete_through<std::exception_ptr>(std::move(running), std::forward<Token>(token));
}

namespace detail {

/// The coroutine form keeps `tenant` and `thread_id` by reference; the token
/// form may start after the caller's arguments are gone, so it owns copies.
template <DistributedLock L, class F>
asio::awaitable<body_result_t<F>> with_session_lock_owning(L& lock, TenantId tenant, std::string thread_id, F body,
                                                           LockOptions options) {
  auto running = with_session_lock(lock, tenant, thread_id, std::move(body), options);
  co_return co_await std::move(running);
}

}  // namespace detail

/// with_session_lock through a completion token, as with_lock above.
template <DistributedLock L, class F, class Token>
requires detail::BodyResultForToken<F> && asio::completion_token_for<Token, detail::body_signature_t<F>>
auto with_session_lock(L& lock, const TenantId& tenant, std::string_view thread_id, F body, LockOptions options,
                       Token&& token) {
  auto running = detail::with_session_lock_owning(lock, tenant, std::string(thread_id), std::move(body), options);
  return detail::complete_through<std::exception_ptr>(std::move(running), std::forward<Token>(token));
}

/// Runs `body()` while `guard`'s lease is held: the lease is extended every
/// ttl/3, and the body is cancelled (Asio terminal cancellation) when an
/// extend answers false or when no extend has been confirmed by
/// guard.valid_until() - safety_margin(ttl); the call then throws
/// errc::lock_lost once the body has finished. The body's own exception
/// propagates. It does not release the lease: that stays the caller's.
/// For a lease taken some other way than with_session_lock (the CLI's
/// `run` uses it for its command).
template <DistributedLock L, class F>
asio::awaitable<detail::body_result_t<F>> renew_while(L& lock, LockGuard& guard, std::chrono::milliseconds ttl,
                                                      F body) {
  auto running = detail::run_renewed(lock, guard, ttl, body);
  auto run = co_await std::move(running);
  if (run.lost) throw detail::lease_lost_error(guard.key(), ttl);
  if (run.failure) std::rethrow_exception(run.failure);
  if constexpr (!std::is_void_v<detail::body_result_t<F>>) co_return std::move(*run.result);
}

/// renew_while through a completion token, as with_lock above; `guard`
/// must outlive the call.
template <DistributedLock L, class F, class Token>
requires detail::BodyResultForToken<F> && asio::completion_token_for<Token, detail::body_signature_t<F>>
auto renew_while(L& lock, LockGuard& guard, std::chrono::milliseconds ttl, F body, Token&& token) {
  auto running = renew_while(lock, guard, ttl, std::move(body));
  return detail::complete_through<std::exception_ptr>(std::move(running), std::forward<Token>(token));
}

}  // namespace lockstore
