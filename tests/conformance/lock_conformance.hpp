// The DistributedLock conformance suite: every promise of API.md's
// DistributedLock table and with_session_lock, written once. A backend's
// test file defines a fixture and includes this header with
// LOCKSTORE_CONFORMANCE_FIXTURE set to it. A fixture provides:
//   using Lock = ...;                        the backend's lock type
//   static constexpr bool has_owners;        same-owner refresh applies
//   static constexpr bool fifo;              acquire() queues its waiters
//   asio::awaitable<Lock> make_lock(owner)   a lock for `owner`, sharing the
//                                            fixture's connection
//   asio::awaitable<Lock> make_remote_lock(owner)
//                                            a lock for `owner` on its own
//                                            connection (as another process would)
#pragma once

#include "support/helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/use_future.hpp>
#include <catch2/catch.hpp>
#include <lockstore/lockstore.hpp>

#include <atomic>
#include <stdexcept>
#include <thread>

#ifndef LOCKSTORE_CONFORMANCE_FIXTURE
#error "define LOCKSTORE_CONFORMANCE_FIXTURE before including lock_conformance.hpp"
#endif

namespace lockstore::test::conformance {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using test::cancel_after;
using test::sleep_for;

inline std::int64_t ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

/// Waits until `count` acquirers are queued for `key` (the fixture's
/// `waiting(key)`), so a test orders its waiters by what happened, not by
/// how long it slept. Throws after 30 s.
template <class Fixture>
asio::awaitable<void> until_waiting(Fixture& fixture, const AdvisoryKey& key, std::size_t count) {
  for (const auto give_up = Clock::now() + std::chrono::seconds(30);;) {
    const auto queued = co_await fixture.waiting(key);
    if (queued >= count) co_return;
    if (Clock::now() > give_up)
      throw std::runtime_error(fmt::format("{} waiter(s) never queued for '{}' ({} did)", count, key.str(), queued));
    co_await sleep_for(std::chrono::milliseconds(2));
  }
}

/// A lock whose extend never answers, as a server behind a partition that
/// drops traffic without closing the connection: everything else goes to
/// the real lock. Its extend ends only when cancelled.
template <class Lock>
struct UnansweredExtends {
  Lock& inner;
  asio::awaitable<std::optional<LockGuard>> try_acquire(AdvisoryKey key, std::chrono::milliseconds ttl) {
    auto trying = inner.try_acquire(std::move(key), ttl);
    co_return co_await std::move(trying);
  }
  asio::awaitable<LockGuard> acquire(AdvisoryKey key, std::chrono::milliseconds ttl, std::chrono::milliseconds deadline) {
    auto acquiring = inner.acquire(std::move(key), ttl, deadline);
    co_return co_await std::move(acquiring);
  }
  asio::awaitable<bool> extend(LockGuard&, std::chrono::milliseconds) {
    asio::steady_timer never(co_await asio::this_coro::executor, std::chrono::hours(1));
    co_await never.async_wait(asio::use_awaitable);
    co_return true;
  }
  asio::awaitable<void> release(LockGuard guard) {
    auto releasing = inner.release(std::move(guard));
    co_await std::move(releasing);
  }
};

}  // namespace lockstore::test::conformance

#define LOCKSTORE_CT(name) TEMPLATE_TEST_CASE(name, "[conformance]", LOCKSTORE_CONFORMANCE_FIXTURE)

namespace lockstore::test::conformance {

LOCKSTORE_CT("the backend satisfies DistributedLock") {
  STATIC_REQUIRE(DistributedLock<typename TestType::Lock>);
}

LOCKSTORE_CT("the first acquire succeeds with a 128-bit token and a positive fence") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await fixture.make_lock("alice");
    auto guard = co_await lock.try_acquire(AdvisoryKey("first"), 5s);
    REQUIRE(guard.has_value());
    CHECK(guard->key().str() == "first");
    CHECK(guard->token().size() >= 32);
    CHECK(guard->fence() > 0);
    CHECK_FALSE(guard->released());
    co_await lock.release(std::move(*guard));
    CHECK(guard->released());
  });
}

LOCKSTORE_CT("a key of the maximum length (heap-allocated all the way) works end to end") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const AdvisoryKey key(std::string(AdvisoryKey::max_size, 'k'));
    auto guard = co_await alice.acquire(key, 5s, 5s);
    CHECK(guard.key() == key);
    const bool extended = co_await alice.extend(guard, 5s);
    CHECK(extended);
    auto refused = co_await bob.try_acquire(key, 5s);
    CHECK_FALSE(refused.has_value());
    co_await alice.release(std::move(guard));
    const TenantId tenant(std::string(200, 't'));
    const auto value = co_await with_session_lock(bob, tenant, std::string(200, 'x'), []() -> asio::awaitable<int> {
      co_return 7;
    });
    CHECK(value == 7);
  });
}

