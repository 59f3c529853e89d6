// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// What the copies of one SqliteDatabase share: the connection thread, the
// wake-ups of its waiters, and the tokens of leases it granted.
#pragma once

#include "lockstore/detail/sqlite_wakeups.hpp"
#include "lockstore/detail/sqlite_worker.hpp"
#include "lockstore/sqlite_options.hpp"

#include <filesystem>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>

namespace lockstore::detail {

/// Tokens of leases granted through this handle and not yet released:
/// a waiter whose holder is local needs no polling, release wakes it.
class LocalTokens {
 public:
  void insert(std::string token) {
    std::lock_guard lock(mutex_);
    tokens_.insert(std::move(token));
  }
  void erase(const std::string& token) {
    std::lock_guard lock(mutex_);
    tokens_.erase(token);
  }
  bool contains(const std::string& token) const {
    std::lock_guard lock(mutex_);
    return tokens_.contains(token);
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_set<std::string> tokens_;
};

struct SqliteShared {
  SqliteShared(std::filesystem::path p, SqliteOptions o, bool ro, detail::SqliteWorker::Opener opener)
      : path(std::move(p)), options(o), read_only(ro), worker(std::move(opener), o.completion_spin) {}

  std::filesystem::path path;
  SqliteOptions options;
  bool read_only;
  mutable detail::SqliteWakeups wakeups;  // its wake file: file databases opened for writing; set once by open()
  mutable LocalTokens local_tokens;
  detail::SqliteWorker worker;  // last: destroyed first, while the rest still exists
};

}  // namespace lockstore::detail
