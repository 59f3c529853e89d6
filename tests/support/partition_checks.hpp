// Partition checks shared by the PostgreSQL and Redis tests: a holder that
// reaches its server through a PartitionProxy is cut off while it holds a
// lease, and a client with a direct connection waits for the key. The holder
// must stop (its with_session_lock body cancelled; its `lockstore run`
// command sent SIGTERM) before the direct client is granted the key.
#pragma once

#include "support/helpers.hpp"
#include "support/partition_proxy.hpp"

#include <catch2/catch.hpp>
#include <lockstore/lockstore.hpp>

#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <string>

namespace lockstore::test {

/// `through(owner)` connects a lock whose connections go through `proxy`;
/// `direct(owner)` one that reaches the server itself.
template <class Through, class Direct>
void check_partitioned_session_stops_first(PartitionProxy& proxy, Through through, Direct direct) {
  using namespace std::chrono_literals;
  using Clock = std::chrono::steady_clock;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await through("alice");
    auto bob = co_await direct("bob");
    const TenantId tenant("acme");
    const auto key = AdvisoryKey::for_session(tenant, "partitioned");
    LockOptions options;
    options.ttl = 3s;  // the margin is 300 ms
    Clock::time_point body_started{}, body_stopped{}, bob_granted{};
    bool bob_done = false;
    std::string bob_failure;
    auto executor = co_await asio::this_coro::executor;
    asio::co_spawn(executor, [&]() -> asio::awaitable<void> {
      try {
        while (body_started == Clock::time_point{}) co_await sleep_for(1ms);
        co_await sleep_for(100ms);  // a renewal or two are in flight or due when the network goes
        proxy.blackhole();
        auto guard = co_await bob.acquire(key, 30s, 20s);
        bob_granted = Clock::now();
        proxy.heal();
        co_await bob.release(std::move(guard));
      } catch (const std::exception& error) {
        bob_failure = error.what();
        proxy.heal();
      }
      bob_done = true;
    }, asio::detached);
    std::optional<errc> code;
    try {
      co_await with_session_lock(alice, tenant, "partitioned", [&]() -> asio::awaitable<void> {
        body_started = Clock::now();
        try {
          co_await sleep_for(60s);
        } catch (const boost::system::system_error&) {
          body_stopped = Clock::now();
          throw;
        }
      }, options);
    } catch (const Error& error) {
      code = static_cast<errc>(error.code().value());
    }
    for (const auto give_up = Clock::now() + 30s; !bob_done && Clock::now() < give_up;) co_await sleep_for(5ms);
    REQUIRE(bob_done);
    CHECK(bob_failure.empty());
    CHECK(code == errc::lock_lost);
    REQUIRE(body_stopped != Clock::time_point{});
    REQUIRE(bob_granted != Clock::time_point{});
    const double ahead_ms = std::chrono::duration<double, std::milli>(bob_granted - body_stopped).count();
    INFO("body stopped " << ahead_ms << " ms before the direct client was granted the key");
    CHECK(body_stopped < bob_granted);
  });
}

/// `lockstore run` against `backend_url` (which goes through `proxy`): its
/// command must get SIGTERM before `direct` is granted `key_name`, and the
/// tool must exit 77 (lease lost).
template <class Direct>
void check_partitioned_run_stops_first(PartitionProxy& proxy, const std::string& tool, const std::string& backend_url,
                                       const std::string& key_name, Direct direct) {
  using namespace std::chrono_literals;
  TempDir dir;
  const auto started = dir / "started";
  const auto term = dir / "term";
  const std::string script = "trap 'date +%s%N > " + term.string() + "; exit 0' TERM; touch " + started.string() +
                             "; sleep 60 & wait";
  std::vector<std::string> arguments{tool, "run", "--backend", backend_url, "--ttl", "3s", "--kill-after", "5s",
                                     key_name, "--", "sh", "-c", script};
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_t runner = 0;
  REQUIRE(::posix_spawn(&runner, tool.c_str(), nullptr, nullptr, argv.data(), environ) == 0);
  REQUIRE(eventually([&] { return std::filesystem::exists(started); }, 30s));
  std::int64_t granted_ns = 0;
  std::string failure;
  run([&]() -> asio::awaitable<void> {
    auto bob = co_await direct("bob");
    co_await sleep_for(100ms);
    proxy.blackhole();
    try {
      auto guard = co_await bob.acquire(AdvisoryKey(key_name), 30s, 20s);
      granted_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
      proxy.heal();
      co_await bob.release(std::move(guard));
    } catch (const std::exception& error) {
      failure = error.what();
      proxy.heal();
    }
  });
  int status = 0;
  ::waitpid(runner, &status, 0);
  CHECK(failure.empty());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 77);
  std::ifstream in(term);
  std::int64_t term_ns = 0;
  in >> term_ns;
  REQUIRE(term_ns != 0);
  REQUIRE(granted_ns != 0);
  INFO("the command got SIGTERM " << (granted_ns - term_ns) / 1e6 << " ms before the direct client was granted");
  CHECK(term_ns < granted_ns);
}

}  // namespace lockstore::test