LOCKSTORE_CT("another owner is refused while the lease is live") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto held = co_await alice.try_acquire(AdvisoryKey("contended"), 5s);
    REQUIRE(held);
    auto refused = co_await bob.try_acquire(AdvisoryKey("contended"), 5s);
    CHECK_FALSE(refused.has_value());
    auto other_key = co_await bob.try_acquire(AdvisoryKey("another key"), 5s);
    CHECK(other_key.has_value());
    co_await alice.release(std::move(*held));
    co_await bob.release(std::move(*other_key));
  });
}

LOCKSTORE_CT("a second acquisition through the same lock object is refused and does not shorten the lease") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto first = co_await alice.try_acquire(AdvisoryKey("mine"), 30s);
    REQUIRE(first);
    // The same owner, through the same object, with a 1 ms TTL: refused, and
    // the 30 s lease is left as it was.
    auto second = co_await alice.try_acquire(AdvisoryKey("mine"), 1ms);
    CHECK_FALSE(second.has_value());
    if (second) second->mark_released();
    co_await sleep_for(20ms);
    auto other = co_await bob.try_acquire(AdvisoryKey("mine"), 5s);
    CHECK_FALSE(other.has_value());
    if (other) co_await bob.release(std::move(*other));
    const bool still_mine = co_await alice.extend(*first, 30s);
    CHECK(still_mine);
    co_await alice.release(std::move(*first));
  });
}

LOCKSTORE_CT("two coroutines sharing one lock object never both hold a key") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto shared = co_await fixture.make_lock("shared-owner");
    auto executor = co_await asio::this_coro::executor;
    int inside = 0;
    int overlaps = 0;
    int done = 0;
    std::vector<std::uint64_t> fences;
    for (int worker = 0; worker < 3; ++worker) {
      asio::co_spawn(executor, [&]() -> asio::awaitable<void> {
        for (int round = 0; round < 15; ++round) {
          auto guard = co_await shared.acquire(AdvisoryKey("turns"), 10s, 60s);
          if (++inside != 1) ++overlaps;
          fences.push_back(guard.fence());
          co_await sleep_for(1ms);  // hold across a suspension: the other turns run meanwhile
          --inside;
          co_await shared.release(std::move(guard));
        }
        ++done;
      }, asio::detached);
    }
    for (const auto give_up = Clock::now() + 60s; done < 3 && Clock::now() < give_up;) co_await sleep_for(5ms);
    CHECK(done == 3);
    CHECK(overlaps == 0);
    REQUIRE(fences.size() == 45);
    for (std::size_t i = 1; i < fences.size(); ++i) CHECK(fences[i] > fences[i - 1]);
  });
}

LOCKSTORE_CT("valid_until is the request's send time plus the TTL, and moves only with a successful extend") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    const auto before = Clock::now();
    auto guard = co_await alice.try_acquire(AdvisoryKey("valid-until"), 10s);
    const auto after = Clock::now();
    REQUIRE(guard);
    CHECK(guard->valid_until() >= before + 10s);
    CHECK(guard->valid_until() <= after + 10s);
    const auto before_extend = Clock::now();
    const bool extended = co_await alice.extend(*guard, 20s);
    const auto after_extend = Clock::now();
    REQUIRE(extended);
    CHECK(guard->valid_until() >= before_extend + 20s);
    CHECK(guard->valid_until() <= after_extend + 20s);
    const auto confirmed = guard->valid_until();
    LockGuard stale(AdvisoryKey("valid-until"), "not-the-token", guard->fence());
    const auto stale_until = stale.valid_until();
    const bool stale_extended = co_await alice.extend(stale, 30s);
    CHECK_FALSE(stale_extended);
    CHECK(stale.valid_until() == stale_until);
    stale.mark_released();
    CHECK(guard->valid_until() == confirmed);
    co_await alice.release(std::move(*guard));
    auto waited = co_await alice.acquire(AdvisoryKey("valid-until"), 5s, 5s);
    CHECK(waited.valid_until() <= Clock::now() + 5s);
    CHECK(waited.valid_until() > Clock::now());
    co_await alice.release(std::move(waited));
  });
}

