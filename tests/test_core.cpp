// The core: errors, keys, LockGuard and logging.
#include "support/helpers.hpp"

#include <catch2/catch.hpp>
#include <lockstore/detail/acquire_machine.hpp>
#include <lockstore/detail/remote_lock.hpp>
#include <lockstore/lockstore.hpp>

#include <set>
#include <thread>

namespace lockstore::test {

namespace {
std::optional<errc> code_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return static_cast<errc>(error.code().value());
  }
  return std::nullopt;
}
}  // namespace

TEST_CASE("errors compare with errc and belong to the 'lockstore' category", "[core][errors]") {
  const Error error(errc::timeout, "waited too long for 'k'");
  CHECK(error.code() == errc::timeout);
  CHECK(error.code() != errc::lock_lost);
  CHECK(std::string(error.code().category().name()) == "lockstore");
  CHECK(error.message() == "waited too long for 'k'");
  CHECK_THAT(error.what(), Catch::Contains("waited too long for 'k'"));
  const boost::system::error_code code = errc::head_revision_conflict;
  CHECK(code == make_error_code(errc::head_revision_conflict));
  CHECK(code.message() == "head revision conflict");
  const boost::system::system_error& as_base = error;
  CHECK(as_base.code() == errc::timeout);
}

TEST_CASE("invalid key names are refused with invalid_argument", "[core][keys]") {
  CHECK(code_of([] { AdvisoryKey(""); }) == errc::invalid_argument);
  CHECK(code_of([] { AdvisoryKey(std::string(513, 'k')); }) == errc::invalid_argument);
  CHECK(code_of([] { AdvisoryKey(std::string("a\0b", 3)); }) == errc::invalid_argument);
  CHECK(code_of([] { TenantId(""); }) == errc::invalid_argument);
  CHECK(code_of([] { AdvisoryKey::for_session(TenantId("t"), ""); }) == errc::invalid_argument);
  CHECK(code_of([] { AdvisoryKey::for_session(TenantId("t"), std::string(600, 'x')); }) == errc::invalid_argument);
  CHECK_FALSE(code_of([] { AdvisoryKey(std::string(512, 'k')); }).has_value());
  CHECK_FALSE(code_of([] { AdvisoryKey("ключ/with spaces:and:colons"); }).has_value());
  try {
    AdvisoryKey(std::string(700, 'k'));
  } catch (const Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("700") && Catch::Contains("512"));
  }
}

TEST_CASE("for_session is injective even when ids contain the separator", "[core][keys]") {
  CHECK(AdvisoryKey::for_session(TenantId("a:1"), "b") != AdvisoryKey::for_session(TenantId("a"), "1:b"));
  CHECK(AdvisoryKey::for_session(TenantId("a"), "b:c") != AdvisoryKey::for_session(TenantId("a:b"), "c"));
  CHECK(AdvisoryKey::for_session(TenantId("t"), "x") == AdvisoryKey::for_session(TenantId("t"), "x"));
  // Every pair over a small alphabet that includes the separator and digits.
  const std::vector<std::string> parts = {"a", ":", "1", "a:", ":a", "1:", "a:1", "::", "11", "1:a:"};
  std::set<std::string> seen;
  for (const auto& tenant : parts)
    for (const auto& thread : parts) seen.insert(AdvisoryKey::for_session(TenantId(tenant), thread).str());
  CHECK(seen.size() == parts.size() * parts.size());
}

TEST_CASE("hash64 is the documented FNV-1a and feeds std::hash, and keys format with fmt", "[core][keys]") {
  CHECK(AdvisoryKey("a").hash64() == 0xaf63dc4c8601ec8cULL);
  CHECK(AdvisoryKey("foobar").hash64() == 0x85944171f73967e8ULL);
  CHECK(std::hash<AdvisoryKey>{}(AdvisoryKey("a")) == static_cast<std::size_t>(0xaf63dc4c8601ec8cULL));
  CHECK(fmt::format("[{}]", AdvisoryKey("job/7")) == "[job/7]");
  CHECK(fmt::format("{}", TenantId("acme")) == "acme");
}

TEST_CASE("random tokens carry 128 bits and do not repeat", "[core][guard]") {
  std::set<std::string> tokens;
  for (int i = 0; i < 10000; ++i) {
    auto token = random_token();
    REQUIRE(token.size() == 32);
    REQUIRE(token.find_first_not_of("0123456789abcdef") == std::string::npos);
    tokens.insert(std::move(token));
  }
  CHECK(tokens.size() == 10000);
  CHECK(random_owner() != random_owner());
}

TEST_CASE("a guard dropped without release warns once, naming the key", "[core][guard]") {
  LogCapture log;
  {
    LockGuard guard(AdvisoryKey("leaky/key"), random_token(), 7);
    CHECK(guard.fence() == 7);
    CHECK(guard.held_for() >= std::chrono::steady_clock::duration::zero());
  }
  const auto entries = log.entries();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].first == LogLevel::warning);
  CHECK_THAT(entries[0].second, Catch::Contains("leaky/key") && Catch::Contains("without release"));
}

