// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The DistributedLock concept: what every backend (and a user's own) offers,
// and what with_session_lock needs. See README "Guarantees" for the promises
// each implementation keeps beyond the signatures.
#pragma once

#include "lockstore/lock_guard.hpp"
#include "lockstore/lock_info.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <optional>
#include <vector>

namespace lockstore {

namespace asio = boost::asio;

/// try_acquire: one attempt; std::nullopt while another owner holds a live lease.
/// acquire: waits until acquired; throws errc::timeout once `deadline` (relative
///   to the call) elapses; per-operation cancellation throws
///   asio::error::operation_aborted and leaves nothing held.
/// extend: new expiry = now + ttl while the guard's token holds a live lease;
///   false once it was lost or expired.
/// release: removes the lease only if the guard's token holds it; marks the
///   guard released; a no-op when already lost.
template <class L>
concept DistributedLock = requires(L& lock, const AdvisoryKey& key, std::chrono::milliseconds ttl,
                                   std::chrono::milliseconds deadline, LockGuard& guard) {
  { lock.try_acquire(key, ttl) } -> std::same_as<asio::awaitable<std::optional<LockGuard>>>;
  { lock.acquire(key, ttl, deadline) } -> std::same_as<asio::awaitable<LockGuard>>;
  { lock.extend(guard, ttl) } -> std::same_as<asio::awaitable<bool>>;
  { lock.release(std::move(guard)) } -> std::same_as<asio::awaitable<void>>;
};

/// What an operator needs on top (all four backends have it): list the live
/// leases, clear one whoever holds it, and clear every lease of this lock's
/// owner (for MemoryLock, every lease it and its copies hold).
template <class L>
concept AdministrableLock = DistributedLock<L> && requires(L& lock, const AdvisoryKey& key) {
  { lock.list() } -> std::same_as<asio::awaitable<std::vector<LockInfo>>>;
  { lock.force_release(key) } -> std::same_as<asio::awaitable<std::optional<LockInfo>>>;
  { lock.release_all() } -> std::same_as<asio::awaitable<std::size_t>>;
};

}  // namespace lockstore
