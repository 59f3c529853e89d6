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
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lockstore::detail {

namespace asio = boost::asio;

class KeyedWaiters {
  using Handler = asio::any_completion_handler<void(boost::system::error_code)>;

  // One waiting coroutine. Its own mutex orders notify, timer expiry,
  // cancellation and its context's shutdown: whichever takes the stored
  // handler first completes (or, at shutdown, drops) it.
  struct Waiter final : Parked, std::enable_shared_from_this<Waiter> {
    std::mutex mutex;
    std::uint64_t notifications = 0;  // notifications received, ever
    std::uint64_t seen = 0;           // those the owner has accounted for (rearm)
    bool leaving = false;             // a wait ended by cancellation or its context's shutdown
    std::int64_t ticket = 0;  // the waiter's place in a backend's queue; 0: none
    std::optional<Handler> handler;
    std::optional<asio::any_io_executor> executor;
    std::optional<asio::steady_timer> timer;
    ParkedCompletions* parked_in = nullptr;  // while handler is set

    void notify() { notify_if(0); }

    void notify_if(std::int64_t next_ticket, std::uint64_t mask = ~std::uint64_t{0}) {
      std::unique_lock lock(mutex);
      if (!wakes(ticket, next_ticket, mask)) return;
      ++notifications;
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
        leaving = true;
        parked_in = nullptr;
        dropped = std::move(handler);
        handler.reset();
        timer.reset();  // the timer belongs to the context that is going away
        executor.reset();
      }
      // `dropped` is destroyed here, outside the mutex: it hands the waiting
      // coroutine's frames to the context's queue.
    }

    void start(Handler completion, asio::any_io_executor target,
               std::chrono::steady_clock::time_point wake_at) {
      auto slot = asio::get_associated_cancellation_slot(completion);
      auto& parking = ParkedCompletions::of(target);
      std::unique_lock lock(mutex);
      if (notifications > seen) {
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
            self->leaving = true;
            self->complete(guard, asio::error::operation_aborted);
          }
        });
      }
      handler.emplace(std::move(completion));
      parked_in = &parking;
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

    /// How many notifications this subscription has received.
    std::uint64_t notifications() const {
      std::lock_guard lock(waiter_->mutex);
      return waiter_->notifications;
    }

    /// Whether a wait of this subscription ended by cancellation or by its
    /// execution context's shutdown: its owner is giving up.
    bool leaving() const {
      std::lock_guard lock(waiter_->mutex);
      return waiter_->leaving;
    }

    /// Forgets the first `count` notifications (see notifications()): a
    /// wait returns at once only for a later one. Take the count before an
    /// attempt, and rearm with it after: a release during the attempt then
    /// still ends the next wait.
    void rearm(std::uint64_t count) {
      std::lock_guard lock(waiter_->mutex);
      waiter_->seen = std::max(waiter_->seen, count);
    }

    /// Returns when notified beyond what rearm() forgot, or at `wake_at`. Throws
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

  /// Whether a release naming `next_ticket` wakes a waiter holding `ticket`:
  /// yes unless both name one and they differ in the bits of `mask` (another
  /// process's release reaches us with only the low 32 bits).
  static bool wakes(std::int64_t ticket, std::int64_t next_ticket, std::uint64_t mask) noexcept {
    return next_ticket == 0 || ticket == 0 ||
           (static_cast<std::uint64_t>(ticket) & mask) == (static_cast<std::uint64_t>(next_ticket) & mask);
  }

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
