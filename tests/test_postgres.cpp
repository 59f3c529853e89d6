// PostgresLock against a real PostgreSQL server: the conformance suite, then
// processes, NOTIFY wake-ups, lost connections, a server restart, bad
// conninfo and unreachable servers.
#include "support/helpers.hpp"
#include "support/partition_checks.hpp"
#include "support/operator_checks.hpp"
#include "support/process_checks.hpp"
#include "support/servers.hpp"
#include "support/zombie.hpp"

#include <catch2/catch.hpp>
#include <fmt/ranges.h>
#include <libpq-fe.h>
#include <lockstore/postgres.hpp>
#include <poll.h>

#include <array>
#include <future>
#include <optional>

namespace lockstore::test {

using namespace std::chrono_literals;

/// Runs SQL on a blocking libpq connection (test set-up only); returns the
/// first value of the last result, or "" when it has none.
inline std::string postgres_admin(const std::string& conninfo, const std::string& sql) {
  PGconn* connection = PQconnectdb(conninfo.c_str());
  if (PQstatus(connection) != CONNECTION_OK) {
    std::string message = PQerrorMessage(connection);
    PQfinish(connection);
    throw std::runtime_error("admin connection failed: " + message);
  }
  PGresult* result = PQexec(connection, sql.c_str());
  const auto status = PQresultStatus(result);
  std::string message = PQresultErrorMessage(result);
  std::string value = PQntuples(result) > 0 && PQnfields(result) > 0 ? PQgetvalue(result, 0, 0) : "";
  PQclear(result);
  PQfinish(connection);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) throw std::runtime_error("admin SQL failed: " + message);
  return value;
}

/// The shared server's port, from its conninfo.
inline std::uint16_t postgres_port() {
  const auto conninfo = postgres_conninfo();
  const auto at = conninfo.find("port=");
  if (at == std::string::npos) throw std::runtime_error("no port= in " + conninfo);
  return static_cast<std::uint16_t>(std::stoi(conninfo.substr(at + 5)));
}

/// A conninfo whose lease table lives in a schema of its own, so tests
/// sharing the server never see each other's keys.
inline std::string fresh_postgres_schema(const std::string& conninfo = postgres_conninfo()) {
  const auto schema = fmt::format("t_{:016x}", detail::ThreadRandom::next());
  postgres_admin(conninfo, fmt::format("CREATE SCHEMA {}", schema));
  return fmt::format("{} options='-c search_path={}'", conninfo, schema);
}

struct PostgresFixture {
  using Lock = PostgresLock;
  static constexpr bool has_owners = true;
  static constexpr bool fifo = true;
  std::string conninfo = fresh_postgres_schema();

  asio::awaitable<PostgresLock> make_lock(std::string owner) {
    auto connecting = PostgresLock::connect(conninfo, std::move(owner));
    co_return co_await std::move(connecting);
  }
  asio::awaitable<PostgresLock> make_remote_lock(std::string owner) {
    auto connecting = PostgresLock::connect(conninfo, std::move(owner));
    co_return co_await std::move(connecting);
  }
  // How many acquirers hold a queue ticket for `key` (test keys are ASCII).
  asio::awaitable<std::size_t> waiting(const AdvisoryKey& key) {
    const auto count = postgres_admin(
        conninfo, fmt::format("SELECT count(*) FROM lockstore_waiters WHERE key = convert_to('{}', 'UTF8')", key.str()));
    co_return static_cast<std::size_t>(std::stoull(count));
  }
};

}  // namespace lockstore::test

#define LOCKSTORE_CONFORMANCE_FIXTURE lockstore::test::PostgresFixture
#include "conformance/lock_conformance.hpp"

