// with_session_lock: the safe way to run an agent turn under a session's
// lease. It acquires AdvisoryKey::for_session(tenant, thread), runs the body,
// renews the lease every ttl/3 while the body runs, and always releases.
// If a renewal finds the lease gone, the body is cancelled (Asio terminal
// cancellation) and the call throws errc::lock_lost.
#pragma once

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
#include <exception>
#include <optional>
#include <type_traits>
#include <variant>

namespace lockstore {

inline constexpr std::chrono::milliseconds default_session_lock_ttl{30'000};
inline constexpr std::chrono::milliseconds default_session_lock_deadline{5'000};

struct LockOptions {
  std::chrono::milliseconds ttl = default_session_lock_ttl;            ///< lease length
  std::chrono::milliseconds deadline = default_session_lock_deadline;  ///< how long to wait
  bool auto_renew = true;  ///< extend every ttl/3 while the body runs
};

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

// Extends the lease every ttl/3. Returns only when the lease is lost: an
// extend that answers false, or failed extends until the lease's last known
// expiry has passed. Errors in between are logged and retried sooner.
template <class L>
asio::awaitable<void> renew_until_lost(L& lock, LockGuard& guard, std::chrono::milliseconds ttl) {
  using Clock = std::chrono::steady_clock;
  const auto interval = std::max<std::chrono::milliseconds>(ttl / 3, std::chrono::milliseconds(1));
  asio::steady_timer timer(co_await asio::this_coro::executor);
  auto lease_ends = Clock::now() + ttl;  // acquired just before: a safe lower bound
  auto wait = interval;
  for (;;) {
    timer.expires_after(wait);
    co_await timer.async_wait(asio::use_awaitable);
    const auto asked_at = Clock::now();
    try {
      if (!co_await lock.extend(guard, ttl)) co_return;
      lease_ends = asked_at + ttl;
      wait = interval;
    } catch (const boost::system::system_error& error) {
      if (error.code() == asio::error::operation_aborted) throw;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(lease_ends - Clock::now());
      if (left <= std::chrono::milliseconds::zero()) co_return;
      detail::log(LogLevel::warning,
                  fmt::format("renewing lock '{}' failed ({}); retrying, lease ends in {} ms",
                              guard.key().str(), error.what(), left.count()));
      wait = std::clamp<std::chrono::milliseconds>(left / 4, std::chrono::milliseconds(1), interval);
    }
  }
}

}  // namespace detail

/// Acquires the session's lease (waiting up to options.deadline; throws
/// errc::timeout), runs `body()` (which returns asio::awaitable<R>), then
/// releases the lease whether the body returned or threw. The body's
/// exception propagates; a failed release is logged, never thrown over the
/// body's outcome. With auto_renew, a lost lease cancels the body and the
/// call throws errc::lock_lost; renewal always stops before the release.
/// Cancelling the call cancels the body and still releases the lease.
template <DistributedLock L, class F>
asio::awaitable<detail::body_result_t<F>> with_session_lock(L& lock, const TenantId& tenant,
                                                            std::string_view thread_id, F body,
                                                            LockOptions options = {}) {
  using Result = detail::body_result_t<F>;
  const auto key = AdvisoryKey::for_session(tenant, thread_id);
  // Calls with by-value arguments are made in their own statements, then
  // awaited: g++ 12 corrupts such arguments inside a co_await expression.
  auto acquiring = lock.acquire(key, options.ttl, options.deadline);
  LockGuard guard = co_await std::move(acquiring);

  // From here the lease must be released even if the caller cancels us.
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);

  std::exception_ptr failure;
  detail::boxed_result_t<Result> result;
  bool lost = false;
  if (options.auto_renew) {
    auto executor = co_await asio::this_coro::executor;
    // Either side may throw, so wait_for_one (not `||`, which waits for a
    // success). Built in named locals: g++ 12 mishandles temporaries in
    // co_await expressions.
    auto run_body = asio::co_spawn(executor, detail::run_body(body), asio::deferred);
    auto renew = asio::co_spawn(executor, detail::renew_until_lost(lock, guard, options.ttl), asio::deferred);
    auto group = asio::experimental::make_parallel_group(std::move(run_body), std::move(renew));
    auto both_done = std::move(group).async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    auto [order, body_error, body_value, renew_error] = co_await std::move(both_done);
    lost = order[0] == 1 && !renew_error;
    failure = body_error;
    result = std::move(body_value);
  } else {
    try {
      result = co_await detail::run_body(body);
    } catch (...) {
      failure = std::current_exception();
    }
  }

  try {
    auto releasing = lock.release(std::move(guard));
    co_await std::move(releasing);
  } catch (const std::exception& error) {
    detail::log(LogLevel::error,
                fmt::format("releasing lock '{}' failed: {}; it will expire by TTL", key.str(), error.what()));
  }
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);

  if (lost)
    throw Error(errc::lock_lost, fmt::format("the lease on '{}' was lost while the body ran "
                                             "(a renewal found it expired or taken); the body was cancelled",
                                             key.str()));
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<Result>) co_return std::move(*result);
}

}  // namespace lockstore
