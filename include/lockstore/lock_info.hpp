// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// LockInfo: one live lease as an operator sees it (`list()`,
// `force_release()` of the SQLite, PostgreSQL and Redis backends).
#pragma once

#include "lockstore/key.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace lockstore {

/// One live lease as `list()` reports it. Times are on the system clock (on
/// PostgreSQL and Redis, the server's clock).
struct LockInfo {
  AdvisoryKey key;
  std::string owner;
  std::uint64_t fence;
  std::chrono::system_clock::time_point acquired_at;
  std::chrono::system_clock::time_point expires_at;
};

}  // namespace lockstore