namespace lockstore::test {

namespace {

/// The key's bytes in hex, as a bytea literal's digits and a notification's payload.
inline std::string key_hex(const AdvisoryKey& key) { return fmt::format("{:02x}", fmt::join(key.str(), "")); }

}  // namespace

TEST_CASE("PostgreSQL: owners sharing one connection wake each other at once", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await PostgresLock::connect(conninfo, "alice");
    auto bob = alice.with_owner("bob");
    CHECK(bob.owner() == "bob");
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer pause(executor);
    // Bob's ticket names his channel only from a look made while listening
    // (his connection listens again for each round: it stops when nobody
    // waits), after which he looks again on his own no sooner than
    // 500 ms later (his ticket refresh; the fallback poll is 0.5-1 s). That
    // look precedes `visible`, so a grant within 450 ms of it is a wake-up.
    // A loaded sanitizer run may stall one round that long: the best of
    // three counts.
    auto best = std::chrono::steady_clock::duration::max();
    for (int round = 0; round < 3 && best >= 450ms; ++round) {
      const AdvisoryKey key(fmt::format("shared-{}", round));
      auto held = co_await alice.acquire(key, 30s, 1s);
      const auto started = std::chrono::steady_clock::now();
      auto waiting = asio::co_spawn(executor, acquire_optional(bob, key), asio::use_future);
      std::string channel;
      for (const auto give_up = started + 20s; channel.empty() && std::chrono::steady_clock::now() < give_up;) {
        pause.expires_after(1ms);
        co_await pause.async_wait(asio::use_awaitable);
        channel = postgres_admin(conninfo, fmt::format("SELECT channel FROM lockstore_waiters WHERE key = '\\x{}'", key_hex(key)));
      }
      REQUIRE_FALSE(channel.empty());  // bob is queued and listening
      const auto visible = std::chrono::steady_clock::now();
      co_await alice.release(std::move(held));
      const bool ready = co_await ready_within_20s(waiting);
      const auto took = std::chrono::steady_clock::now() - visible;
      REQUIRE(ready);
      auto acquired = waiting.get();
      REQUIRE(acquired.has_value());
      auto guard = std::move(*acquired);
      best = std::min(best, took);
      const auto leases = co_await alice.list();
      REQUIRE(leases.size() == 1);
      CHECK(leases[0].owner == "bob");
      co_await bob.release(std::move(guard));
    }
    INFO("best round: bob held the key " << std::chrono::duration_cast<std::chrono::milliseconds>(best).count()
                                         << " ms after his ticket named his channel");
    CHECK(best < 450ms);
  });
}

TEST_CASE("PostgreSQL: the listening connection stops listening once no acquire waits, and listens again for the "
          "next wait",
          "[postgres]") {
  // Left open and unread, a listening backend pins the cluster-wide
  // notification queue, which every release anywhere then grows.
  const auto conninfo = fresh_postgres_schema();
  const auto backends_listening_on = [&](const std::string& channel) {
    return postgres_admin(conninfo, fmt::format("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%LISTEN {}%' "
                                                "AND pid <> pg_backend_pid()",
                                                channel));
  };
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await PostgresLock::connect(conninfo, "alice");
    auto bob = co_await PostgresLock::connect(conninfo, "bob");
    auto executor = co_await asio::this_coro::executor;
    for (int round = 0; round < 2; ++round) {
      const AdvisoryKey key(fmt::format("idle-listener-{}", round));
      auto held = co_await alice.try_acquire(key, 30s);
      REQUIRE(held);
      auto waiting = asio::co_spawn(executor, acquire_optional(bob, key), asio::use_future);
      // bob's ticket names his own channel once he listens on it.
      std::string channel;
      const bool queued = co_await true_within_20s([&] {
        channel = postgres_admin(conninfo, fmt::format("SELECT channel FROM lockstore_waiters WHERE key = '\\x{}'", key_hex(key)));
        return !channel.empty();
      });
      REQUIRE(queued);
      CHECK(backends_listening_on(channel) == "1");
      co_await alice.release(std::move(*held));
      const bool ready = co_await ready_within_20s(waiting);
      REQUIRE(ready);
      auto bobs = waiting.get();
      REQUIRE(bobs.has_value());
      co_await bob.release(std::move(*bobs));
      const bool quiet = co_await true_within_20s([&] { return backends_listening_on(channel) == "0"; });
      CHECK(quiet);
    }
  });
}

TEST_CASE("PostgreSQL: list, release_all and force_release report what they cleared", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  check_operator_api([&](std::string owner) { return PostgresLock::connect(conninfo, std::move(owner)); });
}

TEST_CASE("PostgreSQL: keys and owners are bytes, not text", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  run([&]() -> asio::awaitable<void> {
    const std::string odd_owner = "owner\xff\xfe";
    auto lock = co_await PostgresLock::connect(conninfo, odd_owner);
    const AdvisoryKey key(std::string("k\x80\xff'\"\\x00;", 10));
    auto guard = co_await lock.acquire(key, 30s, 1s);
    const auto leases = co_await lock.list();
    REQUIRE(leases.size() == 1);
    CHECK(leases[0].key == key);
    CHECK(leases[0].owner == odd_owner);
    co_await lock.release(std::move(guard));
  });
}

TEST_CASE("PostgreSQL: processes on their own connections never overlap (ledger)", "[postgres][process]") {
  const auto conninfo = fresh_postgres_schema();
  check_processes_never_overlap([&](std::string owner) { return PostgresLock::connect(conninfo, std::move(owner)); }, 4, 40);
}

