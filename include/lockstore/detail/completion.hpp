// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Completion tokens for the lock operations. Each backend writes its
// operations once, as coroutines (`asio::awaitable<T>`); the overloads here
// let the same operations complete through any Asio completion token
// (a callback, `use_future`, `deferred`, `as_tuple(use_awaitable)`, ...)
// with the signature `void(error_code, T)` (`void(error_code)` for release).
//
// `use_awaitable` (what every call without a token means) gets the
// coroutine itself, unchanged. Any other token runs it with co_spawn on a
// strand of the handler's associated executor (the system executor's thread
// pool when the handler has none, so `use_future` works from a thread with
// no io_context), and its failure becomes an error_code: a lockstore::Error
// or system_error keeps its code (errc::timeout, operation_aborted, ...),
// any other exception becomes errc::backend_failure. The text of the
// exception is logged at debug level, since an error_code cannot carry it.
// On failure the value is empty: `LockGuard{}` (holding nothing, already
// released), std::nullopt, false, 0 or an empty vector.
#pragma once

#include "lockstore/error.hpp"
#include "lockstore/key.hpp"
#include "lockstore/lock_guard.hpp"
#include "lockstore/lock_info.hpp"
#include "lockstore/log.hpp"
#include "lockstore/sql.hpp"

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

/// Carries a caller's cancellation over to an operation running on a strand.
/// Asio 1.81's own forwarding (co_spawn with the caller's slot) posts a
/// lambda that points into the caller's cancellation slot; when the operation
/// finishes before that lambda runs, the caller's next operation reuses the
/// slot and the lambda reads freed memory (chriskohlhoff/asio#1332). The relay
/// is owned by everyone who may still touch it, and emits only on the strand
/// and only while the operation has not finished.
struct StrandCancelRelay {
  asio::cancellation_signal signal;
  bool finished = false;  // read and written on the strand only
};

template <class T>
using StrandResult = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;

/// On the strand: runs `operation`, then marks the relay finished, so a
/// cancellation still on its way is dropped instead of delivered late.
template <class T>
asio::awaitable<StrandResult<T>> run_relayed(std::shared_ptr<StrandCancelRelay> relay, asio::awaitable<T> operation) {
  struct MarkFinished {
    StrandCancelRelay& relay;
    ~MarkFinished() { relay.finished = true; }
  } mark{*relay};
  if constexpr (std::is_void_v<T>) {
    co_await std::move(operation);
    co_return true;
  } else {
    co_return co_await std::move(operation);
  }
}

/// Connects `slot` (a caller's cancellation slot) to `relay`, delivering on
/// `strand`. The caller clears the slot when its operation completes.
template <class Strand>
void relay_cancellation(asio::cancellation_slot slot, const std::shared_ptr<StrandCancelRelay>& relay,
                        const Strand& strand) {
  if (!slot.is_connected()) return;
  slot.assign([relay, strand](asio::cancellation_type type) {
    asio::post(strand, [relay, type] {
      if (!relay->finished) relay->signal.emit(type);
    });
  });
}

template <class T, class Failure = boost::system::error_code>
struct CompletionSignature {
  using type = void(Failure, T);
};
template <class Failure>
struct CompletionSignature<void, Failure> {
  using type = void(Failure);
};
template <class T, class Failure = boost::system::error_code>
using completion_signature_t = typename CompletionSignature<T, Failure>::type;

/// The error code a failed operation completes with (see the file comment).
inline boost::system::error_code error_code_of(const std::exception_ptr& failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const boost::system::system_error& error) {
    log(LogLevel::debug, fmt::format("lock operation failed: {}", error.what()));
    return error.code();
  } catch (const std::exception& error) {
    log(LogLevel::debug, fmt::format("lock operation failed: {}", error.what()));
  } catch (...) {
  }
  return make_error_code(errc::backend_failure);
}

// g++ 12 at -O2 reports copying an awaitable handler's any_io_executor as
// an out-of-bounds read (-Warray-bounds, a false positive inside Asio).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif
/// How a failed operation reaches its handler: as an error_code (the lock
/// and store operations) or as the exception itself (with_lock, whose body
/// is the caller's code and may throw anything).
template <class Failure>
Failure failure_as(const std::exception_ptr& failure) {
  if constexpr (std::is_same_v<Failure, std::exception_ptr>) {
    return failure;
  } else {
    return failure ? error_code_of(failure) : boost::system::error_code{};
  }
}

