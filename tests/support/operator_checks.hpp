// The operator API of the server locks (list, release_all, force_release),
// checked once for PostgresLock and RedisLock. `connect(owner)` returns an
// awaitable of a lock for that owner on its own connection, on a key space
// of this test's own.
#pragma once

#include "support/helpers.hpp"

#include <catch2/catch.hpp>

namespace lockstore::test {

template <class Connect>
void check_operator_api(Connect connect) {
  using namespace std::chrono_literals;
  run([&]() -> asio::awaitable<void> {
    auto connecting_alice = connect("alice");
    auto alice = co_await std::move(connecting_alice);
    auto connecting_bob = connect("bob");
    auto bob = co_await std::move(connecting_bob);
    auto a1 = co_await alice.acquire(AdvisoryKey("a1"), 30s, 1s);
    auto a2 = co_await alice.acquire(AdvisoryKey("a*2"), 30s, 1s);  // a glob character in a key
    auto b1 = co_await bob.acquire(AdvisoryKey("b1"), 30s, 1s);
    auto leases = co_await bob.list();
    REQUIRE(leases.size() == 3);
    CHECK(leases[0].key.str() == "a*2");  // ordered by key bytes
    CHECK(leases[1].key.str() == "a1");
    CHECK(leases[1].owner == "alice");
    CHECK(leases[1].fence == a1.fence());
    CHECK(leases[1].expires_at > leases[1].acquired_at);
    const auto live = co_await alice.release_all();
    CHECK(live == 2);
    a1.mark_released();
    a2.mark_released();
    const auto cleared = co_await alice.force_release(AdvisoryKey("b1"));
    REQUIRE(cleared.has_value());
    CHECK(cleared->owner == "bob");
    CHECK(cleared->fence == b1.fence());
    const auto none = co_await alice.force_release(AdvisoryKey("b1"));
    CHECK_FALSE(none.has_value());
    const bool extended = co_await bob.extend(b1, 30s);
    CHECK_FALSE(extended);
    co_await bob.release(std::move(b1));  // a no-op: the lease is gone
    leases = co_await bob.list();
    CHECK(leases.empty());
  });
}

}  // namespace lockstore::test