TEST_CASE("mark_released and moves silence the leak warning", "[core][guard]") {
  LogCapture log;
  {
    LockGuard released(AdvisoryKey("quiet"), random_token(), 1);
    released.mark_released();
    CHECK(released.released());
    LockGuard original(AdvisoryKey("moved"), random_token(), 2);
    LockGuard target = std::move(original);  // only the target may warn
    target.mark_released();
  }
  CHECK(log.entries().empty());
  {
    LockGuard first(AdvisoryKey("overwritten"), random_token(), 3);
    LockGuard second(AdvisoryKey("kept"), random_token(), 4);
    first = std::move(second);  // drops "overwritten" without release
    first.mark_released();
  }
  CHECK(log.count_containing("overwritten") == 1);
  CHECK(log.entries().size() == 1);
}

TEST_CASE("the log handler can be replaced while other threads log", "[core][log]") {
  std::atomic<int> delivered{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> loggers;
  for (int i = 0; i < 4; ++i)
    loggers.emplace_back([&] {
      while (!stop) detail::log(LogLevel::debug, "tick");
    });
  for (int i = 0; i < 200; ++i) set_log_handler([&](LogLevel, std::string_view) { ++delivered; });
  CHECK(eventually([&] { return delivered.load() > 100; }));
  stop = true;
  for (auto& logger : loggers) logger.join();
  set_log_handler(nullptr);
  CHECK(delivered.load() > 100);
}

}  // namespace lockstore::test