TEST_CASE("PostgreSQL: processes taking turns hand the lock over within milliseconds", "[postgres][process]") {
  const auto conninfo = fresh_postgres_schema();
  // Without wake-ups each pair of handoffs sums to ~490 ms (two 500 ms ticket
  // refreshes less the 10 ms holds), a median of >= ~245 ms; 200 ms stays
  // under that and leaves sanitizer builds under load room.
  check_handoffs_across_processes([&](std::string owner) { return PostgresLock::connect(conninfo, std::move(owner)); }, 20, 200ms);
}

TEST_CASE("PostgreSQL: a waiter in another process is woken by NOTIFY, not by polling", "[postgres][process]") {
  const auto conninfo = fresh_postgres_schema();
  // A queued waiter looks again on its own 500 ms after a look (its ticket
  // refresh; the fallback poll is 0.5-1 s): only the notification is sooner.
  const auto queued = [&](const std::string& key) {
    return postgres_admin(conninfo, fmt::format("SELECT count(*) FROM lockstore_waiters WHERE key = '\\x{}'",
                                                key_hex(AdvisoryKey(key)))) != "0";
  };
  check_waiter_woken_across_processes([&](std::string owner) { return PostgresLock::connect(conninfo, std::move(owner)); }, queued, 500ms);
}

/// A blocking libpq connection that LISTENs, as another program would.
class RawListener {
 public:
  explicit RawListener(const std::string& conninfo) : connection_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(connection_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(connection_));
  }
  ~RawListener() { PQfinish(connection_); }
  RawListener(const RawListener&) = delete;
  RawListener& operator=(const RawListener&) = delete;

  void listen(const std::string& channel) {
    PGresult* result = PQexec(connection_, fmt::format("LISTEN {}", channel).c_str());
    const bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
    PQclear(result);
    if (!ok) throw std::runtime_error("LISTEN failed");
  }

  /// "<channel> <payload>" of every notification that arrives within
  /// `timeout` and whose payload starts with `prefix` (other tests share
  /// the server's channels).
  std::vector<std::string> received(const std::string& prefix, std::chrono::milliseconds timeout) {
    std::vector<std::string> seen;
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      PQconsumeInput(connection_);
      while (PGnotify* notification = PQnotifies(connection_)) {
        const std::string payload = notification->extra;
        if (payload.rfind(prefix, 0) == 0) seen.push_back(fmt::format("{} {}", notification->relname, payload));
        PQfreemem(notification);
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left <= 0ms) return seen;
      pollfd readable{PQsocket(connection_), POLLIN, 0};
      ::poll(&readable, 1, static_cast<int>(left.count()));
    }
  }

 private:
  PGconn* connection_;
};

