// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// In-process wake-ups for lock waiters, keyed by lock name. A waiter
// subscribes *before* it tries to acquire, so a release that happens between
// its failed attempt and its wait is never missed: the subscription is
// already marked notified and the wait returns at once.
//
// A wait completes when (a) the key is notified, (b) its wake-up time passes
// (the holder's expiry, a poll interval, or the caller's deadline), or (c) the
// caller's per-operation cancellation fires, which completes it with
// asio::error::operation_aborted. Notifiers may run on any thread. A wait
// whose execution context shuts down is abandoned (parked_completions.hpp):
// no notification reaches that context afterwards.
#pragma once

#include "lockstore/detail/parked_completions.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

/// The io_context behind `executor`, when it is one (directly or through a
/// strand); null otherwise.
inline const asio::io_context* io_context_of(const asio::any_io_executor& executor) {
  if (const auto* plain = executor.target<asio::io_context::executor_type>()) return &plain->context();
  if (const auto* stranded = executor.target<asio::strand<asio::io_context::executor_type>>())
    return &stranded->get_inner_executor().context();
  return nullptr;
}

class KeyedWaiters {
  using Handler = asio::any_completion_handler<void(boost::system::error_code)>;

  // One waiting coroutine. Its own mutex orders notify, timer expiry,
  // cancellation and its context's shutdown: whichever takes the stored
  // handler first completes (or, at shutdown, drops) it.
  struct Waiter final : Parked, std::enable_shared_from_this<Waiter> {
    std::mutex mutex;
    bool notified = false;
    std::int64_t ticket = 0;  // the waiter's place in a backend's queue; 0: none
    std::optional<Handler> handler;
    std::optional<asio::any_io_executor> executor;
    std::optional<asio::steady_timer> timer;
    ParkedCompletions* parked_in = nullptr;  // while handler is set
    const asio::io_context* context = nullptr;  // the handler's, when it is an io_context
    std::function<void()> on_wake;  // run by the notifier when it ends a wait
    bool woken_early = false;       // on_wake ran for the wait that just ended

    void notify() { notify_if(0); }

    // Wakes this waiter unless both it and the release name a ticket and
    // the tickets differ in the bits of `mask` (another process's release
    // reaches us with only the low 32 bits).
    void notify_if(std::int64_t next_ticket, std::uint64_t mask = ~std::uint64_t{0}) {
      std::unique_lock lock(mutex);
      if (next_ticket != 0 && ticket != 0 &&
          (static_cast<std::uint64_t>(ticket) & mask) != (static_cast<std::uint64_t>(next_ticket) & mask))
        return;
      notified = true;
      // Before the wait completes, under the mutex: the waiter cannot resume,
      // and change what the hook reads, until the hook has run. The attempt
      // the hook starts looks after this notification, so only a later one
      // may end the next wait: the next rearm() must not forget that one.
      // Not for a waiter whose io_context is stopped: it may never run again
      // to take what the attempt is granted.
      if (handler && on_wake && (context == nullptr || !context->stopped())) {
        on_wake();
        notified = false;
        woken_early = true;
      }
      complete(lock, {});
    }

    // Posted under the mutex: the context's shutdown (abandon) waits for
    // it, so the post never reaches a context being destroyed.
    void complete(std::unique_lock<std::mutex>&, boost::system::error_code result) {
      if (!handler) return;
      auto completion = std::move(*handler);
      handler.reset();
      // Destroyed, not only cancelled: a notifier may hold the last
      // reference to this waiter and destroy it after its context is gone,
      // and a timer must not outlive its context.
      timer.reset();
      asio::post(*executor, [completion = std::move(completion), result]() mutable {
        std::move(completion)(result);
      });
      // Only now: until it has left, the context's shutdown waits for this
      // mutex, so it cannot free the context under the post above.
      std::exchange(parked_in, nullptr)->leave(this);
    }

    void abandon() override {
      std::optional<Handler> dropped;
      {
        std::lock_guard lock(mutex);
        parked_in = nullptr;
        dropped = std::move(handler);
        handler.reset();
        timer.reset();  // the timer belongs to the context that is going away
        executor.reset();
        context = nullptr;
      }
      // `dropped` is destroyed here, outside the mutex: it hands the waiting
      // coroutine's frames to the context's queue.
    }

    void start(Handler completion, asio::any_io_executor target,
               std::chrono::steady_clock::time_point wake_at) {
      auto slot = asio::get_associated_cancellation_slot(completion);
      auto& parking = ParkedCompletions::of(target);
      std::unique_lock lock(mutex);
      if (notified) {
        lock.unlock();
        asio::post(target, [completion = std::move(completion)]() mutable {
          std::move(completion)(boost::system::error_code{});
        });
        return;
      }
      if (!parking.enter(this, weak_from_this())) return;  // the context has shut down: drop the handler
      if (slot.is_connected()) {
        slot.assign([weak = weak_from_this()](asio::cancellation_type) {
          if (auto self = weak.lock()) {
            std::unique_lock guard(self->mutex);
            self->complete(guard, asio::error::operation_aborted);
          }
        });
      }
      handler.emplace(std::move(completion));
      parked_in = &parking;
      context = io_context_of(target);
      executor = target;
      timer.emplace(target, wake_at);
      timer->async_wait([self = shared_from_this()](boost::system::error_code error) {
        if (error) return;  // cancelled because the wait completed another way
        std::unique_lock guard(self->mutex);
        self->complete(guard, {});
      });
    }
  };

