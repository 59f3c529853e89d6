// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// MemoryLock: leases in this process's memory. Every acquisition is its own
// holder (there are no owners), so a second try_acquire of a held key is
// refused even through the same MemoryLock. Copies share one lease table.
// Safe from any thread and any number of io_contexts; waiters are woken by
// release at once and by a timer at the holder's expiry, never by polling.
#pragma once

#include "lockstore/detail/completion.hpp"
#include "lockstore/detail/config.hpp"
#include "lockstore/detail/queue_seat.hpp"
#include "lockstore/distributed_lock.hpp"
#include "lockstore/lock_info.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstore {

namespace detail {
struct Attempt;
}  // namespace detail

class MemoryLock : public detail::CompletionTokenOverloads<MemoryLock> {
  using Clock = std::chrono::steady_clock;

  struct Lease;

  struct State;

  // An acquire() caller's place in its key's queue; leaving it (given up,
  // cancelled, or granted) lets the next one in.
  // Leaving the queue: drop the ticket and wake the next in line.
  struct LeaveQueue;
  using QueueSeat = detail::QueueSeat<std::uint64_t, LeaveQueue>;

 public:
  // Each operation below also takes a completion token as its last argument
  // (detail/completion.hpp): `void(error_code, T)`, `void(error_code)` for
  // release; without one it is the coroutine, as documented here.
  using detail::CompletionTokenOverloads<MemoryLock>::try_acquire;
  using detail::CompletionTokenOverloads<MemoryLock>::acquire;
  using detail::CompletionTokenOverloads<MemoryLock>::extend;
  using detail::CompletionTokenOverloads<MemoryLock>::release;
  using detail::CompletionTokenOverloads<MemoryLock>::list;
  using detail::CompletionTokenOverloads<MemoryLock>::force_release;
  using detail::CompletionTokenOverloads<MemoryLock>::release_all;

  MemoryLock();

  /// One attempt; std::nullopt while a live lease holds the key.
  /// Throws errc::invalid_argument for a non-positive or absurd ttl.
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl);

  /// Waits until acquired. Throws errc::timeout once `deadline` elapses and
  /// operation_aborted on per-operation cancellation (holding nothing then).
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl,
                                     std::chrono::milliseconds deadline);

  /// New expiry = now + ttl while the guard's lease is live (and the guard's
  /// valid_until() with it); false otherwise.
  asio::awaitable<bool> extend(LockGuard& guard, std::chrono::milliseconds ttl);

  /// Removes the lease if the guard's token still holds it and wakes waiters.
  asio::awaitable<void> release(LockGuard guard);

  /// The live leases, ordered by key. The owner is empty: a MemoryLock has
  /// none. Times are on the system clock.
  asio::awaitable<std::vector<LockInfo>> list();

  /// For operators: clears whatever lease holds `key` and wakes its waiters.
  /// Returns the lease it cleared, std::nullopt when none was live. The old
  /// holder's extend and release then fail or do nothing; a later holder
  /// gets a larger fence.
  asio::awaitable<std::optional<LockInfo>> force_release(AdvisoryKey key);

  /// Removes every lease of this MemoryLock and its copies (they are its
  /// only holders); returns how many were still live.
  asio::awaitable<std::size_t> release_all();

  /// Number of keys with a live lease (expired entries are not counted).
  std::size_t held_count() const;

 private:
  // try_acquire (no seat) takes a free key; acquire() takes it only when no
  // earlier acquire() caller is still waiting for it. A caller behind the
  // head of the queue sleeps until woken, so when the head is granted the
  // new head is woken to learn the new lease's expiry: it must look again
  // then even if that holder never releases (a lease abandoned mid-hold;
  // found by tests/torture, where waiters otherwise sat out their deadline).
  detail::Attempt grant(const AdvisoryKey& key, std::chrono::milliseconds ttl, QueueSeat* seat = nullptr);

  detail::Attempt grant_locked(const AdvisoryKey& key, std::chrono::milliseconds ttl, QueueSeat* seat,
                               std::uint64_t& next_in_line);

  std::shared_ptr<State> state_;
};

static_assert(AdministrableLock<MemoryLock>);

}  // namespace lockstore

#ifndef LOCKSTORE_SEPARATE_COMPILATION
#include "lockstore/impl/memory.ipp"
#endif
