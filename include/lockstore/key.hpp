// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Keys: what a lock is taken on. An AdvisoryKey is a validated name; a
// TenantId names the tenant an agent session belongs to, and
// AdvisoryKey::for_session is the one canonical (tenant, thread) -> key map.
#pragma once

#include "lockstore/error.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace lockstore {

/// The tenant a session belongs to. Must be non-empty and free of NUL bytes.
class TenantId {
 public:
  explicit TenantId(std::string id) : id_(std::move(id)) {
    if (id_.empty()) throw Error(errc::invalid_argument, "tenant id must not be empty");
    if (id_.find('\0') != std::string::npos)
      throw Error(errc::invalid_argument, "tenant id must not contain a NUL byte");
  }

  const std::string& str() const noexcept { return id_; }

  friend bool operator==(const TenantId&, const TenantId&) = default;

 private:
  std::string id_;
};

/// The name of a lock: 1 to 512 bytes, no NUL byte. Any other bytes are
/// allowed (backends store it as text or binary-safe strings).
class AdvisoryKey {
 public:
  static constexpr std::size_t max_size = 512;

  /// Throws errc::invalid_argument for an empty name, one over 512 bytes,
  /// or one containing a NUL byte.
  explicit AdvisoryKey(std::string name) : name_(std::move(name)) {
    if (name_.empty()) throw Error(errc::invalid_argument, "lock key must not be empty");
    if (name_.size() > max_size)
      throw Error(errc::invalid_argument,
                  fmt::format("lock key is {} bytes; the limit is {}", name_.size(), max_size));
    if (const auto nul = name_.find('\0'); nul != std::string::npos)
      throw Error(errc::invalid_argument,
                  fmt::format("lock key contains a NUL byte at offset {}", nul));
  }

  /// The key of one agent session: "session:<tenant length>:<tenant>:<thread>".
  /// The length prefix makes the map injective: the tenant is read back by
  /// its length, so separators inside either id cannot make two pairs
  /// collide. Throws errc::invalid_argument for an empty thread id or when
  /// the result would exceed 512 bytes.
  static AdvisoryKey for_session(const TenantId& tenant, std::string_view thread_id) {
    if (thread_id.empty()) throw Error(errc::invalid_argument, "session thread id must not be empty");
    auto name = fmt::format("session:{}:{}:{}", tenant.str().size(), tenant.str(), thread_id);
    if (name.size() > max_size)
      throw Error(errc::invalid_argument,
                  fmt::format("session key for a tenant id of {} bytes and a thread id of {} bytes "
                              "is {} bytes; the limit is {}",
                              tenant.str().size(), thread_id.size(), name.size(), max_size));
    return AdvisoryKey(std::move(name));
  }

  const std::string& str() const noexcept { return name_; }

 private:
  friend class LockGuard;
  // Only for an empty LockGuard (a failed operation's value): the one
  // AdvisoryKey with an empty name, as a moved-from key also is.
  AdvisoryKey() = default;

 public:

  /// 64-bit FNV-1a of the key's bytes (offset basis 0xcbf29ce484222325,
  /// prime 0x100000001b3). Stable across platforms, compilers and releases,
  /// so it may be stored or used as a server-side integer lock id.
  std::uint64_t hash64() const noexcept {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    for (const char c : name_) {
      hash ^= static_cast<unsigned char>(c);
      hash *= 0x100000001b3ULL;
    }
    return hash;
  }

  friend bool operator==(const AdvisoryKey&, const AdvisoryKey&) = default;

 private:
  std::string name_;
};

}  // namespace lockstore

template <>
struct std::hash<lockstore::AdvisoryKey> {
  std::size_t operator()(const lockstore::AdvisoryKey& key) const noexcept {
    return static_cast<std::size_t>(key.hash64());
  }
};

template <>
struct fmt::formatter<lockstore::AdvisoryKey> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const lockstore::AdvisoryKey& key, FormatContext& context) const {
    return fmt::formatter<std::string_view>::format(key.str(), context);
  }
};

template <>
struct fmt::formatter<lockstore::TenantId> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const lockstore::TenantId& tenant, FormatContext& context) const {
    return fmt::formatter<std::string_view>::format(tenant.str(), context);
  }
};