TEST_CASE("PostgreSQL: a release tells only the next waiter's process, on its own channel, and everyone when no ticket is in sight", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  const auto base = fmt::format("told-{:016x}", detail::ThreadRandom::next());
  RawListener shared(conninfo);
  shared.listen(detail::postgres_sql::channel);
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await PostgresLock::connect(conninfo, "alice");
    auto bob = co_await PostgresLock::connect(conninfo, "bob");
    const AdvisoryKey lone_key(base);
    auto alone = co_await alice.try_acquire(lone_key, 30s);
    REQUIRE(alone.has_value());
    co_await alice.release(std::move(*alone));
    // No ticket in sight: everyone is told, with no ticket named. (Each
    // window collects every notification that comes within it: 1 s leaves a
    // loaded server room to deliver the expected one.)
    const auto lone_hex = key_hex(lone_key);
    CHECK(shared.received(lone_hex, 1000ms) == std::vector<std::string>{fmt::format("{} {}", detail::postgres_sql::channel, lone_hex)});

    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer pause(executor);
    // Bob's own next look comes no sooner than 500 ms after the look that
    // named his channel (his ticket refresh; the fallback poll is 0.5-1 s),
    // and that look came after the last query that did not see the channel:
    // a grant within 450 ms of that query is the notification's doing. A
    // loaded sanitizer run may stall one round that long: the best of three
    // counts. (The key is new each round: one hex is no prefix of another.)
    auto best = std::chrono::steady_clock::duration::max();
    for (int round = 0; round < 3 && best >= 450ms; ++round) {
      const AdvisoryKey key(fmt::format("{}-{}", base, round));
      const auto hex = key_hex(key);
      auto held = co_await alice.acquire(key, 30s, 1s);
      auto not_named_at = std::chrono::steady_clock::now();
      auto waiting = asio::co_spawn(executor, acquire_optional(bob, key), asio::use_future);
      // Bob's ticket row names his channel once his listening connection is up.
      std::string channel, ticket;
      for (const auto give_up = not_named_at + 20s; channel.empty() && std::chrono::steady_clock::now() < give_up;) {
        pause.expires_after(1ms);
        co_await pause.async_wait(asio::use_awaitable);
        const auto asked_at = std::chrono::steady_clock::now();
        channel = postgres_admin(conninfo, fmt::format("SELECT channel FROM lockstore_waiters WHERE key = '\\x{}'", hex));
        if (channel.empty()) not_named_at = asked_at;
      }
      REQUIRE_FALSE(channel.empty());
      CHECK(channel.rfind("lockstore_w", 0) == 0);
      ticket = postgres_admin(conninfo, fmt::format("SELECT ticket FROM lockstore_waiters WHERE key = '\\x{}'", hex));
      shared.listen(channel);
      const auto released_at = std::chrono::steady_clock::now();
      co_await alice.release(std::move(held));
      const bool ready = co_await ready_within_20s(waiting);
      const auto woken_at = std::chrono::steady_clock::now();
      REQUIRE(ready);
      auto bobs = waiting.get();
      REQUIRE(bobs.has_value());
      INFO("round " << round << ": bob held the key "
                    << std::chrono::duration_cast<std::chrono::milliseconds>(woken_at - released_at).count()
                    << " ms after the release");
      best = std::min(best, woken_at - not_named_at);
      const auto told = shared.received(hex, 1000ms);
      REQUIRE(told.size() == 1);  // not on the shared channel
      CHECK(told[0] == fmt::format("{} {}:{}", channel, hex, ticket));
      co_await bob.release(std::move(*bobs));
      // Bob's ticket went with the grant.
      CHECK(shared.received(hex, 1000ms) == std::vector<std::string>{fmt::format("{} {}", detail::postgres_sql::channel, hex)});
    }
    INFO("best round: bob held the key " << std::chrono::duration_cast<std::chrono::milliseconds>(best).count()
                                         << " ms after his ticket was last seen without his channel");
    CHECK(best < 450ms);  // by the notification, not a look of his own
  });
}

TEST_CASE("PostgreSQL: a malformed conninfo and an unreachable server give clear errors quickly", "[postgres]") {
  run([&]() -> asio::awaitable<void> {
    try {
      co_await PostgresLock::connect("host=127.0.0.1 port", "x");
      FAIL("a malformed conninfo was accepted");
    } catch (const Error& error) {
      CHECK(error.code() == errc::invalid_argument);
    }
    try {
      co_await PostgresLock::connect("host=127.0.0.1 nonsense=1", "x");
      FAIL("an unknown conninfo keyword was accepted");
    } catch (const Error& error) {
      CHECK(error.code() == errc::invalid_argument);
      CHECK(std::string(error.what()).find("nonsense") != std::string::npos);
    }
    // A port nothing listens on: refused at once.
    const auto port = [] {
      asio::io_context context;
      asio::ip::tcp::acceptor probe(context, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
      return probe.local_endpoint().port();
    }();
    const auto started = std::chrono::steady_clock::now();
    try {
      co_await PostgresLock::connect(fmt::format("host=127.0.0.1 port={} user=postgres connect_timeout=3", port), "x");
      FAIL("connecting to a closed port succeeded");
    } catch (const Error& error) {
      CHECK(error.code() == errc::backend_failure);
      CHECK(std::string(error.what()).find(fmt::format("127.0.0.1:{}", port)) != std::string::npos);
    }
    CHECK(std::chrono::steady_clock::now() - started < 4s);
  });
}

TEST_CASE("PostgreSQL: a server that accepts but never answers times out naming host and port", "[postgres]") {
  asio::io_context context;
  asio::ip::tcp::acceptor silent(context, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = silent.local_endpoint().port();
  run([&]() -> asio::awaitable<void> {
    const auto started = std::chrono::steady_clock::now();
    try {
      co_await PostgresLock::connect(fmt::format("host=127.0.0.1 port={} user=postgres connect_timeout=2", port), "x");
      FAIL("connecting to a silent server succeeded");
    } catch (const Error& error) {
      CHECK(error.code() == errc::backend_failure);
      CHECK(std::string(error.what()).find(fmt::format("127.0.0.1:{}", port)) != std::string::npos);
      CHECK(std::string(error.what()).find("no answer within 2000 ms") != std::string::npos);
    }
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(took >= 1900ms);
    CHECK(took < 5s);
  });
}

TEST_CASE("PostgreSQL: a lease table from a newer lockstore is refused", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  run([&]() -> asio::awaitable<void> {
    auto first = co_await PostgresLock::connect(conninfo, "first");  // creates the tables
  });
  postgres_admin(conninfo, "UPDATE lockstore_schema SET version = 99");
  run([&]() -> asio::awaitable<void> {
    try {
      co_await PostgresLock::connect(conninfo, "second");
      FAIL("a newer schema was accepted");
    } catch (const Error& error) {
      CHECK(error.code() == errc::unsupported_schema);
      CHECK(std::string(error.what()).find("99") != std::string::npos);
      CHECK(std::string(error.what()).find(fmt::format("supports {}", detail::postgres_sql::schema_version)) !=
            std::string::npos);
    }
  });
}

TEST_CASE("PostgreSQL: a version 1 lease table gains the waiter queue and keeps its leases", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  std::uint64_t fence = 0;
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await PostgresLock::connect(conninfo, "old");
    auto guard = co_await lock.acquire(AdvisoryKey("kept"), 30s, 1s);
    fence = guard.fence();
    co_await lock.release(std::move(guard));
  });
  // What version 1 created: no waiter table.
  postgres_admin(conninfo, "DROP TABLE lockstore_waiters; UPDATE lockstore_schema SET version = 1");
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await PostgresLock::connect(conninfo, "new");
    auto held = co_await lock.acquire(AdvisoryKey("kept"), 30s, 1s);
    CHECK(held.fence() > fence);  // the fence kept growing through the upgrade
    co_await lock.release(std::move(held));
  });
  CHECK(postgres_admin(conninfo, "SELECT max(version) FROM lockstore_schema") == std::to_string(detail::postgres_sql::schema_version));
}

