// MemoryLock: leases in this process's memory. Every acquisition is its own
// holder (there are no owners), so a second try_acquire of a held key is
// refused even through the same MemoryLock. Copies share one lease table.
// Safe from any thread and any number of io_contexts; waiters are woken by
// release at once and by a timer at the holder's expiry, never by polling.
#pragma once

#include "lockstore/detail/acquire_loop.hpp"
#include "lockstore/detail/durations.hpp"
#include "lockstore/detail/keyed_waiters.hpp"
#include "lockstore/distributed_lock.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace lockstore {

class MemoryLock {
  using Clock = std::chrono::steady_clock;

  struct Lease {
    std::string token;
    std::uint64_t fence;
    Clock::time_point expires_at;
  };

  struct State {
    std::mutex mutex;
    std::unordered_map<std::string, Lease> leases;
    // One counter for all keys: per key the fences then strictly increase
    // too, and no per-key history has to be kept after release.
    std::uint64_t last_fence = 0;
    detail::KeyedWaiters waiters;
  };

 public:
  MemoryLock() = default;

  /// One attempt; std::nullopt while a live lease holds the key.
  /// Throws errc::invalid_argument for a non-positive or absurd ttl.
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "MemoryLock::try_acquire");
    co_return grant(key, ttl).guard;
  }

  /// Waits until acquired. Throws errc::timeout once `deadline` elapses and
  /// operation_aborted on per-operation cancellation (holding nothing then).
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline) {
    detail::validate_ttl(ttl, "MemoryLock::acquire");
    // Made in its own statement, then awaited: see sqlite_lock.hpp on g++ 12.
    auto acquiring = detail::acquire_loop(
        state_->waiters, key, deadline,
        [&]() -> asio::awaitable<detail::Attempt> { co_return grant(key, ttl); },
        [this](LockGuard guard) { return release(std::move(guard)); });
    co_return co_await std::move(acquiring);
  }

  /// New expiry = now + ttl while the guard's lease is live; false otherwise.
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl) {
    detail::validate_ttl(ttl, "MemoryLock::extend");
    std::lock_guard lock(state_->mutex);
    const auto now = Clock::now();
    auto found = state_->leases.find(guard.key().str());
    if (found == state_->leases.end() || found->second.token != guard.token() ||
        found->second.expires_at <= now)
      co_return false;
    found->second.expires_at = now + ttl;
    co_return true;
  }

  /// Removes the lease if the guard's token still holds it and wakes waiters.
  asio::awaitable<void> release(LockGuard guard) {
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

  /// Number of keys with a live lease (expired entries are not counted).
  std::size_t held_count() const {
    std::lock_guard lock(state_->mutex);
    const auto now = Clock::now();
    std::size_t live = 0;
    for (const auto& [key, lease] : state_->leases) live += lease.expires_at > now ? 1 : 0;
    return live;
  }

 private:
  detail::Attempt grant(const AdvisoryKey& key, std::chrono::milliseconds ttl) {
    std::lock_guard lock(state_->mutex);
    const auto now = Clock::now();
    auto [slot, inserted] = state_->leases.try_emplace(key.str());
    auto& lease = slot->second;
    if (!inserted && lease.expires_at > now) return {.guard = std::nullopt, .retry_at = lease.expires_at};
    lease = Lease{random_token(), ++state_->last_fence, now + ttl};
    return {.guard = LockGuard(key, lease.token, lease.fence)};
  }

  std::shared_ptr<State> state_ = std::make_shared<State>();
};

static_assert(DistributedLock<MemoryLock>);

}  // namespace lockstore