 public:
  /// Interest in one key, held across a try-then-wait loop.
  class Subscription {
   public:
    Subscription(KeyedWaiters& registry, std::string key)
        : registry_(&registry), key_(std::move(key)), waiter_(std::make_shared<Waiter>()) {
      std::lock_guard lock(registry_->mutex_);
      registry_->waiters_[key_].push_back(waiter_);
    }

    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;

    ~Subscription() {
      std::lock_guard lock(registry_->mutex_);
      auto found = registry_->waiters_.find(key_);
      if (found == registry_->waiters_.end()) return;
      auto& list = found->second;
      list.erase(std::remove(list.begin(), list.end(), waiter_), list.end());
      if (list.empty()) registry_->waiters_.erase(found);
    }

    /// The waiter's queue ticket (0: none). A release that names the ticket
    /// next in line wakes only that waiter and those without a ticket.
    void set_ticket(std::int64_t ticket) {
      std::lock_guard lock(waiter_->mutex);
      waiter_->ticket = ticket;
    }

    /// `hook` runs on the notifier's thread each time a notification ends a
    /// wait (not a timeout or cancellation), before the waiter resumes: a
    /// backend can start the waiter's next attempt from there. It must not
    /// block or touch this subscription.
    void on_wake(std::function<void()> hook) {
      std::lock_guard lock(waiter_->mutex);
      waiter_->on_wake = std::move(hook);
    }

    /// Forgets earlier notifications; call before each attempt. After a
    /// wait that on_wake ended, the attempt already started then, and only
    /// notifications since it count: those are kept.
    void rearm() {
      std::lock_guard lock(waiter_->mutex);
      if (std::exchange(waiter_->woken_early, false)) return;
      waiter_->notified = false;
    }

    /// Returns when notified since the last rearm(), or at `wake_at`. Throws
    /// operation_aborted on per-operation cancellation.
    asio::awaitable<void> wait_until(std::chrono::steady_clock::time_point wake_at) {
      auto executor = co_await asio::this_coro::executor;
      // Built in a named local and awaited in its own statement: g++ 12
      // destroys temporaries of a co_await full-expression twice.
      auto operation = asio::async_initiate<decltype(asio::use_awaitable), void(boost::system::error_code)>(
          [waiter = waiter_, executor, wake_at](auto completion) {
            waiter->start(Handler(std::move(completion)), executor, wake_at);
          },
          asio::use_awaitable);
      co_await std::move(operation);
    }

   private:
    KeyedWaiters* registry_;
    std::string key_;
    std::shared_ptr<Waiter> waiter_;
  };

  Subscription subscribe(std::string key) { return Subscription(*this, std::move(key)); }

  /// Wakes every waiter on `key`; with `next_ticket`, only the waiter
  /// holding that ticket and the waiters holding none (the rest cannot be
  /// granted before the next in line, so waking them is wasted work).
  void notify(const std::string& key, std::int64_t next_ticket = 0) {
    std::vector<std::shared_ptr<Waiter>> found;
    {
      std::lock_guard lock(mutex_);
      if (auto listed = waiters_.find(key); listed != waiters_.end()) found = listed->second;
    }
    for (auto& waiter : found) waiter->notify_if(next_ticket);
  }

  /// As notify, for every key that `key_matches`, knowing only the low 32
  /// bits of the next ticket (0: unknown). Another process's release reaches
  /// us this way, as a key hash (SQLite's wake board).
  template <class Match>
  void notify_where(Match key_matches, std::uint32_t next_ticket_low) {
    for (auto& waiter : waiters_on(key_matches)) waiter->notify_if(next_ticket_low, 0xffff'ffffu);
  }

  /// Wakes every waiter on every key.
  void notify_all() {
    for (auto& waiter : waiters_on([](const std::string&) { return true; })) waiter->notify();
  }

 private:
  // The waiters of the matching keys, copied out: they are woken without
  // the registry's mutex, since a wake-up may destroy a waiting coroutine
  // (its context shutting down) whose subscription then takes that mutex.
  template <class Match>
  std::vector<std::shared_ptr<Waiter>> waiters_on(Match key_matches) {
    std::vector<std::shared_ptr<Waiter>> found;
    std::lock_guard lock(mutex_);
    for (auto& [key, list] : waiters_)
      if (key_matches(key)) found.insert(found.end(), list.begin(), list.end());
    return found;
  }

  std::mutex mutex_;
  std::unordered_map<std::string, std::vector<std::shared_ptr<Waiter>>> waiters_;
};

}  // namespace lockstore::detail