TEST_CASE("PostgreSQL: a version 2 waiter table without the channel column (lockstore 0.2.0) gains it in place", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  run([&]() -> asio::awaitable<void> { co_await PostgresLock::connect(conninfo, "first"); });
  postgres_admin(conninfo, "ALTER TABLE lockstore_waiters DROP COLUMN channel");
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await PostgresLock::connect(conninfo, "alice");
    auto bob = co_await PostgresLock::connect(conninfo, "bob");
    auto held = co_await alice.acquire(AdvisoryKey("kept"), 30s, 1s);
    try {
      co_await bob.acquire(AdvisoryKey("kept"), 30s, 200ms);
      FAIL("bob acquired a held key");
    } catch (const Error& error) {
      CHECK(error.code() == errc::timeout);
    }
    co_await alice.release(std::move(held));
  });
  CHECK(postgres_admin(conninfo, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'lockstore_waiters' "
                                 "AND column_name = 'channel' AND table_schema = current_schema()") == "1");
  CHECK(postgres_admin(conninfo, "SELECT max(version) FROM lockstore_schema") == "2");
}

TEST_CASE("PostgreSQL: a terminated backend gives connection_lost, and the next call reconnects", "[postgres][fault]") {
  PrivateServer server("postgres");
  const auto conninfo = server.conninfo();
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await PostgresLock::connect(conninfo, "victim");
    auto guard = co_await lock.acquire(AdvisoryKey("held"), 30s, 1s);
    postgres_admin(conninfo,
                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
    try {
      co_await lock.extend(guard, 30s);
      FAIL("extend on a terminated connection succeeded");
    } catch (const Error& error) {
      CHECK(error.code() == errc::connection_lost);
      CHECK(std::string(error.what()).find(fmt::format("127.0.0.1:{}", server.port())) != std::string::npos);
    }
    // The lease is still in the table: the next call reconnects and sees it.
    const bool extended = co_await lock.extend(guard, 30s);
    CHECK(extended);
    auto other = co_await PostgresLock::connect(conninfo, "other");
    auto refused = co_await other.try_acquire(AdvisoryKey("held"), 1s);
    CHECK_FALSE(refused.has_value());
    co_await lock.release(std::move(guard));
    auto taken = co_await other.try_acquire(AdvisoryKey("held"), 1s);
    REQUIRE(taken.has_value());
    co_await other.release(std::move(*taken));
  });
}

