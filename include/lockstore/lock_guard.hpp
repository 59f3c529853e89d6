// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// LockGuard: the proof that its holder has exclusive access to a key. It
// carries the key, the per-acquire ownership token and the fencing token.
// Releasing goes through the lock (`co_await lock.release(std::move(g))`);
// a guard dropped without release logs one warning and the lease then lives
// until its TTL runs out. The destructor never throws, blocks or does I/O.
#pragma once

#include "lockstore/detail/random.hpp"
#include "lockstore/key.hpp"
#include "lockstore/log.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace lockstore {

/// A fresh ownership token: 128 random bits as 32 lower-case hex digits.
inline std::string random_token() {
  return fmt::format("{:016x}{:016x}", detail::ThreadRandom::next(), detail::ThreadRandom::next());
}

class LockGuard {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  /// For backends: a guard whose lease ends at `valid_until` at the latest,
  /// by the holder's steady clock (the time the granting request was sent,
  /// plus the TTL). Without it the end is unknown (TimePoint::max()):
  /// with_session_lock then confirms the lease with an extend at once.
  LockGuard(AdvisoryKey key, std::string token, std::uint64_t fence, TimePoint valid_until = TimePoint::max())
      : key_(std::move(key)), token_(std::move(token)), fence_(fence),
        acquired_at_(std::chrono::steady_clock::now()), valid_until_(valid_until) {}

  /// An empty guard: it holds nothing (released() is true, the key and token
  /// are empty, the fence is 0). It is what an operation completed through
  /// a non-throwing completion token gives with an error code.
  LockGuard() noexcept : fence_(0), acquired_at_(), valid_until_(), released_(true) {}

  LockGuard(LockGuard&& other) noexcept
      : key_(std::move(other.key_)), token_(std::move(other.token_)), fence_(other.fence_),
        acquired_at_(other.acquired_at_), valid_until_(other.valid_until_),
        released_(std::exchange(other.released_, true)) {}

  LockGuard& operator=(LockGuard&& other) noexcept {
    if (this != &other) {
      warn_if_unreleased();
      key_ = std::move(other.key_);
      token_ = std::move(other.token_);
      fence_ = other.fence_;
      acquired_at_ = other.acquired_at_;
      valid_until_ = other.valid_until_;
      released_ = std::exchange(other.released_, true);
    }
    return *this;
  }

  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

  ~LockGuard() { warn_if_unreleased(); }

  const AdvisoryKey& key() const noexcept { return key_; }
  const std::string& token() const noexcept { return token_; }
  std::uint64_t fence() const noexcept { return fence_; }

  /// Time since the acquire that produced this guard (steady clock).
  std::chrono::steady_clock::duration held_for() const noexcept {
    return std::chrono::steady_clock::now() - acquired_at_;
  }

  /// When the holder must assume its lease has ended: the steady-clock time
  /// at which the granting (or last confirmed extending) request was sent,
  /// plus its TTL. The lease may end earlier only if the backend's clock runs
  /// faster than this machine's (README, "Guarantees"); check it before a
  /// side effect that must not happen without the lease.
  /// TimePoint::max() when the backend did not say.
  TimePoint valid_until() const noexcept { return valid_until_; }

  /// For backends: after an extend that returned true, the new end (the
  /// time that extend's request was sent, plus its TTL; earlier than before
  /// when the new TTL is shorter, as the lease's own expiry is).
  void confirm_until(TimePoint valid_until) noexcept { valid_until_ = valid_until; }

  bool released() const noexcept { return released_; }

  /// Records that the lease is gone (released or known lost), which silences
  /// the destructor's warning. Backends call it from release().
  void mark_released() noexcept { released_ = true; }

 private:
  void warn_if_unreleased() noexcept {
    if (released_) return;
    released_ = true;
    try {
      const auto held = std::chrono::duration_cast<std::chrono::milliseconds>(held_for());
      detail::log(LogLevel::warning,
                  fmt::format("lock guard for key '{}' (fence {}) held for {} ms was dropped "
                              "without release; lock will expire by TTL only",
                              key_.str(), fence_, held.count()));
    } catch (...) {
    }
  }

  AdvisoryKey key_;
  std::string token_;
  std::uint64_t fence_;
  std::chrono::steady_clock::time_point acquired_at_;
  TimePoint valid_until_;
  bool released_ = false;
};

}  // namespace lockstore