namespace lockstore::test {

// PostgresLock and RedisLock run every operation on a strand through
// detail::on_strand. Asio 1.81's own forwarding of the caller's cancellation
// posted a lambda that pointed into the caller's cancellation slot; a
// cancellation arriving as the operation finished was then read after the
// slot was freed (ASan: heap-use-after-free in co_spawn_cancellation_handler,
// chriskohlhoff/asio#1332). The strand here runs on a thread of its own, as a
// server lock's strand does for a caller on another io_context.
TEST_CASE("a cancellation that reaches a strand operation as it finishes is dropped, never read after free",
          "[core][cancellation]") {
  using namespace std::chrono_literals;
  asio::io_context strand_context;
  auto keep_running = asio::make_work_guard(strand_context);
  std::thread strand_thread([&] { strand_context.run(); });
  const detail::LockStrand strand(strand_context.get_executor());
  int finished = 0;
  int cancelled = 0;
  try {
    run([&]() -> asio::awaitable<void> {
      for (int round = 0; round < 100; ++round) {
        // The operation is still running on the strand when the cancellation
        // comes (after 1 ms of its 3 ms), and a job queued behind it keeps
        // the strand busy, so the forwarded cancellation runs only after the
        // caller has resumed and moved on.
        auto finishing = [&]() -> asio::awaitable<int> {
          // Resumed once by a handler, as after any I/O: co_spawn then
          // completes without a further trip through the strand's queue.
          co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
          asio::post(strand, [] { std::this_thread::sleep_for(3ms); });
          std::this_thread::sleep_for(3ms);
          co_return 7;
        };
        auto outcome = co_await cancel_after(detail::on_strand(strand, finishing()), 1ms);
        if (outcome && *outcome == 7) ++finished;
      }
      // A cancellation that arrives in time still reaches the operation.
      for (int round = 0; round < 20; ++round) {
        auto waiting = [&]() -> asio::awaitable<int> {
          asio::steady_timer timer(co_await asio::this_coro::executor, 30s);
          co_await timer.async_wait(asio::use_awaitable);
          co_return 7;
        };
        const auto started = std::chrono::steady_clock::now();
        auto outcome = co_await cancel_after(detail::on_strand(strand, waiting()), 5ms);
        if (!outcome && std::chrono::steady_clock::now() - started < 10s) ++cancelled;
      }
    });
  } catch (...) {
    keep_running.reset();
    strand_thread.join();
    throw;
  }
  keep_running.reset();
  strand_thread.join();
  CHECK(finished == 100);  // a cancellation after the operation finished changes nothing
  CHECK(cancelled == 20);
}

// The waiting protocol alone: no I/O, no timers, times made up.
namespace {
using detail::AcquireMachine;
using detail::AcquireStep;
using detail::AttemptReport;
using Kind = AcquireStep::Kind;
const auto machine_epoch = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
}  // namespace

TEST_CASE("the acquire machine: a grant in time is taken, a refusal waits for the earliest of its times",
          "[core][acquire]") {
  using namespace std::chrono_literals;
  const auto t0 = machine_epoch;

  AcquireMachine granted(t0, 5s);
  CHECK(granted.start().kind == Kind::attempt);
  AttemptReport grant;
  grant.granted = true;
  grant.valid_until = t0 + 10s;
  CHECK(granted.attempted(grant, t0 + 1ms, false).kind == Kind::done);
  CHECK(granted.finished());

  AcquireMachine waiting(t0, 5s);
  waiting.start();
  AttemptReport refused;
  refused.retry_at = t0 + 3s;  // the holder's expiry
  auto step = waiting.attempted(refused, t0, false);
  CHECK(step.kind == Kind::wait);
  CHECK(step.until == t0 + 3s);
  CHECK(step.ticket == 0);
  CHECK(waiting.woken().kind == Kind::attempt);
  refused.retry_at = t0 + 60s;  // later than the deadline
  step = waiting.attempted(refused, t0 + 3s, false);
  CHECK(step.kind == Kind::wait);
  CHECK(step.until == t0 + 5s);
  waiting.woken();
  CHECK(waiting.attempted(refused, t0 + 5s, false).kind == Kind::timed_out);

  // A waiter with a ticket looks again in time to refresh it.
  AcquireMachine queued(t0, 60s);
  queued.start();
  refused.retry_at = t0 + 30s;
  refused.ticket = 17;
  step = queued.attempted(refused, t0, false);
  CHECK(step.kind == Kind::wait);
  CHECK(step.ticket == 17);
  CHECK(step.until == t0 + detail::ticket_refresh);
  queued.woken();
  AcquireMachine soon(t0, 200ms);  // a deadline before the refresh comes first
  soon.start();
  step = soon.attempted(refused, t0, false);
  CHECK(step.until == t0 + 200ms);
  AcquireMachine in_process(t0, 60s);  // a ticket that cannot lapse is not refreshed
  in_process.start();
  refused.ticket_expires = false;
  step = in_process.attempted(refused, t0, false);
  CHECK(step.ticket == 17);
  CHECK(step.until == t0 + 30s);
  refused.ticket_expires = true;

  // A deadline of 0 still attempts once; a huge one does not overflow.
  AcquireMachine at_once(t0, 0ms);
  CHECK(at_once.start().kind == Kind::attempt);
  refused.ticket = 0;
  CHECK(at_once.attempted(refused, t0, false).kind == Kind::timed_out);
  AcquireMachine forever(t0, std::chrono::milliseconds::max());
  CHECK(forever.give_up_at() == std::chrono::steady_clock::time_point::max());
}

TEST_CASE("the acquire machine gives back a late grant and a grant to a cancelled caller", "[core][acquire]") {
  using namespace std::chrono_literals;
  const auto t0 = machine_epoch;
  AttemptReport grant;
  grant.granted = true;
  grant.valid_until = t0 + 1s;

  // The answer came after the lease's assumed end: give it back, try again at once.
  AcquireMachine late(t0, 5s);
  late.start();
  auto step = late.attempted(grant, t0 + 2s, false);
  CHECK(step.kind == Kind::give_back);
  CHECK_FALSE(step.cancelled);
  step = late.given_back(t0 + 2s);
  CHECK(step.kind == Kind::wait);
  CHECK(step.until == t0 + 2s);
  CHECK(step.ticket == 0);
  CHECK(late.woken().kind == Kind::attempt);
  // ...unless the deadline has passed meanwhile.
  step = late.attempted(grant, t0 + 6s, false);
  CHECK(step.kind == Kind::give_back);
  CHECK(late.given_back(t0 + 6s).kind == Kind::timed_out);

  // Cancelled while the attempt ran: a grant is given back, then aborted.
  AcquireMachine cancelled(t0, 5s);
  cancelled.start();
  step = cancelled.attempted(grant, t0, true);
  CHECK(step.kind == Kind::give_back);
  CHECK(step.cancelled);
  CHECK(cancelled.given_back(t0).kind == Kind::aborted);
  AcquireMachine cancelled_late(t0, 5s);  // cancellation comes before lateness
  cancelled_late.start();
  step = cancelled_late.attempted(grant, t0 + 2s, true);
  CHECK(step.kind == Kind::give_back);
  CHECK(step.cancelled);
  CHECK(cancelled_late.given_back(t0 + 2s).kind == Kind::aborted);
  AcquireMachine cancelled_refused(t0, 5s);
  cancelled_refused.start();
  CHECK(cancelled_refused.attempted(AttemptReport{}, t0, true).kind == Kind::aborted);

  // Steps out of turn are a bug of the driver, not a state to continue from.
  AcquireMachine misused(t0, 5s);
  CHECK_THROWS_AS(misused.woken(), std::logic_error);
  misused.start();
  CHECK_THROWS_AS(misused.start(), std::logic_error);
  CHECK_THROWS_AS(misused.given_back(t0), std::logic_error);
}

}  // namespace lockstore::test
