// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Checks and arithmetic on the durations callers pass in, shared by every
// backend so that a bad TTL gets the same error everywhere.
#pragma once

#include "lockstore/error.hpp"

#include <fmt/format.h>

#include <chrono>

namespace lockstore::detail {

/// The longest lease any backend accepts: 366 days. Longer TTLs are refused
/// because a lease that outlives its holder by a year is a lease held forever.
inline constexpr std::chrono::milliseconds max_ttl = std::chrono::hours(24 * 366);

inline void validate_ttl(std::chrono::milliseconds ttl, std::string_view operation) {
  if (ttl <= std::chrono::milliseconds::zero())
    throw Error(errc::invalid_argument,
                fmt::format("{}: ttl must be positive, got {} ms", operation, ttl.count()));
  if (ttl > max_ttl)
    throw Error(errc::invalid_argument, fmt::format("{}: ttl of {} ms exceeds the limit of {} ms",
                                                    operation, ttl.count(), max_ttl.count()));
}

/// now + timeout without overflow: a huge timeout means "no deadline".
template <class Clock>
typename Clock::time_point saturating_deadline(typename Clock::time_point now,
                                               std::chrono::milliseconds timeout) {
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now);
  if (timeout >= room) return Clock::time_point::max();
  if (timeout <= std::chrono::milliseconds::zero()) return now;
  return now + timeout;
}

/// Milliseconds since the Unix epoch on the system (wall) clock.
inline std::int64_t wall_clock_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace lockstore::detail
