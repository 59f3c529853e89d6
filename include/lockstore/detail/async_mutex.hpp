// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// A FIFO mutex for coroutines that all run on one strand: it serialises the
// use of one server connection (one request at a time on the wire) among the
// operations of a PostgresLock or RedisLock. Not thread-safe by itself; the
// strand is what makes it safe. Waiting for it is not cancellable: the wait
// is bounded by the request ahead, and a waiter that vanished while queued
// would strand the ownership it was handed.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <deque>
#include <memory>

namespace lockstore::detail {

namespace asio = boost::asio;

/// An awaitable that ignores per-operation cancellation: for I/O that must
/// run to completion once started (a request half-sent or a reply half-read
/// would leave the connection unusable).
inline auto uncancellable() {
  return asio::bind_cancellation_slot(asio::cancellation_slot(), asio::as_tuple(asio::use_awaitable));
}

class AsyncMutex {
 public:
  /// Unlocks on destruction.
  class Ownership {
   public:
    explicit Ownership(AsyncMutex* mutex) : mutex_(mutex) {}
    Ownership(Ownership&& other) noexcept : mutex_(std::exchange(other.mutex_, nullptr)) {}
    Ownership& operator=(Ownership&&) = delete;
    ~Ownership() {
      if (mutex_ != nullptr) mutex_->unlock();
    }

   private:
    AsyncMutex* mutex_;
  };

  asio::awaitable<Ownership> lock() {
    if (!locked_) {
      locked_ = true;
      co_return Ownership(this);
    }
    auto turn = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor,
                                                      asio::steady_timer::time_point::max());
    queue_.push_back(turn);
    // unlock() hands the mutex over by cancelling this timer.
    co_await turn->async_wait(uncancellable());
    co_return Ownership(this);
  }

 private:
  void unlock() {
    if (queue_.empty()) {
      locked_ = false;
      return;
    }
    auto next = std::move(queue_.front());
    queue_.pop_front();
    next->cancel();  // still locked: ownership passes to the next waiter
  }

  bool locked_ = false;
  std::deque<std::shared_ptr<asio::steady_timer>> queue_;
};

}  // namespace lockstore::detail
