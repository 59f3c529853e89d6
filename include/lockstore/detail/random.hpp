// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Randomness for tokens, owner names and jitter. Each thread keeps a 64-bit
// generator seeded from std::random_device; it reseeds after fork() (the pid
// changed), so a parent and its child never hand out the same tokens.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <random>

namespace lockstore::detail {

class ThreadRandom {
 public:
  static std::uint64_t next() {
    thread_local ThreadRandom random;
    if (random.pid_ != ::getpid()) random.reseed();
    return random.engine_();
  }

  /// A uniformly distributed value in [low, high].
  static std::int64_t between(std::int64_t low, std::int64_t high) {
    if (high <= low) return low;
    const auto span = static_cast<std::uint64_t>(high - low) + 1;
    return low + static_cast<std::int64_t>(next() % span);
  }

 private:
  ThreadRandom() { reseed(); }

  void reseed() {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(), device(), device(), device(), device()};
    engine_.seed(seed);
    pid_ = ::getpid();
  }

  std::mt19937_64 engine_;
  pid_t pid_ = 0;
};

}  // namespace lockstore::detail