TEST_CASE("PostgreSQL: a waiter whose connection is terminated gets connection_lost", "[postgres][fault]") {
  PrivateServer server("postgres");
  const auto conninfo = server.conninfo();
  run([&]() -> asio::awaitable<void> {
    auto holder = co_await PostgresLock::connect(conninfo, "holder");
    auto held = co_await holder.acquire(AdvisoryKey("k"), 30s, 1s);
    auto waiter = co_await PostgresLock::connect(conninfo, "waiter");
    // Started now (use_future), not when awaited, so that it is waiting when
    // the connections are terminated.
    auto executor = co_await asio::this_coro::executor;
    const AdvisoryKey key("k");
    auto waiting = asio::co_spawn(executor, acquire_optional(waiter, key), asio::use_future);
    // The waiter is queued (and listening) once its ticket names its channel.
    asio::steady_timer pause(executor);
    std::string channel;
    for (const auto give_up = std::chrono::steady_clock::now() + 20s;
         channel.empty() && std::chrono::steady_clock::now() < give_up;) {
      pause.expires_after(1ms);
      co_await pause.async_wait(asio::use_awaitable);
      channel = postgres_admin(conninfo, fmt::format("SELECT channel FROM lockstore_waiters WHERE key = '\\x{}'", key_hex(key)));
    }
    REQUIRE_FALSE(channel.empty());
    postgres_admin(conninfo,
                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
    // The waiter's next look (at the latest its 500 ms ticket refresh) finds
    // its connection gone.
    const bool ready = co_await ready_within_20s(waiting);
    REQUIRE(ready);
    try {
      auto acquired = waiting.get();
      if (acquired) acquired->mark_released();
      FAIL("the waiter acquired a lease that was never released");
    } catch (const Error& error) {
      CHECK(error.code() == errc::connection_lost);
    }
    held.mark_released();  // its connection is gone too; the lease stays in the table until its TTL
  });
}

TEST_CASE("PostgreSQL: fences keep growing across a server restart", "[postgres][fault]") {
  PrivateServer server("postgres");
  const auto conninfo = server.conninfo();
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await PostgresLock::connect(conninfo, "first");
    // A TTL that outlasts a restart on a loaded machine, so the lease is
    // still live when the second client asks.
    auto before = co_await lock.acquire(AdvisoryKey("fenced"), 5s, 1s);
    const auto first_fence = before.fence();
    server.restart();
    // The first call on the old connection reports it lost; the guard it
    // took is gone with it (release takes the guard), so the lease stays in
    // the table, which survived the restart, until its TTL.
    {
      LogCapture log;
      try {
        co_await lock.release(std::move(before));
        FAIL("release over a connection the restart closed succeeded");
      } catch (const Error& error) {
        CHECK(error.code() == errc::connection_lost);
      }
      CHECK(log.count_containing("without release") == 1);
    }
    // The same lock recovers on its next call: it reconnects to the restarted server.
    auto elsewhere = co_await lock.try_acquire(AdvisoryKey("elsewhere"), 5s);
    REQUIRE(elsewhere.has_value());
    CHECK(elsewhere->fence() >= 1);
    co_await lock.release(std::move(*elsewhere));
    auto second = co_await PostgresLock::connect(conninfo, "second");
    auto refused = co_await second.try_acquire(AdvisoryKey("fenced"), 30s);
    CHECK_FALSE(refused.has_value());
    if (refused) co_await second.release(std::move(*refused));
    auto after = co_await second.acquire(AdvisoryKey("fenced"), 30s, 15s);  // after the 5 s TTL
    CHECK(after.fence() > first_fence);
    co_await second.release(std::move(after));
  });
}

TEST_CASE("PostgreSQL: a holder cut off by a partition stops its body before a direct client gets the key",
          "[postgres][fault][partition]") {
  const auto direct_conninfo = fresh_postgres_schema();
  PartitionProxy proxy(postgres_port());
  // The same schema, through the proxy (a later host/port wins in a conninfo).
  const auto through_conninfo = fmt::format("{} host=127.0.0.1 port={} connect_timeout=2", direct_conninfo, proxy.port());
  check_partitioned_session_stops_first(
      proxy, [&](std::string owner) { return PostgresLock::connect(through_conninfo, std::move(owner)); },
      [&](std::string owner) { return PostgresLock::connect(direct_conninfo, std::move(owner)); });
}

#ifdef LOCKSTORE_TOOL
TEST_CASE("PostgreSQL: lockstore run behind a partition signals its command before a direct client gets the key",
          "[postgres][fault][partition][cli]") {
  PartitionProxy proxy(postgres_port());
  const auto key = fmt::format("partitioned-run-{:016x}", detail::ThreadRandom::next());
  const auto direct_conninfo = postgres_conninfo();
  check_partitioned_run_stops_first(
      proxy, LOCKSTORE_TOOL, fmt::format("postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=2", proxy.port()), key,
      [&](std::string owner) { return PostgresLock::connect(direct_conninfo, std::move(owner)); });
}
#endif

