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
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace lockstore {

/// A fresh ownership token: 128 random bits as 32 lower-case hex digits.
inline std::string random_token() {
  return fmt::format("{:016x}{:016x}", detail::ThreadRandom::next(), detail::ThreadRandom::next());
}

/// A fresh owner name for lock backends with owners: "<host>:<pid>:<random>",
/// readable in `list()` output and unique per call.
inline std::string random_owner() {
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  return fmt::format("{}:{}:{:08x}", host.data(), ::getpid(),
                     static_cast<std::uint32_t>(detail::ThreadRandom::next()));
}

class LockGuard {
 public:
  LockGuard(AdvisoryKey key, std::string token, std::uint64_t fence)
      : key_(std::move(key)), token_(std::move(token)), fence_(fence),
        acquired_at_(std::chrono::steady_clock::now()) {}

  LockGuard(LockGuard&& other) noexcept
      : key_(std::move(other.key_)), token_(std::move(other.token_)), fence_(other.fence_),
        acquired_at_(other.acquired_at_), released_(std::exchange(other.released_, true)) {}

  LockGuard& operator=(LockGuard&& other) noexcept {
    if (this != &other) {
      warn_if_unreleased();
      key_ = std::move(other.key_);
      token_ = std::move(other.token_);
      fence_ = other.fence_;
      acquired_at_ = other.acquired_at_;
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
  bool released_ = false;
};

}  // namespace lockstore