template <class Failure>
struct InitiateFromAwaitable {
  template <class Handler, class T>
  void operator()(Handler handler, asio::awaitable<T> operation) const {
    auto strand = asio::make_strand(asio::get_associated_executor(handler));
    auto relay = std::make_shared<StrandCancelRelay>();
    auto slot = asio::get_associated_cancellation_slot(handler);
    relay_cancellation(slot, relay, strand);
    // `finish` keeps the relay alive: co_spawn's own frame clears the relay's
    // slot after the operation's frame (which also owns it) is gone.
    auto finish = [handler = std::move(handler), slot, relay](std::exception_ptr failure,
                                                              StrandResult<T> result) mutable {
      if (slot.is_connected()) slot.clear();
      Failure code = failure_as<Failure>(failure);
      auto executor = asio::get_associated_executor(handler);  // before the handler is moved
      if constexpr (std::is_void_v<T>) {
        asio::dispatch(asio::bind_executor(
            std::move(executor), [handler = std::move(handler), code = std::move(code)]() mutable { handler(code); }));
      } else {
        T value = result ? std::move(*result) : T{};
        asio::dispatch(asio::bind_executor(std::move(executor),
                                           [handler = std::move(handler), code = std::move(code),
                                            value = std::move(value)]() mutable { handler(code, std::move(value)); }));
      }
    };
    asio::co_spawn(strand, run_relayed(relay, std::move(operation)),
                   asio::bind_cancellation_slot(relay->signal.slot(), std::move(finish)));
  }
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

template <class Token>
inline constexpr bool is_default_token_v = std::is_same_v<std::decay_t<Token>, asio::use_awaitable_t<>>;

/// `operation` completed through `token` (see the file comment); with
/// Failure = std::exception_ptr the handler gets the exception itself.
template <class Failure = boost::system::error_code, class T, class Token>
auto complete_through(asio::awaitable<T> operation, Token&& token) {
  if constexpr (is_default_token_v<Token>) {
    return operation;
  } else {
    return asio::async_initiate<Token, completion_signature_t<T, Failure>>(InitiateFromAwaitable<Failure>{}, token,
                                                                           std::move(operation));
  }
}

/// The completion-token overloads of a lock's operations. A backend derives
/// from it, names each overload set with a using-declaration, and writes its
/// operations once as coroutines; an overload exists only for the operations
/// the backend has. A guard passed to extend must outlive the operation.
template <class Lock>
class CompletionTokenOverloads {
 public:
  using milliseconds = std::chrono::milliseconds;
  using error_code = boost::system::error_code;

  template <asio::completion_token_for<void(error_code, std::optional<LockGuard>)> Token>
  auto try_acquire(AdvisoryKey key, milliseconds ttl, Token&& token) {
    return complete_through(self().try_acquire(std::move(key), ttl), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, LockGuard)> Token>
  auto acquire(AdvisoryKey key, milliseconds ttl, milliseconds deadline, Token&& token) {
    return complete_through(self().acquire(std::move(key), ttl, deadline), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, bool)> Token>
  auto extend(LockGuard& guard, milliseconds ttl, Token&& token) {
    return complete_through(self().extend(guard, ttl), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code)> Token>
  auto release(LockGuard guard, Token&& token) {
    return complete_through(self().release(std::move(guard)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<LockGuard>)> Token, class L = Lock>
    requires requires(L& lock, AdvisoryKey key, milliseconds ttl) { lock.take_over(key, ttl); }
  auto take_over(AdvisoryKey key, milliseconds ttl, Token&& token) {
    return complete_through(self().take_over(std::move(key), ttl), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::vector<LockInfo>)> Token, class L = Lock>
    requires requires(L& lock) { lock.list(); }
  auto list(Token&& token) {
    return complete_through(self().list(), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::optional<LockInfo>)> Token, class L = Lock>
    requires requires(L& lock, AdvisoryKey key) { lock.force_release(key); }
  auto force_release(AdvisoryKey key, Token&& token) {
    return complete_through(self().force_release(std::move(key)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, std::size_t)> Token, class L = Lock>
    requires requires(L& lock) { lock.release_all(); }
  auto release_all(Token&& token) {
    return complete_through(self().release_all(), std::forward<Token>(token));
  }

  /// `guard` must outlive the operation. Statements: std::vector<SqlStatement>
  /// (SQLite, PostgreSQL) or std::vector<RedisCommand> (Redis).
  template <class Statements, class Token, class L = Lock>
    requires requires(L& lock, const LockGuard& guard, Statements statements) {
      lock.fenced(guard, std::move(statements));
    } && asio::completion_token_for<
        Token, void(error_code, typename decltype(std::declval<L&>().fenced(std::declval<const LockGuard&>(),
                                                                             std::declval<Statements>()))::value_type)>
  auto fenced(const LockGuard& guard, Statements statements, Token&& token) {
    return complete_through(self().fenced(guard, std::move(statements)), std::forward<Token>(token));
  }

  template <asio::completion_token_for<void(error_code, bool)> Token, class L = Lock>
    requires requires(L& lock, std::string resource, std::uint64_t fence) { lock.admit(resource, fence); }
  auto admit(std::string resource, std::uint64_t fence, Token&& token) {
    return complete_through(self().admit(std::move(resource), fence), std::forward<Token>(token));
  }

 private:
  Lock& self() { return static_cast<Lock&>(*this); }
};

}  // namespace lockstore::detail