LOCKSTORE_CT("take_over gives the same owner a new token and a larger fence, fences out the old guard, never shortens") {
  TestType fixture;
  if constexpr (TestType::has_owners) {
    run([&]() -> asio::awaitable<void> {
      auto alice = co_await fixture.make_lock("alice");
      auto alice_again = co_await fixture.make_lock("alice");  // the same session, resumed
      auto bob = co_await fixture.make_lock("bob");
      auto old = co_await alice.try_acquire(AdvisoryKey("resumed"), 30s);
      REQUIRE(old);
      auto taken = co_await alice_again.take_over(AdvisoryKey("resumed"), 1ms);
      REQUIRE(taken.has_value());
      CHECK(taken->token() != old->token());
      CHECK(taken->fence() > old->fence());
      CHECK(taken->valid_until() > Clock::now() + 20s);  // the 30 s it kept, not the 1 ms asked for
      // The old guard is fenced out: it can neither extend nor release.
      const bool old_extends = co_await alice.extend(*old, 30s);
      CHECK_FALSE(old_extends);
      co_await alice.release(std::move(*old));
      // A 1 ms takeover kept the 30 s expiry: another owner is still refused.
      co_await sleep_for(20ms);
      auto refused = co_await bob.try_acquire(AdvisoryKey("resumed"), 5s);
      CHECK_FALSE(refused.has_value());
      if (refused) co_await bob.release(std::move(*refused));
      // Another owner cannot take it over.
      auto stolen = co_await bob.take_over(AdvisoryKey("resumed"), 5s);
      CHECK_FALSE(stolen.has_value());
      if (stolen) co_await bob.release(std::move(*stolen));
      const bool taken_extends = co_await alice_again.extend(*taken, 30s);
      CHECK(taken_extends);
      co_await alice_again.release(std::move(*taken));
      // A free key is simply taken.
      auto fresh = co_await bob.take_over(AdvisoryKey("resumed"), 5s);
      REQUIRE(fresh.has_value());
      CHECK(fresh->fence() > taken->fence());
      co_await bob.release(std::move(*fresh));
    });
  } else {
    SUCCEED("no owners: every acquisition is its own holder and there is nothing to take over");
  }
}

LOCKSTORE_CT("release lets another owner in at once") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto held = co_await alice.try_acquire(AdvisoryKey("handover"), 30s);
    REQUIRE(held);
    const auto first_fence = held->fence();
    co_await alice.release(std::move(*held));
    auto next = co_await bob.try_acquire(AdvisoryKey("handover"), 30s);
    REQUIRE(next.has_value());
    CHECK(next->fence() > first_fence);
    co_await bob.release(std::move(*next));
  });
}

LOCKSTORE_CT("extend is true for the holder and moves the expiry") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    // Extends every 250 ms until well past the original 2 s TTL, so the
    // lease outlives it only because extend moved the expiry. Each step
    // leaves 1.75 s of margin, which a loaded machine under TSan does not
    // use up between two extends.
    const auto started = Clock::now();
    auto held = co_await alice.try_acquire(AdvisoryKey("extended"), 2s);
    REQUIRE(held);
    while (Clock::now() - started < 2500ms) {
      co_await sleep_for(250ms);
      const bool extended = co_await alice.extend(*held, 2s);
      CHECK(extended);
    }
    auto refused = co_await bob.try_acquire(AdvisoryKey("extended"), 1s);
    CHECK_FALSE(refused.has_value());
    co_await alice.release(std::move(*held));
  });
}

LOCKSTORE_CT("an expired lease is reclaimed with a larger fence and the old holder can neither extend nor release it") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto carol = co_await fixture.make_lock("carol");
    auto stale = co_await alice.try_acquire(AdvisoryKey("expiring"), 30ms);
    REQUIRE(stale);
    co_await sleep_for(60ms);  // TTL expiry is the point of this test

    const bool extended_after_expiry = co_await alice.extend(*stale, 5s);
    CHECK_FALSE(extended_after_expiry);

    auto reclaimed = co_await bob.try_acquire(AdvisoryKey("expiring"), 5s);
    REQUIRE(reclaimed.has_value());
    CHECK(reclaimed->fence() > stale->fence());

    const bool extended_stale = co_await alice.extend(*stale, 5s);
    CHECK_FALSE(extended_stale);
    co_await alice.release(std::move(*stale));  // must not remove bob's lease
    CHECK(stale->released());

    auto still_held = co_await carol.try_acquire(AdvisoryKey("expiring"), 5s);
    CHECK_FALSE(still_held.has_value());
    const bool bob_extends = co_await bob.extend(*reclaimed, 5s);
    CHECK(bob_extends);
    co_await bob.release(std::move(*reclaimed));
  });
}

LOCKSTORE_CT("fences strictly increase across acquisitions by different owners") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    std::uint64_t last = 0;
    for (int i = 0; i < 20; ++i) {
      auto& lock = i % 2 == 0 ? alice : bob;
      auto guard = co_await lock.acquire(AdvisoryKey("fenced"), 5s, 5s);
      CHECK(guard.fence() > last);
      last = guard.fence();
      co_await lock.release(std::move(guard));
    }
  });
}

LOCKSTORE_CT("acquire throws errc::timeout when the deadline elapses") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto held = co_await alice.try_acquire(AdvisoryKey("busy"), 30s);
    REQUIRE(held);
    const auto start = Clock::now();
    std::optional<Error> failure;
    try {
      auto never = co_await bob.acquire(AdvisoryKey("busy"), 5s, 60ms);
      never.mark_released();
    } catch (const Error& error) {
      failure = error;
    }
    const auto waited = ms_since(start);
    REQUIRE(failure.has_value());
    CHECK(failure->code() == errc::timeout);
    CHECK_THAT(failure->what(), Catch::Contains("busy"));
    CHECK(waited >= 55);
    CHECK(waited < 5000);
    co_await alice.release(std::move(*held));
  });
}

