// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// MemoryLock's definitions (see memory.hpp; detail/config.hpp for the
// separately compiled mode).
#pragma once

#include "lockstore/memory.hpp"

#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/keyed_waiters.hpp"

#include <algorithm>
#include <deque>
#include <mutex>
#include <unordered_map>

namespace lockstore {

struct MemoryLock::Lease {
  std::string token;
  std::uint64_t fence;
  Clock::time_point expires_at;
  std::chrono::system_clock::time_point acquired_at;  // for list()
};

struct MemoryLock::State {
  std::mutex mutex;
  std::unordered_map<std::string, Lease> leases;
  // One counter for all keys: per key the fences then strictly increase
  // too, and no per-key history has to be kept after release.
  std::uint64_t last_fence = 0;
  // acquire() callers refused so far, per key, first come first served.
  std::unordered_map<std::string, std::deque<std::uint64_t>> queues;
  std::uint64_t last_ticket = 0;
  detail::KeyedWaiters waiters;
};

struct MemoryLock::LeaveQueue {
  std::shared_ptr<State> state;
  std::string key;
  void operator()(std::uint64_t ticket) const {
    {
      std::lock_guard lock(state->mutex);
      if (auto found = state->queues.find(key); found != state->queues.end()) {
        auto& queue = found->second;
        queue.erase(std::remove(queue.begin(), queue.end(), ticket), queue.end());
        if (queue.empty()) state->queues.erase(found);
      }
    }
    state->waiters.notify(key);  // the next in line may go now
  }
};

LOCKSTORE_DECL MemoryLock::MemoryLock() : state_(std::make_shared<State>()) {}

LOCKSTORE_DECL auto MemoryLock::try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl)
    -> asio::awaitable<std::optional<LockGuard>> {
  detail::validate_ttl(ttl, "MemoryLock::try_acquire");
  co_return grant(key, ttl).guard;
}

LOCKSTORE_DECL auto MemoryLock::acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                   std::chrono::milliseconds deadline) -> asio::awaitable<LockGuard> {
  detail::validate_ttl(ttl, "MemoryLock::acquire");
  // Made in its own statement, then awaited: see sqlite_lock.hpp on g++ 12.
  LeaveQueue leave{state_, key.str()};
  QueueSeat seat(std::move(leave));
  auto acquiring = detail::acquire_loop(
      state_->waiters, key, deadline,
      [&]() -> asio::awaitable<detail::Attempt> { co_return grant(key, ttl, &seat); },
      [this](LockGuard guard) { return release(std::move(guard)); });
  co_return co_await std::move(acquiring);
}

LOCKSTORE_DECL auto MemoryLock::extend(LockGuard& guard, std::chrono::milliseconds ttl) -> asio::awaitable<bool> {
  detail::validate_ttl(ttl, "MemoryLock::extend");
  std::lock_guard lock(state_->mutex);
  const auto now = Clock::now();
  auto found = state_->leases.find(guard.key().str());
  if (found == state_->leases.end() || found->second.token != guard.token() ||
      found->second.expires_at <= now)
    co_return false;
  found->second.expires_at = now + ttl;
  guard.confirm_until(found->second.expires_at);
  co_return true;
}

LOCKSTORE_DECL auto MemoryLock::release(LockGuard guard) -> asio::awaitable<void> {
  bool removed = false;
  {
    std::lock_guard lock(state_->mutex);
    auto found = state_->leases.find(guard.key().str());
    if (found != state_->leases.end() && found->second.token == guard.token()) {
      state_->leases.erase(found);
      removed = true;
    }
  }
  guard.mark_released();
  if (removed) state_->waiters.notify(guard.key().str());
  co_return;
}

LOCKSTORE_DECL auto MemoryLock::list() -> asio::awaitable<std::vector<LockInfo>> {
  std::vector<LockInfo> leases;
  {
    std::lock_guard lock(state_->mutex);
    const auto now = Clock::now();
    const auto wall_now = std::chrono::system_clock::now();
    for (const auto& [key, lease] : state_->leases)
      if (lease.expires_at > now)
        leases.push_back(LockInfo{AdvisoryKey(key), std::string(), lease.fence, lease.acquired_at,
                                  wall_now + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                 lease.expires_at - now)});
  }
  std::sort(leases.begin(), leases.end(),
            [](const LockInfo& a, const LockInfo& b) { return a.key.str() < b.key.str(); });
  co_return leases;
}