namespace {

struct PostgresNotes {
  std::string conninfo = fresh_postgres_schema();
  PostgresNotes() { postgres_admin(conninfo, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL UNIQUE)"); }
  std::string count() const { return postgres_admin(conninfo, "SELECT count(*) FROM notes"); }
  asio::awaitable<PostgresLock> make_lock(std::string owner) {
    auto connecting = PostgresLock::connect(conninfo, std::move(owner));
    co_return co_await std::move(connecting);
  }
  asio::awaitable<void> write(PostgresLock& lock, const LockGuard& guard, std::string value) {
    std::vector<SqlStatement> insert(1);
    insert[0].sql = "INSERT INTO notes (body) VALUES ($1)";
    insert[0].params.emplace_back(std::move(value));
    auto writing = lock.fenced(guard, std::move(insert));
    co_await std::move(writing);
  }
};

}  // namespace

TEST_CASE("PostgreSQL: a fenced write commits in one transaction while the lease is live and writes nothing once it "
          "is lost",
          "[postgres][fenced]") {
  PostgresNotes notes;
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await notes.make_lock("writer");
    auto other = co_await notes.make_lock("other");
    const AdvisoryKey key("invoice:42");
    auto guard = co_await lock.acquire(key, 30s, 5s);
    std::vector<SqlStatement> statements(3);
    statements[0].sql = "INSERT INTO notes (body) VALUES ($1), ($2) RETURNING body";
    statements[0].params.emplace_back(std::string("a"));
    statements[0].params.emplace_back(std::string("b"));
    statements[1].sql = "UPDATE notes SET body = body || $1 WHERE body = 'a'";
    statements[1].params.emplace_back(std::string("!"));
    statements[2].sql = "SELECT count(*), $1::bigint, $2::float8, $3::bytea, NULL FROM notes";
    statements[2].params.emplace_back(std::int64_t{7});
    statements[2].params.emplace_back(1.5);
    statements[2].params.emplace_back(SqlBlob{std::string("\x01x", 2)});
    auto writing = lock.fenced(guard, std::move(statements));
    const auto results = co_await std::move(writing);
    REQUIRE(results.size() == 3);
    CHECK(results[0].changed == 2);
    REQUIRE(results[0].rows.size() == 2);
    CHECK(std::get<std::string>(results[0].rows[1][0]) == "b");
    CHECK(results[1].changed == 1);
    CHECK(results[2].changed == 0);
    REQUIRE(results[2].rows.size() == 1);
    CHECK(std::get<std::string>(results[2].rows[0][0]) == "2");
    CHECK(std::get<std::string>(results[2].rows[0][1]) == "7");
    CHECK(std::get<std::string>(results[2].rows[0][2]) == "1.5");
    CHECK(std::get<std::string>(results[2].rows[0][3]) == "\\x0178");
    CHECK(std::holds_alternative<std::nullptr_t>(results[2].rows[0][4]));

    // A failing statement rolls the earlier ones back.
    std::vector<SqlStatement> failing(2);
    failing[0].sql = "INSERT INTO notes (body) VALUES ('c')";
    failing[1].sql = "INSERT INTO notes (body) VALUES ('b')";  // UNIQUE
    std::string message;
    auto unique_checking = fenced_error(lock, guard, std::move(failing), message);
    const auto unique = co_await std::move(unique_checking);
    CHECK(unique == errc::backend_failure);
    CHECK_THAT(message, Catch::Contains("statement 1") && Catch::Contains("23505"));
    CHECK(notes.count() == "2");

    // What would end the transaction early, change the session or hang it
    // is refused before anything is sent, however it is spelled.
    static constexpr std::array<const char*, 12> escapes = {
        "  /* sneaky */ COMMIT",     ";COMMIT",       "; ;commit",       "/* a /* nested */ */ COMMIT",
        "-- x\rCOMMIT",              "CALL p()",      ";DO $$BEGIN COMMIT; END$$", "SET search_path = elsewhere",
        "DEALLOCATE ALL",            "COPY notes TO STDOUT", "BEGIN",   "RESET ALL"};
    for (const char* escape : escapes) {
      std::vector<SqlStatement> committing(2);
      committing[0].sql = "INSERT INTO notes (body) VALUES ('d')";
      committing[1].sql = escape;
      auto control_checking = fenced_error(lock, guard, std::move(committing), message);
      const auto control = co_await std::move(control_checking);
      INFO(escape);
      CHECK(control == errc::invalid_argument);
      CHECK_THAT(message, Catch::Contains("is not one a fenced write runs"));
    }
    // A function that changes search_path: refused before anything is sent,
    // so lockstore's own statements still find their tables afterwards.
    std::vector<SqlStatement> session(2);
    session[0].sql = "INSERT INTO notes (body) VALUES ('e')";
    session[1].sql = "SELECT set_config('search_path', 'pg_catalog', false)";
    auto session_checking = fenced_error(lock, guard, std::move(session), message);
    const auto session_changed = co_await std::move(session_checking);
    CHECK(session_changed == errc::invalid_argument);
    CHECK_THAT(message, Catch::Contains("names set_config"));
    std::vector<SqlStatement> theirs(1);
    theirs[0].sql = "UPDATE Lockstore_Leases SET expires_at = now() + interval '1 day'";
    auto theirs_checking = fenced_error(lock, guard, std::move(theirs), message);
    const auto lockstore_tables = co_await std::move(theirs_checking);
    CHECK(lockstore_tables == errc::invalid_argument);
    CHECK_THAT(message, Catch::Contains("names lockstore_"));
    CHECK(notes.count() == "2");
    // The connection is still usable afterwards.
    const bool extended = co_await lock.extend(guard, 30s);
    CHECK(extended);
    co_await lock.release(std::move(guard));

    // Statements that outlast the lease: no other holder is granted before
    // they commit (the lease row stays locked), and the successor sees them.
    auto slow_guard = co_await lock.acquire(key, 200ms, 5s);
    std::vector<SqlStatement> slow(2);
    slow[0].sql = "SELECT pg_sleep(0.6)";
    slow[1].sql = "INSERT INTO notes (body) VALUES ('slow')";
    auto slow_writing = lock.fenced(slow_guard, std::move(slow));
    auto slow_done = asio::co_spawn(co_await asio::this_coro::executor, std::move(slow_writing), asio::use_future);
    co_await sleep_for(300ms);  // the lease has run out; the write is still running
    auto contender = co_await other.acquire(key, 30s, 5s);
    CHECK(notes.count() == "3");  // committed before the contender was granted
    for (const auto give_up = std::chrono::steady_clock::now() + 5s;
         slow_done.wait_for(0s) != std::future_status::ready && std::chrono::steady_clock::now() < give_up;)
      co_await sleep_for(5ms);
    REQUIRE(slow_done.wait_for(0s) == std::future_status::ready);
    CHECK(slow_done.get().size() == 2);
    co_await other.release(std::move(contender));
    co_await lock.release(std::move(slow_guard));

    // Expired, then taken by another holder: refused, nothing written.
    auto short_guard = co_await lock.acquire(key, 100ms, 5s);
    co_await sleep_for(250ms);
    std::vector<SqlStatement> late(1);
    late[0].sql = "INSERT INTO notes (body) VALUES ('late')";
    auto expired_checking = fenced_error(lock, short_guard, late, message);
    const auto expired = co_await std::move(expired_checking);
    CHECK(expired == errc::lock_lost);
    CHECK_THAT(message, Catch::Contains("nothing was written"));
    auto successor = co_await other.acquire(key, 30s, 5s);
    auto taken_checking = fenced_error(lock, short_guard, late, message);
    const auto taken = co_await std::move(taken_checking);
    CHECK(taken == errc::lock_lost);
    CHECK(notes.count() == "3");
    co_await other.release(std::move(successor));
    co_await lock.release(std::move(short_guard));
  });
}