LOCKSTORE_CT("a cancelled acquire holds nothing afterwards") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto carol = co_await fixture.make_lock("carol");
    auto held = co_await alice.try_acquire(AdvisoryKey("cancelled"), 30s);
    REQUIRE(held);
    auto outcome = co_await cancel_after(bob.acquire(AdvisoryKey("cancelled"), 30s, 30s), 40ms);
    CHECK_FALSE(outcome.has_value());
    co_await alice.release(std::move(*held));
    auto free_now = co_await carol.try_acquire(AdvisoryKey("cancelled"), 5s);
    CHECK(free_now.has_value());
    if (free_now) co_await carol.release(std::move(*free_now));
  });
}

LOCKSTORE_CT("a cancellation racing a release never leaves the lease held") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto carol = co_await fixture.make_lock("carol");
    auto executor = co_await asio::this_coro::executor;
    for (int round = 0; round < 25; ++round) {
      auto held = co_await alice.acquire(AdvisoryKey("raced"), 30s, 5s);
      // The release and the cancelling timer fire at about the same time.
      bool released = false;
      asio::co_spawn(executor, [&, guard = std::move(held)]() mutable -> asio::awaitable<void> {
        co_await sleep_for(std::chrono::milliseconds(5 + round % 3));
        co_await alice.release(std::move(guard));
        released = true;
      }, asio::detached);
      auto outcome =
          co_await cancel_after(bob.acquire(AdvisoryKey("raced"), 30s, 30s), std::chrono::milliseconds(5 + round % 5));
      if (outcome) co_await bob.release(std::move(*outcome));
      for (const auto give_up = Clock::now() + 5s; !released && Clock::now() < give_up;)
        co_await sleep_for(1ms);  // waits for the detached release, bounded
      REQUIRE(released);
      auto free_now = co_await carol.try_acquire(AdvisoryKey("raced"), 5s);
      CHECK(free_now.has_value());
      if (free_now) co_await carol.release(std::move(*free_now));
    }
  });
}

LOCKSTORE_CT("acquire serves waiters first come, first served, and a releaser cannot barge back in") {
  TestType fixture;
  if constexpr (TestType::fifo) {
    run([&]() -> asio::awaitable<void> {
      auto holder = co_await fixture.make_lock("holder");
      auto first = co_await fixture.make_lock("first");
      auto second = co_await fixture.make_lock("second");
      const AdvisoryKey key("queued");
      auto held = co_await holder.acquire(key, 30s, 5s);
      std::vector<std::string> order;
      int finished = 0;
      auto waiter = [&](typename TestType::Lock& lock, std::string name) -> asio::awaitable<void> {
        auto guard = co_await lock.acquire(key, 30s, 10s);
        order.push_back(name);
        co_await lock.release(std::move(guard));
        ++finished;
      };
      auto executor = co_await asio::this_coro::executor;
      asio::co_spawn(executor, waiter(first, "first"), asio::detached);
      co_await until_waiting(fixture, key, 1);  // first is refused and takes its ticket
      asio::co_spawn(executor, waiter(second, "second"), asio::detached);
      co_await until_waiting(fixture, key, 2);
      co_await holder.release(std::move(held));
      auto again = co_await holder.acquire(key, 30s, 10s);  // straight back: behind both
      order.push_back("holder");
      co_await holder.release(std::move(again));
      for (const auto give_up = Clock::now() + 30s; finished < 2 && Clock::now() < give_up;) co_await sleep_for(1ms);
      const std::vector<std::string> expected{"first", "second", "holder"};
      CHECK(order == expected);
      CHECK(finished == 2);
    });
  } else {
    WARN("this backend does not queue waiters yet (README: Fairness)");
  }
}

LOCKSTORE_CT("a waiter queued behind one that takes the lease and abandons it gets the key once it expires") {
  // Found by tests/torture: MemoryLock's second waiter slept until its deadline.
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto holder = co_await fixture.make_lock("holder");
    auto first = co_await fixture.make_lock("first");
    auto second = co_await fixture.make_lock("second");
    const AdvisoryKey key("abandoned-in-line");
    auto held = co_await holder.acquire(key, 30s, 5s);
    auto executor = co_await asio::this_coro::executor;
    Clock::time_point abandoned_at{};
    bool second_done = false;
    Clock::time_point second_at{};
    asio::co_spawn(executor, [&]() -> asio::awaitable<void> {
      auto guard = co_await first.acquire(key, 300ms, 20s);
      abandoned_at = Clock::now();
      guard.mark_released();  // walks away: the lease lives on for its 300 ms
    }, asio::detached);
    co_await until_waiting(fixture, key, 1);  // first queues before second
    asio::co_spawn(executor, [&]() -> asio::awaitable<void> {
      auto guard = co_await second.acquire(key, 30s, 20s);
      second_at = Clock::now();
      second_done = true;
      co_await second.release(std::move(guard));
    }, asio::detached);
    co_await until_waiting(fixture, key, 2);
    co_await holder.release(std::move(held));
    for (const auto give_up = Clock::now() + 25s; !second_done && Clock::now() < give_up;) co_await sleep_for(5ms);
    REQUIRE(second_done);
    REQUIRE(abandoned_at != Clock::time_point{});
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(second_at - abandoned_at);
    CHECK(waited >= 150ms);   // not long before the abandoned lease ran out
    // The 300 ms TTL plus a waiter's look-again time (at most ~1 s), not the
    // 20 s deadline; 8 s leaves room for a loaded machine under TSan.
    CHECK(waited < 8000ms);
  });
}

