// MemoryLock: the conformance suite, plus what only an in-process lock shows.
#include "support/helpers.hpp"

#include <catch2/catch.hpp>
#include <lockstore/lockstore.hpp>

namespace lockstore::test {

// Every acquisition is its own holder, so "owners" share one MemoryLock.
struct MemoryFixture {
  using Lock = MemoryLock;
  static constexpr bool has_owners = false;
  static constexpr bool fifo = true;
  MemoryLock shared;
  asio::awaitable<MemoryLock> make_lock(std::string) { co_return shared; }
  asio::awaitable<MemoryLock> make_remote_lock(std::string) { co_return shared; }
  // An in-process waiter joins the queue at its first suspension, with no
  // I/O: a few turns of the io_context after it was spawned are enough, and
  // there is nothing outside to look at.
  asio::awaitable<std::size_t> waiting(const AdvisoryKey&) {
    for (int turn = 0; turn < 10; ++turn) co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    co_return std::numeric_limits<std::size_t>::max();
  }
};

}  // namespace lockstore::test

#define LOCKSTORE_CONFORMANCE_FIXTURE lockstore::test::MemoryFixture
#include "conformance/lock_conformance.hpp"

namespace lockstore::test {

using namespace std::chrono_literals;

TEST_CASE("MemoryLock instances are independent, and copies share leases", "[memory]") {
  run([&]() -> asio::awaitable<void> {
    MemoryLock first;
    MemoryLock second;
    MemoryLock copy = first;
    auto a = co_await first.try_acquire(AdvisoryKey("k"), 5s);
    auto b = co_await second.try_acquire(AdvisoryKey("k"), 5s);
    auto c = co_await copy.try_acquire(AdvisoryKey("k"), 5s);
    CHECK(a.has_value());
    CHECK(b.has_value());
    CHECK_FALSE(c.has_value());
    CHECK(first.held_count() == 1);
    co_await first.release(std::move(*a));
    co_await second.release(std::move(*b));
    CHECK(first.held_count() == 0);
  });
}

TEST_CASE("MemoryLock wakes many waiters on one key without losing any", "[memory]") {
  MemoryLock lock;
  asio::io_context context;
  constexpr int waiters = 50;
  int done = 0;
  std::vector<std::uint64_t> fences;
  for (int i = 0; i < waiters; ++i) {
    asio::co_spawn(context, [&]() -> asio::awaitable<void> {
      auto guard = co_await lock.acquire(AdvisoryKey("crowd"), 5s, 10s);
      fences.push_back(guard.fence());
      co_await asio::post(context, asio::use_awaitable);
      co_await lock.release(std::move(guard));
      ++done;
    }, asio::detached);
  }
  context.run();
  CHECK(done == waiters);
  REQUIRE(fences.size() == waiters);
  for (std::size_t i = 1; i < fences.size(); ++i) CHECK(fences[i] > fences[i - 1]);
}

TEST_CASE("MemoryLock lists its live leases, force-releases one, and releases all", "[memory]") {
  run([&]() -> asio::awaitable<void> {
    MemoryLock lock;
    MemoryLock copy = lock;
    auto b = co_await lock.acquire(AdvisoryKey("b"), 30s, 1s);
    auto a = co_await copy.acquire(AdvisoryKey("a"), 30s, 1s);
    auto short_lived = co_await lock.acquire(AdvisoryKey("c"), 1ms, 1s);
    co_await sleep_for(5ms);  // "c" has expired: not listed, not counted
    const auto before = std::chrono::system_clock::now();
    auto leases = co_await lock.list();
    REQUIRE(leases.size() == 2);
    CHECK(leases[0].key.str() == "a");
    CHECK(leases[0].fence == a.fence());
    CHECK(leases[0].owner.empty());
    CHECK(leases[1].key.str() == "b");
    CHECK(leases[1].expires_at > before + 25s);
    CHECK(leases[1].acquired_at <= before);

    // A waiter for "a" is let in by force_release, and the old guard is fenced out.
    auto executor = co_await asio::this_coro::executor;
    std::optional<std::uint64_t> waiter_fence;
    asio::co_spawn(executor, [&]() -> asio::awaitable<void> {
      auto guard = co_await lock.acquire(AdvisoryKey("a"), 30s, 10s);
      waiter_fence = guard.fence();
      co_await lock.release(std::move(guard));
    }, asio::detached);
    co_await sleep_for(10ms);
    const auto cleared = co_await lock.force_release(AdvisoryKey("a"));
    REQUIRE(cleared.has_value());
    CHECK(cleared->fence == a.fence());
    for (const auto give_up = std::chrono::steady_clock::now() + 5s;
         !waiter_fence && std::chrono::steady_clock::now() < give_up;)
      co_await sleep_for(1ms);
    REQUIRE(waiter_fence.has_value());
    CHECK(*waiter_fence > a.fence());
    const bool old_extended = co_await copy.extend(a, 30s);
    CHECK_FALSE(old_extended);
    a.mark_released();
    const auto none = co_await lock.force_release(AdvisoryKey("a"));
    CHECK_FALSE(none.has_value());

    const auto live = co_await copy.release_all();
    CHECK(live == 1);  // "b"; "c" had expired
    CHECK(lock.held_count() == 0);
    const bool b_extended = co_await lock.extend(b, 30s);
    CHECK_FALSE(b_extended);
    b.mark_released();
    short_lived.mark_released();
  });
}

}  // namespace lockstore::test
