// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Owners: the identity under which the durable backends (SqliteLock,
// PostgresLock, RedisLock) hold leases, for release_all, take_over and
// list. One rule for what an owner may be, checked the same way by all.
#pragma once

#include "lockstore/detail/random.hpp"
#include "lockstore/error.hpp"
#include "lockstore/key.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lockstore {

/// A fresh owner name: "<host>:<pid>:<random>", readable in `list()` output
/// and unique per call.
inline std::string random_owner() {
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  return fmt::format("{}:{}:{:08x}", host.data(), ::getpid(),
                     static_cast<std::uint32_t>(detail::ThreadRandom::next()));
}

namespace detail {

/// Throws errc::invalid_argument, naming `backend`, unless `owner` is 1 to
/// 512 bytes without a NUL byte (the same bytes a key may have: every
/// backend stores both as text).
inline void validate_owner(std::string_view owner, std::string_view backend) {
  if (owner.empty() || owner.size() > AdvisoryKey::max_size)
    throw Error(errc::invalid_argument, fmt::format("{} owner must be 1 to {} bytes without NUL, got {} bytes",
                                                    backend, AdvisoryKey::max_size, owner.size()));
  if (const auto nul = owner.find('\0'); nul != std::string_view::npos)
    throw Error(errc::invalid_argument,
                fmt::format("{} owner contains a NUL byte at offset {}", backend, nul));
}

}  // namespace detail
}  // namespace lockstore