LOCKSTORE_CT("a waiter acquires promptly after a release") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto remote = co_await fixture.make_remote_lock("remote");
    for (auto* waiter : {&bob, &remote}) {
      auto held = co_await alice.try_acquire(AdvisoryKey("prompt"), 30s);
      REQUIRE(held);
      auto executor = co_await asio::this_coro::executor;
      Clock::time_point released_at;
      auto [order, wait_error, guard, release_error] =
          co_await asio::experimental::make_parallel_group(
              asio::co_spawn(executor, [&]() -> asio::awaitable<std::optional<LockGuard>> {
                co_return co_await waiter->acquire(AdvisoryKey("prompt"), 30s, 20s);
              }, asio::deferred),
              asio::co_spawn(executor, [&]() -> asio::awaitable<void> {
                co_await sleep_for(50ms);
                released_at = Clock::now();
                co_await alice.release(std::move(*held));
              }, asio::deferred))
              .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
      REQUIRE_FALSE(wait_error);
      REQUIRE_FALSE(release_error);
      REQUIRE(guard.has_value());
      const auto handoff = ms_since(released_at);
      CHECK(handoff < 1000);  // the lease had 30 s left: only a wake-up explains this
      co_await waiter->release(std::move(*guard));
    }
  });
}

LOCKSTORE_CT("a waiter acquires an abandoned lease when it expires") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    auto abandoned = co_await alice.try_acquire(AdvisoryKey("abandoned"), 100ms);
    REQUIRE(abandoned);
    abandoned->mark_released();  // as if its holder crashed
    const auto start = Clock::now();
    auto guard = co_await bob.acquire(AdvisoryKey("abandoned"), 5s, 20s);
    const auto waited = ms_since(start);
    CHECK(waited >= 80);
    CHECK(waited < 8000);  // the 100 ms TTL and a look-again time, not the 10 s deadline
    CHECK(guard.fence() > abandoned->fence());
    co_await bob.release(std::move(guard));
  });
}

LOCKSTORE_CT("invalid TTLs are refused with invalid_argument") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    for (const auto ttl : {0ms, -5ms, std::chrono::milliseconds(std::chrono::hours(24 * 400))}) {
      std::optional<errc> code;
      try {
        auto guard = co_await alice.try_acquire(AdvisoryKey("ttl"), ttl);
        if (guard) guard->mark_released();
      } catch (const Error& error) {
        code = static_cast<errc>(error.code().value());
      }
      CHECK(code == errc::invalid_argument);
      std::optional<errc> acquire_code;
      try {
        auto guard = co_await alice.acquire(AdvisoryKey("ttl"), ttl, 1s);
        guard.mark_released();
      } catch (const Error& error) {
        acquire_code = static_cast<errc>(error.code().value());
      }
      CHECK(acquire_code == errc::invalid_argument);
    }
    // extend with a bad TTL is refused too, and the lease is left as it was.
    auto held = co_await alice.try_acquire(AdvisoryKey("ttl-extend"), 30s);
    REQUIRE(held);
    for (const auto ttl : {0ms, -5ms, std::chrono::milliseconds(std::chrono::hours(24 * 400))}) {
      std::optional<errc> code;
      try {
        co_await alice.extend(*held, ttl);
      } catch (const Error& error) {
        code = static_cast<errc>(error.code().value());
      }
      CHECK(code == errc::invalid_argument);
    }
    const bool still_extendable = co_await alice.extend(*held, 30s);
    CHECK(still_extendable);
    co_await alice.release(std::move(*held));
    auto fine = co_await alice.try_acquire(AdvisoryKey("ttl"), 1ms);
    CHECK(fine.has_value());
    if (fine) co_await alice.release(std::move(*fine));
  });
}

LOCKSTORE_CT("threads with their own io_contexts never overlap and see strictly increasing fences") {
  TestType fixture;
  constexpr int threads = 4;
  constexpr int rounds = 150;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::mutex fences_mutex;
  std::vector<std::uint64_t> fences;
  std::vector<std::string> errors(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        run([&]() -> asio::awaitable<void> {
          // No co_await inside ?: and no temporaries built in the co_await
          // statement: g++ 12 miscompiles both.
          const auto owner = fmt::format("worker-{}", t);
          std::optional<typename TestType::Lock> lock;
          if (t % 2 == 0) {
            lock.emplace(co_await fixture.make_lock(owner));
          } else {
            lock.emplace(co_await fixture.make_remote_lock(owner));
          }
          for (int i = 0; i < rounds; ++i) {
            auto guard = co_await lock->acquire(AdvisoryKey("hammered"), 10s, 60s);
            if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
            {
              std::lock_guard record(fences_mutex);
              fences.push_back(guard.fence());
            }
            co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);  // yield while held
            inside.fetch_sub(1);
            co_await lock->release(std::move(guard));
          }
        });
      } catch (const std::exception& error) {
        errors[static_cast<std::size_t>(t)] = error.what();
      }
    });
  }
  for (auto& worker : workers) worker.join();
  for (const auto& error : errors) CHECK(error.empty());
  CHECK(overlaps.load() == 0);
  REQUIRE(fences.size() == static_cast<std::size_t>(threads * rounds));
  for (std::size_t i = 1; i < fences.size(); ++i) REQUIRE(fences[i] > fences[i - 1]);
}