LOCKSTORE_DECL auto MemoryLock::force_release(AdvisoryKey key) -> asio::awaitable<std::optional<LockInfo>> {
  std::optional<LockInfo> cleared;
  {
    std::lock_guard lock(state_->mutex);
    const auto now = Clock::now();
    auto found = state_->leases.find(key.str());
    if (found == state_->leases.end()) co_return std::nullopt;
    if (found->second.expires_at > now)
      cleared = LockInfo{key, std::string(), found->second.fence, found->second.acquired_at,
                         std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                                found->second.expires_at - now)};
    state_->leases.erase(found);
  }
  state_->waiters.notify(key.str());
  co_return cleared;
}

LOCKSTORE_DECL auto MemoryLock::release_all() -> asio::awaitable<std::size_t> {
  std::vector<std::string> keys;
  std::size_t live = 0;
  {
    std::lock_guard lock(state_->mutex);
    const auto now = Clock::now();
    for (const auto& [key, lease] : state_->leases) {
      keys.push_back(key);
      live += lease.expires_at > now ? 1 : 0;
    }
    state_->leases.clear();
  }
  for (const auto& key : keys) state_->waiters.notify(key);
  co_return live;
}

LOCKSTORE_DECL auto MemoryLock::held_count() const -> std::size_t {
  std::lock_guard lock(state_->mutex);
  const auto now = Clock::now();
  std::size_t live = 0;
  for (const auto& [key, lease] : state_->leases) live += lease.expires_at > now ? 1 : 0;
  return live;
}

LOCKSTORE_DECL auto MemoryLock::grant(const AdvisoryKey& key, std::chrono::milliseconds ttl, QueueSeat* seat)
    -> detail::Attempt {
  std::uint64_t next_in_line = 0;
  auto attempt = grant_locked(key, ttl, seat, next_in_line);
  if (next_in_line != 0) state_->waiters.notify(key.str(), static_cast<std::int64_t>(next_in_line));
  return attempt;
}

LOCKSTORE_DECL auto MemoryLock::grant_locked(const AdvisoryKey& key, std::chrono::milliseconds ttl, QueueSeat* seat,
                             std::uint64_t& next_in_line) -> detail::Attempt {
  std::lock_guard lock(state_->mutex);
  const auto now = Clock::now();
  const auto take_ticket = [&] {
    if (seat != nullptr && !seat->ticket) {
      seat->ticket = ++state_->last_ticket;
      state_->queues[key.str()].push_back(*seat->ticket);
    }
  };
  const auto my_ticket = [&] { return static_cast<std::int64_t>(seat != nullptr ? seat->ticket.value_or(0) : 0); };
  auto held = state_->leases.find(key.str());
  if (held != state_->leases.end() && held->second.expires_at > now) {
    take_ticket();
    return {.guard = std::nullopt, .retry_at = held->second.expires_at, .ticket = my_ticket(), .ticket_expires = false};
  }
  if (seat != nullptr) {
    auto queue = state_->queues.find(key.str());
    if (queue != state_->queues.end() && (!seat->ticket || queue->second.front() != *seat->ticket)) {
      take_ticket();
      // The head goes first; its grant or leaving wakes us (the ticket
      // lives as long as this waiter: no refreshing).
      return {.guard = std::nullopt, .ticket = my_ticket(), .ticket_expires = false};
    }
    if (seat->ticket) {
      queue->second.pop_front();
      if (queue->second.empty()) state_->queues.erase(queue);
      else next_in_line = queue->second.front();
      seat->ticket.reset();
    }
  }
  auto& lease = state_->leases[key.str()];
  lease = Lease{random_token(), ++state_->last_fence, now + ttl, std::chrono::system_clock::now()};
  return {.guard = LockGuard(key, lease.token, lease.fence, lease.expires_at)};
}

}  // namespace lockstore
