// PostgresLock against a real PostgreSQL server: the conformance suite, then
// processes, NOTIFY wake-ups, lost connections, a server restart, bad
// conninfo and unreachable servers.
#include "support/helpers.hpp"
#include "support/operator_checks.hpp"
#include "support/process_checks.hpp"
#include "support/servers.hpp"

#include <catch2/catch.hpp>
#include <fmt/ranges.h>
#include <libpq-fe.h>
#include <lockstore/postgres.hpp>
#include <poll.h>

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
};

}  // namespace lockstore::test

#define LOCKSTORE_CONFORMANCE_FIXTURE lockstore::test::PostgresFixture
#include "conformance/lock_conformance.hpp"

namespace lockstore::test {

TEST_CASE("PostgreSQL: owners sharing one connection wake each other at once", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await PostgresLock::connect(conninfo, "alice");
    auto bob = alice.with_owner("bob");
    CHECK(bob.owner() == "bob");
    auto held = co_await alice.acquire(AdvisoryKey("shared"), 30s, 1s);
    const auto started = std::chrono::steady_clock::now();
    auto waiting = asio::co_spawn(
        co_await asio::this_coro::executor,
        [&]() -> asio::awaitable<std::optional<LockGuard>> { co_return co_await bob.acquire(AdvisoryKey("shared"), 30s, 10s); },
        asio::use_awaitable);
    co_await sleep_for(50ms);
    co_await alice.release(std::move(held));
    auto acquired = co_await std::move(waiting);
    REQUIRE(acquired.has_value());
    auto guard = std::move(*acquired);
    CHECK(std::chrono::steady_clock::now() - started < 900ms);  // not the 1 s fallback poll
    const auto leases = co_await alice.list();
    REQUIRE(leases.size() == 1);
    CHECK(leases[0].owner == "bob");
    co_await bob.release(std::move(guard));
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
  check_handoffs_across_processes([&](std::string owner) { return PostgresLock::connect(conninfo, std::move(owner)); }, 20, 100ms);
}

TEST_CASE("PostgreSQL: a waiter in another process is woken by NOTIFY, not by polling", "[postgres][process]") {
  const auto conninfo = fresh_postgres_schema();
  // The fallback poll is 0.5-1 s: only the notification is this fast.
  check_waiter_woken_across_processes([&](std::string owner) { return PostgresLock::connect(conninfo, std::move(owner)); }, std::chrono::milliseconds(250));
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

/// acquire() with a default-constructible result, for co_spawn(use_future).
asio::awaitable<std::optional<LockGuard>> acquire_optional(PostgresLock& lock, AdvisoryKey key) {
  auto acquiring = lock.acquire(std::move(key), 30s, 5s);
  co_return co_await std::move(acquiring);
}

TEST_CASE("PostgreSQL: a release tells only the next waiter's process, on its own channel, and everyone when no ticket is in sight", "[postgres]") {
  const auto conninfo = fresh_postgres_schema();
  const AdvisoryKey key(fmt::format("told-{:016x}", detail::ThreadRandom::next()));
  const auto hex = fmt::format("{:02x}", fmt::join(key.str(), ""));
  RawListener shared(conninfo);
  shared.listen(detail::postgres_sql::channel);
  run([&]() -> asio::awaitable<void> {
    auto alice = co_await PostgresLock::connect(conninfo, "alice");
    auto bob = co_await PostgresLock::connect(conninfo, "bob");
    auto alone = co_await alice.try_acquire(key, 30s);
    REQUIRE(alone.has_value());
    co_await alice.release(std::move(*alone));
    // No ticket in sight: everyone is told, with no ticket named.
    CHECK(shared.received(hex, 300ms) == std::vector<std::string>{fmt::format("{} {}", detail::postgres_sql::channel, hex)});

    auto held = co_await alice.acquire(key, 30s, 1s);
    auto executor = co_await asio::this_coro::executor;
    auto waiting = asio::co_spawn(executor, acquire_optional(bob, key), asio::use_future);
    asio::steady_timer pause(executor);
    // Bob's ticket row names his channel once his listening connection is up.
    std::string channel, ticket;
    for (int tries = 0; tries < 2000 && channel.empty(); ++tries) {
      pause.expires_after(1ms);
      co_await pause.async_wait(asio::use_awaitable);
      channel = postgres_admin(conninfo, fmt::format("SELECT channel FROM lockstore_waiters WHERE key = '\\x{}'", hex));
    }
    REQUIRE_FALSE(channel.empty());
    CHECK(channel.rfind("lockstore_w", 0) == 0);
    ticket = postgres_admin(conninfo, fmt::format("SELECT ticket FROM lockstore_waiters WHERE key = '\\x{}'", hex));
    shared.listen(channel);
    const auto released_at = std::chrono::steady_clock::now();
    co_await alice.release(std::move(held));
    while (waiting.wait_for(0s) != std::future_status::ready &&
           std::chrono::steady_clock::now() - released_at < 5s) {
      pause.expires_after(1ms);
      co_await pause.async_wait(asio::use_awaitable);
    }
    const auto woken_after = std::chrono::steady_clock::now() - released_at;
    auto bobs = waiting.get();
    REQUIRE(bobs.has_value());
    CHECK(woken_after < 250ms);  // by the notification: the fallback poll is 0.5-1 s
    const auto told = shared.received(hex, 200ms);
    REQUIRE(told.size() == 1);  // not on the shared channel
    CHECK(told[0] == fmt::format("{} {}:{}", channel, hex, ticket));
    co_await bob.release(std::move(*bobs));
    // Bob's ticket went with the grant.
    CHECK(shared.received(hex, 300ms) == std::vector<std::string>{fmt::format("{} {}", detail::postgres_sql::channel, hex)});
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
    CHECK(held.fence() == fence + 1);
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
    auto waiting = asio::co_spawn(
        co_await asio::this_coro::executor,
        [&]() -> asio::awaitable<std::optional<LockGuard>> { co_return co_await waiter.acquire(AdvisoryKey("k"), 30s, 10s); },
        asio::use_awaitable);
    co_await sleep_for(200ms);
    postgres_admin(conninfo,
                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
    // The waiter's next look (at the latest the 1 s fallback poll) finds its
    // connection gone.
    try {
      co_await std::move(waiting);
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
    auto before = co_await lock.acquire(AdvisoryKey("fenced"), 1s, 1s);
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
    auto after = co_await second.acquire(AdvisoryKey("fenced"), 30s, 5s);  // after the 1 s TTL
    CHECK(after.fence() > first_fence);
    co_await second.release(std::move(after));
  });
}

}  // namespace lockstore::test