LOCKSTORE_CT("with_session_lock returns the body's value and releases the lease") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const TenantId tenant("acme");
    bool held_inside = false;
    auto body = [&]() -> asio::awaitable<int> {
      auto probe = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "t-1"), 1s);
      held_inside = !probe.has_value();
      if (probe) co_await bob.release(std::move(*probe));
      co_return 42;
    };
    const int value = co_await with_session_lock(alice, tenant, "t-1", body);
    CHECK(value == 42);
    CHECK(held_inside);
    auto after = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "t-1"), 1s);
    CHECK(after.has_value());
    if (after) co_await bob.release(std::move(*after));

    bool ran = false;
    LockOptions no_renew;
    no_renew.auto_renew = false;
    co_await with_session_lock(alice, tenant, "t-2", [&]() -> asio::awaitable<void> {
      ran = true;
      co_return;
    }, no_renew);
    CHECK(ran);
    auto after_void = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "t-2"), 1s);
    CHECK(after_void.has_value());
    if (after_void) co_await bob.release(std::move(*after_void));
  });
}

LOCKSTORE_CT("with_lock holds a plain key for its body, returns its value and releases, also when it throws") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const AdvisoryKey key("reports/nightly");
    bool held_inside = false;
    auto body = [&]() -> asio::awaitable<std::string> {
      auto probe = co_await bob.try_acquire(key, 1s);
      held_inside = !probe.has_value();
      if (probe) co_await bob.release(std::move(*probe));
      co_return "done";
    };
    auto running = with_lock(alice, key, body);  // by-value arguments: called in a statement of its own
    const auto value = co_await std::move(running);
    CHECK(value == "done");
    CHECK(held_inside);
    auto after = co_await bob.try_acquire(key, 1s);
    CHECK(after.has_value());
    if (after) co_await bob.release(std::move(*after));

    std::string caught;
    try {
      auto throwing = with_lock(alice, key, []() -> asio::awaitable<void> {
        throw std::runtime_error("body failed");
        co_return;
      });
      co_await std::move(throwing);
    } catch (const std::runtime_error& error) {
      caught = error.what();
    }
    CHECK(caught == "body failed");
    auto after_throw = co_await bob.try_acquire(key, 1s);
    CHECK(after_throw.has_value());
    if (after_throw) co_await bob.release(std::move(*after_throw));
  });
}

LOCKSTORE_CT("with_session_lock releases when the body throws and propagates the exception") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const TenantId tenant("acme");
    for (const bool renew : {true, false}) {
      LockOptions options;
      options.auto_renew = renew;
      std::string caught;
      try {
        co_await with_session_lock(alice, tenant, "throws", []() -> asio::awaitable<void> {
          throw std::runtime_error("body failed");
          co_return;
        }, options);
      } catch (const std::runtime_error& error) {
        caught = error.what();
      }
      CHECK(caught == "body failed");
      auto after = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "throws"), 1s);
      CHECK(after.has_value());
      if (after) co_await bob.release(std::move(*after));
    }
  });
}

LOCKSTORE_CT("with_session_lock auto-renew keeps the lease alive well past its TTL") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const TenantId tenant("acme");
    LockOptions options;
    // Renewed every ttl/3 (133 ms): a stall under 260 ms cannot lose it, and
    // the body runs four TTLs.
    options.ttl = 400ms;
    int refusals = 0;
    co_await with_session_lock(alice, tenant, "long", [&]() -> asio::awaitable<void> {
      for (int i = 0; i < 4; ++i) {  // 4 x 400 ms: four TTLs
        co_await sleep_for(400ms);
        auto probe = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "long"), 1s);
        if (!probe) ++refusals;
        if (probe) co_await bob.release(std::move(*probe));
      }
    }, options);
    CHECK(refusals == 4);
    auto after = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "long"), 1s);
    CHECK(after.has_value());
    if (after) co_await bob.release(std::move(*after));
  });
}