TEST_CASE("PostgreSQL: a holder paused with SIGSTOP past its lease cannot make its fenced write and the successor's "
          "data stays",
          "[postgres][fenced][processes]") {
  TempDir dir;
  PostgresNotes notes;
  const auto outcome = run_zombie_holder(notes, dir.path(), AdvisoryKey("zombie key"), 300ms);
  CHECK(outcome == ZombieWrite::refused_lock_lost);
  CHECK(postgres_admin(notes.conninfo, "SELECT string_agg(body, ',') FROM notes") == "successor");
}

TEST_CASE("PostgreSQL: the fence gate admits a fence only when it is at least every fence admitted before",
          "[postgres][fenced][gate]") {
  PostgresNotes notes;
  run([&]() -> asio::awaitable<void> {
    auto lock = co_await notes.make_lock("gate");
    auto other = co_await notes.make_lock("gate-2");
    const bool first = co_await lock.admit("bucket/report.csv", 10);
    const bool same = co_await lock.admit("bucket/report.csv", 10);
    const bool larger = co_await other.admit("bucket/report.csv", 12);
    const bool smaller = co_await lock.admit("bucket/report.csv", 11);
    const bool independent = co_await lock.admit(std::string("other\0bytes", 11), 1);
    const bool huge = co_await lock.admit("big", (std::uint64_t{1} << 62) + 1);
    const bool below_huge = co_await lock.admit("big", std::uint64_t{1} << 62);
    CHECK(first);
    CHECK(same);
    CHECK(larger);
    CHECK_FALSE(smaller);
    CHECK(independent);
    CHECK(huge);
    CHECK_FALSE(below_huge);
  });
}

}  // namespace lockstore::test
