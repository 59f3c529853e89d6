// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// How SQLite waiters learn of a release: the SQLite backend's wake-up
// strategy. A release in this process (on the connection thread) or one
// announced by another process (the wake file's watcher thread) wakes the
// key's waiters (KeyedWaiters, the plain in-process wake-ups every backend
// uses) and then queues, on the connection thread, the next attempt of each
// woken acquire() caller that is between a refusal and its next attempt.
// The statement then runs while the caller's executor wakes up, instead of
// after that wake-up (a thread wake-up costs as much as the statement).
#pragma once

#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/detail/sqlite_wake.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
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

/// The io_context behind `executor`, when it is one (directly or through a
/// strand); null otherwise.
inline const asio::io_context* io_context_of(const asio::any_io_executor& executor) {
  if (const auto* plain = executor.target<asio::io_context::executor_type>()) return &plain->context();
  if (const auto* stranded = executor.target<asio::strand<asio::io_context::executor_type>>())
    return &stranded->get_inner_executor().context();
  // The strand the completion-token overloads run an operation on.
  if (const auto* wrapped = executor.target<asio::strand<asio::any_io_executor>>())
    return io_context_of(wrapped->get_inner_executor());
  return nullptr;
}

class SqliteWakeups {
 public:
  /// One acquire() caller's request to have its next attempt started by the
  /// release that wakes it. A notifier uses it only while it is registered
  /// and only under the registry's mutex, which its destructor takes to
  /// unregister it: once it is destroyed, no notifier runs `start` or reads
  /// anything `start` refers to. Declare it after what `start` uses.
  class EarlyStart {
   public:
    /// `start(ticket)` queues the caller's next attempt (ticket 0: none yet);
    /// it runs on a notifier's thread and must not block. `subscription`
    /// (the caller's) must outlive this object. `context`: the caller's
    /// io_context, when it is one. A caller whose io_context is stopped, or
    /// whose wait was cancelled or abandoned at shutdown, gets no early
    /// attempt: it may never run again to take what the attempt is granted.
    EarlyStart(SqliteWakeups& wakeups, std::string key, const KeyedWaiters::Subscription& subscription,
               const asio::io_context* context, std::function<void(std::int64_t)> start)
        : wakeups_(wakeups), key_(std::move(key)), subscription_(subscription), context_(context),
          start_(std::move(start)) {
      std::lock_guard lock(wakeups_.mutex_);
      wakeups_.early_[key_].push_back(this);
    }
    EarlyStart(const EarlyStart&) = delete;
    EarlyStart& operator=(const EarlyStart&) = delete;

    ~EarlyStart() {
      std::lock_guard lock(wakeups_.mutex_);
      auto found = wakeups_.early_.find(key_);
      if (found == wakeups_.early_.end()) return;
      auto& list = found->second;
      list.erase(std::remove(list.begin(), list.end(), this), list.end());
      if (list.empty()) wakeups_.early_.erase(found);
    }

    /// After a refusal: the next release that wakes this caller starts its
    /// next attempt, with `ticket` (0: none). `accounted`: the caller's
    /// notification count that the refused attempt already saw; only a
    /// later notification starts an attempt (one counted before, whose
    /// notifier was slow to get here, would only repeat the refusal).
    void arm(std::int64_t ticket, std::uint64_t accounted) {
      std::lock_guard lock(wakeups_.mutex_);
      armed_ = true;
      ticket_ = ticket;
      accounted_ = accounted;
      started_at_.reset();
    }

    /// Before an attempt of the caller's own: disarms. Returns the caller's
    /// notification count at the moment a release started the attempt (the
    /// notifications that attempt already saw), or std::nullopt when none
    /// did and the caller starts it itself.
    std::optional<std::uint64_t> take() {
      std::lock_guard lock(wakeups_.mutex_);
      armed_ = false;
      return std::exchange(started_at_, std::nullopt);
    }

   private:
    friend class SqliteWakeups;

    // Under the registry's mutex.
    void fire(std::int64_t next_ticket, std::uint64_t mask) {
      if (!armed_ || !KeyedWaiters::wakes(ticket_, next_ticket, mask)) return;
      if (context_ != nullptr && context_->stopped()) return;
      // Read after the notification that woke the caller was counted: that
      // one is accounted for by this attempt, later ones are not.
      const auto seen = subscription_.notifications();
      if (seen <= accounted_ || subscription_.leaving()) return;
      armed_ = false;
      try {
        start_(ticket_);
        started_at_ = seen;
      } catch (...) {
        // Nothing was queued: the caller starts its attempt when it resumes.
      }
    }

    SqliteWakeups& wakeups_;
    std::string key_;
    const KeyedWaiters::Subscription& subscription_;
    const asio::io_context* context_;
    std::function<void(std::int64_t)> start_;
    bool armed_ = false;
    std::int64_t ticket_ = 0;
    std::uint64_t accounted_ = 0;
    std::optional<std::uint64_t> started_at_;
  };

  SqliteWakeups() = default;
  SqliteWakeups(const SqliteWakeups&) = delete;
  SqliteWakeups& operator=(const SqliteWakeups&) = delete;

  KeyedWaiters& waiters() noexcept { return waiters_; }

  /// Sets the wake file (once, before any waiter; file databases opened
  /// for writing only).
  void attach(std::unique_ptr<WakeBoard> board) { board_ = std::move(board); }

  /// The wake file, or null. Lives as long as the connection thread: jobs
  /// may keep the pointer.
  WakeBoard* board() const noexcept { return board_.get(); }

  /// Starts (once) the thread that turns other processes' announcements
  /// into wake-ups here. False without a wake file: waiters must then poll.
  /// Sets `*started` when this call started it.
  bool watch(bool* started = nullptr) { return board_ && board_->watch(*this, started); }

  /// A release of `key`: wakes its waiters (with `next_ticket`, only that
  /// ticket's and those without one) and starts their early attempts.
  void notify(const std::string& key, std::int64_t next_ticket = 0) {
    waiters_.notify(key, next_ticket);
    std::lock_guard lock(mutex_);
    if (auto found = early_.find(key); found != early_.end())
      for (auto* early : found->second) early->fire(next_ticket, ~std::uint64_t{0});
  }

  /// Another process's release, known by key hash and the low 32 bits of
  /// the next ticket (0: unknown).
  template <class Match>
  void notify_where(Match key_matches, std::uint32_t next_ticket_low) {
    waiters_.notify_where(key_matches, next_ticket_low);
    std::lock_guard lock(mutex_);
    for (auto& [key, list] : early_)
      if (key_matches(key))
        for (auto* early : list) early->fire(next_ticket_low, 0xffff'ffffu);
  }

  /// Wakes every waiter on every key (announcements were lost).
  void notify_all() {
    waiters_.notify_all();
    std::lock_guard lock(mutex_);
    for (auto& [key, list] : early_)
      for (auto* early : list) early->fire(0, ~std::uint64_t{0});
  }

 private:
  KeyedWaiters waiters_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::vector<EarlyStart*>> early_;
  std::unique_ptr<WakeBoard> board_;  // last: its watcher thread, which notifies through this object, stops first
};

}  // namespace lockstore::detail