LOCKSTORE_CT("with_session_lock cancels the body and throws lock_lost when the lease is lost") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const TenantId tenant("acme");
    LockOptions options;
    options.ttl = 50ms;
    bool body_cancelled = false;
    bool thief_got_it = false;
    std::optional<LockGuard> stolen;
    std::optional<errc> code;
    const auto start = Clock::now();
    try {
      co_await with_session_lock(alice, tenant, "lost", [&]() -> asio::awaitable<void> {
        // Block the thread past the TTL so no renewal can run (a stalled
        // process), then let another owner take the expired lease.
        std::this_thread::sleep_for(120ms);
        stolen = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "lost"), 10s);
        thief_got_it = stolen.has_value();
        try {
          co_await sleep_for(10s);
        } catch (const boost::system::system_error& error) {
          body_cancelled = error.code() == asio::error::operation_aborted;
          throw;
        }
      }, options);
    } catch (const Error& error) {
      code = static_cast<errc>(error.code().value());
    }
    CHECK(code == errc::lock_lost);
    CHECK(ms_since(start) < 5000);
    CHECK(thief_got_it);
    CHECK(body_cancelled);
    if (stolen) {
      const bool thief_still_holds = co_await bob.extend(*stolen, 1s);
      CHECK(thief_still_holds);  // the loser's release did not remove it
      co_await bob.release(std::move(*stolen));
    }
  });
}

LOCKSTORE_CT("with_session_lock cancels the body before the lease ends when no renewal is answered") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    UnansweredExtends<typename TestType::Lock> partitioned{alice};
    const TenantId tenant("acme");
    LockOptions options;
    options.ttl = 3s;  // renewals due every second go unanswered; the margin is 300 ms
    Clock::time_point body_started{};
    Clock::time_point cancelled_at{};
    std::optional<errc> code;
    try {
      co_await with_session_lock(partitioned, tenant, "partitioned", [&]() -> asio::awaitable<void> {
        body_started = Clock::now();
        try {
          co_await sleep_for(60s);
        } catch (const boost::system::system_error&) {
          cancelled_at = Clock::now();
          throw;
        }
      }, options);
    } catch (const Error& error) {
      code = static_cast<errc>(error.code().value());
    }
    CHECK(code == errc::lock_lost);
    REQUIRE(cancelled_at != Clock::time_point{});
    // The lease was granted before the body started, so it ends no later than
    // body_started + ttl; the body must have been stopped before that, and
    // not long before the margin (the lease was good for at least 2.7 s).
    CHECK(cancelled_at < body_started + options.ttl);
    CHECK(cancelled_at - body_started >= 2s);
    // The lease was released on the way out: bob gets it at once.
    auto after = co_await bob.try_acquire(AdvisoryKey::for_session(tenant, "partitioned"), 5s);
    CHECK(after.has_value());
    if (after) co_await bob.release(std::move(*after));
  });
}

LOCKSTORE_CT("the backend has the operator API") {
  STATIC_REQUIRE(AdministrableLock<typename TestType::Lock>);
}

LOCKSTORE_CT("every lock operation completes through use_future, from a thread that runs no io_context") {
  TestType fixture;
  asio::io_context context;  // only for making the locks (server backends connect on it)
  auto work = asio::make_work_guard(context);
  std::thread runner([&] { context.run(); });
  using Lock = typename TestType::Lock;
  std::optional<Lock> alice;
  std::optional<Lock> bob;
  std::optional<bool> refused_while_held;
  std::optional<bool> extended;
  std::optional<bool> granted_after_release;
  std::optional<boost::system::error_code> timeout_code;
  std::exception_ptr failure;
  try {
    auto make = [&]() -> asio::awaitable<void> {
      alice.emplace(co_await fixture.make_lock("alice"));
      bob.emplace(co_await fixture.make_lock("bob"));
    };
    asio::co_spawn(context, make(), asio::use_future).get();
    const AdvisoryKey key("through a future");
    auto guard = alice->acquire(key, 5s, 5s, asio::use_future).get();
    refused_while_held = !bob->try_acquire(key, 5s, asio::use_future).get().has_value();
    extended = alice->extend(guard, 5s, asio::use_future).get();
    auto waiting = bob->acquire(key, 5s, 50ms, asio::use_future);
    try {
      auto never = waiting.get();
      bob->release(std::move(never), asio::use_future).get();
    } catch (const boost::system::system_error& error) {
      timeout_code = error.code();
    }
    alice->release(std::move(guard), asio::use_future).get();
    auto after = bob->try_acquire(key, 5s, asio::use_future).get();
    granted_after_release = after.has_value();
    if (after) bob->release(std::move(*after), asio::use_future).get();
  } catch (...) {
    failure = std::current_exception();
  }
  alice.reset();
  bob.reset();
  work.reset();
  runner.join();
  if (failure) std::rethrow_exception(failure);
  CHECK(refused_while_held == true);
  CHECK(extended == true);
  REQUIRE(timeout_code.has_value());
  CHECK(*timeout_code == errc::timeout);
  CHECK(granted_after_release == true);
}

LOCKSTORE_CT(
    "with_lock and with_session_lock complete through use_future and hand the body's exception to the "
    "handler and release the lease either way") {
  TestType fixture;
  asio::io_context context;  // only for making the locks (server backends connect on it)
  auto work = asio::make_work_guard(context);
  std::thread runner([&] { context.run(); });
  using Lock = typename TestType::Lock;
  std::optional<Lock> alice;
  std::optional<Lock> bob;
  std::optional<int> value;
  std::optional<bool> free_after_value;
  std::string body_message;
  std::optional<bool> free_after_throw;
  std::optional<boost::system::error_code> timeout_code;
  std::exception_ptr failure;
  try {
    auto make = [&]() -> asio::awaitable<void> {
      alice.emplace(co_await fixture.make_lock("alice"));
      bob.emplace(co_await fixture.make_lock("bob"));
    };
    asio::co_spawn(context, make(), asio::use_future).get();
    const AdvisoryKey key("with_lock through a future");
    auto seven = []() -> asio::awaitable<int> { co_return 7; };
    value = with_lock(*alice, key, seven, LockOptions{}, asio::use_future).get();
    auto after_value = bob->try_acquire(key, 5s, asio::use_future).get();
    free_after_value = after_value.has_value();

    // bob holds the key now: alice's with_lock times out, through the handler.
    LockOptions short_wait;
    short_wait.deadline = 50ms;
    auto timing_out = with_lock(*alice, key, seven, short_wait, asio::use_future);
    try {
      timing_out.get();
    } catch (const Error& error) {
      timeout_code = error.code();
    }
    if (after_value) bob->release(std::move(*after_value), asio::use_future).get();

    const TenantId tenant("acme");
    auto throwing = []() -> asio::awaitable<void> {
      throw std::runtime_error("the body failed");
      co_return;
    };
    auto failing =
        with_session_lock(*alice, tenant, "thread through a future", throwing, LockOptions{}, asio::use_future);
    try {
      failing.get();
    } catch (const std::runtime_error& error) {
      body_message = error.what();
    }
    auto after_throw =
        bob->try_acquire(AdvisoryKey::for_session(tenant, "thread through a future"), 5s, asio::use_future).get();
    free_after_throw = after_throw.has_value();
    if (after_throw) bob->release(std::move(*after_throw), asio::use_future).get();
  } catch (...) {
    failure = std::current_exception();
  }
  alice.reset();
  bob.reset();
  work.reset();
  runner.join();
  if (failure) std::rethrow_exception(failure);
  CHECK(value == 7);
  CHECK(free_after_value == true);
  REQUIRE(timeout_code.has_value());
  CHECK(*timeout_code == errc::timeout);
  CHECK(body_message == "the body failed");
  CHECK(free_after_throw == true);
}

LOCKSTORE_CT("a non-throwing token gets the error code and an empty value and a callback's cancellation slot aborts a "
             "waiting acquire and leaves nothing held") {
  TestType fixture;
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await fixture.make_lock("alice");
    auto bob = co_await fixture.make_lock("bob");
    const AdvisoryKey key("tokens");
    auto held = co_await bob.acquire(key, 30s, 5s);

    auto [timeout_code, empty] = co_await alice.acquire(key, 5s, 50ms, asio::as_tuple(asio::use_awaitable));
    CHECK(timeout_code == errc::timeout);
    CHECK(empty.released());
    CHECK(empty.fence() == 0);
    CHECK(empty.token().empty());

    // deferred: nothing runs until the operation is started.
    auto deferred_try = alice.try_acquire(key, 5s, asio::deferred);
    auto refused = co_await std::move(deferred_try)(asio::use_awaitable);
    CHECK_FALSE(refused.has_value());

    // A callback on this io_context, cancelled through its slot while it waits.
    auto executor = co_await asio::this_coro::executor;
    asio::cancellation_signal cancel;
    std::optional<boost::system::error_code> callback_code;
    LockGuard callback_guard;
    auto on_done = [&](boost::system::error_code code, LockGuard guard) {
      callback_code = code;
      callback_guard = std::move(guard);
    };
    alice.acquire(key, 5s, 30s, asio::bind_cancellation_slot(cancel.slot(), asio::bind_executor(executor, on_done)));
    co_await until_waiting(fixture, key, 1);
    CHECK_FALSE(callback_code.has_value());
    cancel.emit(asio::cancellation_type::terminal);
    for (const auto give_up = Clock::now() + 10s; !callback_code && Clock::now() < give_up;) co_await sleep_for(2ms);
    REQUIRE(callback_code.has_value());
    CHECK(*callback_code == asio::error::operation_aborted);
    CHECK(callback_guard.released());

    // The cancelled waiter holds nothing and left the queue: once bob
    // releases, a queued acquire gets the key well within a waiter ticket's
    // lifetime (a ticket left behind would make it wait that long).
    std::optional<boost::system::error_code> release_code;
    bob.release(std::move(held), asio::bind_executor(executor, [&](boost::system::error_code code) {
      release_code = code;
    }));
    for (const auto give_up = Clock::now() + 10s; !release_code && Clock::now() < give_up;) co_await sleep_for(2ms);
    REQUIRE(release_code.has_value());
    CHECK_FALSE(*release_code);
    const auto asked = Clock::now();
    auto after = co_await alice.acquire(key, 5s, 500ms);
    CHECK(ms_since(asked) < 500);
    co_await alice.release(std::move(after));
  });
}

}  // namespace lockstore::test::conformance
