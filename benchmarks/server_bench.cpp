// server_bench: PostgresLock and RedisLock against their raw clients on the
// same server in the same run, one JSON line per measurement.
//   - uncontended acquire+release pairs by one client: PostgresLock vs raw
//     blocking libpq running the same prepared statements; RedisLock vs raw
//     blocking hiredis doing SET NX PX + EVAL token-checked delete;
//   - handoff latency across processes (release -> the waiter holds it).
// Servers: --postgres CONNINFO --redis HOST:PORT, or $LOCKSTORE_TEST_POSTGRES
// and $LOCKSTORE_TEST_REDIS (scripts/bench.sh starts throwaway ones).
// `--smoke` runs tiny counts; it never decides a test's outcome by time.
// `--backends postgres,redis`, `--sections pairs,held,handoff` and
// `--rounds N` pick a part (default: all, 7 rounds).
#include "bench_support.hpp"
#include "server_settings.hpp"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <lockstore/postgres.hpp>
#include <lockstore/redis.hpp>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

using namespace lockstore::bench;

namespace {

// --- PostgreSQL --------------------------------------------------------------

PGconn* blocking_connection(const std::string& conninfo) {
  PGconn* connection = PQconnectdb(conninfo.c_str());
  if (PQstatus(connection) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(connection));
  return connection;
}

void expect_ok(PGresult* result) {
  const auto status = PQresultStatus(result);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(result);
    PQclear(result);
    throw std::runtime_error(message);
  }
  PQclear(result);
}

// The same two prepared statements PostgresLock runs, on a blocking
// connection: the least a client can do for a lease pair here.
double raw_libpq_pairs(const std::string& conninfo, int pairs) {
  PGconn* connection = blocking_connection(conninfo);
  namespace sql = lockstore::detail::postgres_sql;
  expect_ok(PQprepare(connection, sql::acquire.name, sql::acquire.sql, 0, nullptr));
  expect_ok(PQprepare(connection, sql::release.name, sql::release.sql, 0, nullptr));
  const std::string key = "raw-bench", owner = "raw", ttl = "30000";
  const std::string ticket_lifetime = std::to_string(lockstore::detail::ticket_lifetime.count());
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    const std::string token = lockstore::random_token();
    // The queue ticket ceiling, ticket and channel are NULL, as for
    // try_acquire; the ticket lifetime is unused then.
    const char* acquire_values[] = {key.data(), owner.data(), token.data(), ttl.data(),
                                    nullptr,    nullptr,      nullptr,      ticket_lifetime.data()};
    const int acquire_lengths[] = {static_cast<int>(key.size()), static_cast<int>(owner.size()),
                                   static_cast<int>(token.size()), static_cast<int>(ttl.size()), 0, 0, 0,
                                   static_cast<int>(ticket_lifetime.size())};
    const int acquire_formats[] = {1, 1, 0, 0, 0, 0, 0, 0};
    expect_ok(PQexecPrepared(connection, sql::acquire.name, 8, acquire_values, acquire_lengths, acquire_formats, 0));
    const char* release_values[] = {key.data(), token.data()};
    const int release_lengths[] = {static_cast<int>(key.size()), static_cast<int>(token.size())};
    const int release_formats[] = {1, 0};
    expect_ok(PQexecPrepared(connection, sql::release.name, 2, release_values, release_lengths, release_formats, 0));
  }
  const double rate = pairs / seconds_since(start);
  PQfinish(connection);
  return rate;
}

// pg_try_advisory_lock + pg_advisory_unlock: the fewest round trips any
// PostgreSQL lock pair takes (a session lock: no TTL, no fence, gone with
// the connection).
double raw_advisory_pairs(const std::string& conninfo, int pairs) {
  PGconn* connection = blocking_connection(conninfo);
  const auto key = std::to_string(lockstore::AdvisoryKey("raw-advisory").hash64() >> 1);
  const char* values[] = {key.c_str()};
  expect_ok(PQprepare(connection, "try", "SELECT pg_try_advisory_lock($1::bigint)", 1, nullptr));
  expect_ok(PQprepare(connection, "unlock", "SELECT pg_advisory_unlock($1::bigint)", 1, nullptr));
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    expect_ok(PQexecPrepared(connection, "try", 1, values, nullptr, nullptr, 0));
    expect_ok(PQexecPrepared(connection, "unlock", 1, values, nullptr, nullptr, 0));
  }
  const double rate = pairs / seconds_since(start);
  PQfinish(connection);
  return rate;
}

void postgres_admin(const std::string& conninfo, const std::string& sql) {
  PGconn* connection = blocking_connection(conninfo);
  expect_ok(PQexec(connection, sql.c_str()));
  PQfinish(connection);
}

double postgres_lock_pairs(const std::string& conninfo, int pairs) {
  return run([&]() -> asio::awaitable<double> {
    auto connecting = lockstore::PostgresLock::connect(conninfo, "bench");
    auto lock = co_await std::move(connecting);
    co_return co_await timed_pairs(lock, "bench", pairs);
  });
}

// --- Redis -------------------------------------------------------------------

// SET NX PX, then a token-checked delete by script (EVALSHA), on a blocking
// hiredis connection: the classic minimal Redis lock pair.
double raw_hiredis_pairs(const lockstore::RedisOptions& options, int pairs) {
  redisContext* context = redisConnect(options.host.c_str(), options.port);
  if (context == nullptr || context->err != 0) throw std::runtime_error("hiredis cannot connect");
  const char* release_script =
      "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
  auto* loaded = static_cast<redisReply*>(redisCommand(context, "SCRIPT LOAD %s", release_script));
  const std::string sha(loaded->str, loaded->len);
  freeReplyObject(loaded);
  const std::string key = options.key_prefix + "raw";
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    const std::string token = lockstore::random_token();
    auto* set = static_cast<redisReply*>(redisCommand(context, "SET %b %b NX PX 30000", key.data(), key.size(),
                                                      token.data(), token.size()));
    if (set == nullptr || set->type != REDIS_REPLY_STATUS) throw std::runtime_error("raw SET NX failed");
    freeReplyObject(set);
    auto* del = static_cast<redisReply*>(redisCommand(context, "EVALSHA %s 1 %b %b", sha.c_str(), key.data(),
                                                      key.size(), token.data(), token.size()));
    if (del == nullptr || del->type != REDIS_REPLY_INTEGER || del->integer != 1) throw std::runtime_error("raw release failed");
    freeReplyObject(del);
  }
  const double rate = pairs / seconds_since(start);
  redisFree(context);
  return rate;
}

// lockstore's own acquire and release scripts on a blocking hiredis
// connection: separates the client's overhead from the scripts' server time.
double raw_hiredis_same_scripts_pairs(const lockstore::RedisOptions& options, int pairs) {
  redisContext* context = redisConnect(options.host.c_str(), options.port);
  if (context == nullptr || context->err != 0) throw std::runtime_error("hiredis cannot connect");
  namespace scripts = lockstore::detail::redis_scripts;
  auto load = [&](const char* script) {
    auto* loaded = static_cast<redisReply*>(redisCommand(context, "SCRIPT LOAD %s", script));
    std::string sha(loaded->str, loaded->len);
    freeReplyObject(loaded);
    return sha;
  };
  const auto acquire_sha = load(scripts::acquire), release_sha = load(scripts::release);
  const std::string lease = options.key_prefix + "lease:raw-scripts", fence = options.key_prefix + "fence:raw-scripts";
  const std::string queue = options.key_prefix + "queue:raw-scripts";
  const std::string expiries = options.key_prefix + "queue-expiry:raw-scripts";
  const std::string channel = options.key_prefix + "released", owner = "raw";
  const auto start = Clock::now();
  for (int i = 0; i < pairs; ++i) {
    const std::string token = lockstore::random_token();
    // As acquire() sends it: no ticket yet ('0'), tickets live 1.5 s.
    auto* granted = static_cast<redisReply*>(redisCommand(
        context, "EVALSHA %s 4 %b %b %b %b %b %b 30000 0 1500", acquire_sha.c_str(), lease.data(), lease.size(),
        fence.data(), fence.size(), queue.data(), queue.size(), expiries.data(), expiries.size(), token.data(),
        token.size(), owner.data(), owner.size()));
    if (granted == nullptr || granted->type != REDIS_REPLY_ARRAY) throw std::runtime_error("raw acquire script failed");
    freeReplyObject(granted);
    auto* released = static_cast<redisReply*>(redisCommand(
        context, "EVALSHA %s 3 %b %b %b token %b %b raw-scripts", release_sha.c_str(), lease.data(), lease.size(),
        queue.data(), queue.size(), expiries.data(), expiries.size(), token.data(), token.size(), channel.data(),
        channel.size()));
    if (released == nullptr || released->type != REDIS_REPLY_INTEGER || released->integer != 1)
      throw std::runtime_error("raw release script failed");
    freeReplyObject(released);
  }
  const double rate = pairs / seconds_since(start);
  redisFree(context);
  return rate;
}

double redis_lock_pairs(const lockstore::RedisOptions& options, int pairs) {
  return run([&]() -> asio::awaitable<double> {
    auto connecting = lockstore::RedisLock::connect(options, "bench");
    auto lock = co_await std::move(connecting);
    co_return co_await timed_pairs(lock, "bench", pairs);
  });
}

// Acquire cost with `held` other keys held: rows (PostgreSQL) or lease
// hashes (Redis) bulk-created on the server, removed afterwards.
void postgres_held_keys(const std::string& conninfo, const std::vector<int>& counts, int pairs) {
  for (const int held : counts) {
    postgres_admin(conninfo, fmt::format(
        "INSERT INTO lockstore_leases SELECT convert_to('held-' || i, 'UTF8'), 'bench-other'::bytea, md5(i::text), 1, "
        "now(), now() + interval '1 hour' FROM generate_series(1, {}) i ON CONFLICT DO NOTHING; ANALYZE lockstore_leases",
        held));
    print_held("postgres", held, postgres_lock_pairs(conninfo, pairs));
    postgres_admin(conninfo, "DELETE FROM lockstore_leases WHERE owner = 'bench-other'::bytea");
    // Now, not by autovacuum in the middle of a later measurement (the
    // contention runs that follow in scripts/bench.sh).
    postgres_admin(conninfo, "VACUUM ANALYZE lockstore_leases");
  }
}

void redis_held_keys(const lockstore::RedisOptions& options, const std::vector<int>& counts, int pairs) {
  redisContext* context = redisConnect(options.host.c_str(), options.port);
  if (context == nullptr || context->err != 0) throw std::runtime_error("hiredis cannot connect");
  const char* fill =
      "for i = 1, tonumber(ARGV[1]) do local k = KEYS[1] .. i "
      "redis.call('SET', k, 'x 1 0 bench-other', 'PX', 3600000) end";
  const char* empty = "for i = 1, tonumber(ARGV[1]) do redis.call('UNLINK', KEYS[1] .. i) end";
  const std::string base = options.key_prefix + "lease:held-";
  for (const int held : counts) {
    auto* filled = static_cast<redisReply*>(redisCommand(context, "EVAL %s 1 %s %d", fill, base.c_str(), held));
    if (filled == nullptr || filled->type == REDIS_REPLY_ERROR) throw std::runtime_error("filling Redis failed");
    freeReplyObject(filled);
    print_held("redis", held, redis_lock_pairs(options, pairs));
    auto* emptied = static_cast<redisReply*>(redisCommand(context, "EVAL %s 1 %s %d", empty, base.c_str(), held));
    if (emptied != nullptr) freeReplyObject(emptied);
  }
  redisFree(context);
}

// Loopback round trips on a shared 2-core machine drift by 2x within
// seconds, so the baseline and lockstore run in alternating rounds and the
// medians are compared.
template <class Raw, class Ours>
void compare_pairs(const char* backend, const char* baseline, int rounds, int pairs, Raw raw, Ours ours) {
  std::vector<double> raw_rates, our_rates;
  for (int round = 0; round < rounds; ++round) {
    raw_rates.push_back(raw(pairs));
    our_rates.push_back(ours(pairs));
  }
  print_pairs(backend, percentile(our_rates, 0.5), baseline, percentile(raw_rates, 0.5));
}

}  // namespace

int main(int argc, char** argv) try {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  const bool smoke = std::find(args.begin(), args.end(), "--smoke") != args.end();
  const auto backends = split(option(args, "--backends", "postgres,redis"));
  const auto sections = split(option(args, "--sections", "pairs,held,handoff"));
  auto wanted = [&](const std::string& backend, const std::string& section) {
    return std::find(backends.begin(), backends.end(), backend) != backends.end() &&
           std::find(sections.begin(), sections.end(), section) != sections.end();
  };
  const int pairs = smoke ? 50 : 1500;
  const int handoffs = smoke ? 10 : 1000;
  const int rounds = std::stoi(option(args, "--rounds", smoke ? "1" : "7"));
  const std::vector<int> held_counts = smoke ? std::vector<int>{10, 100} : std::vector<int>{10, 10'000, 1'000'000};

  if (std::find(backends.begin(), backends.end(), "postgres") != backends.end()) {
    const auto conninfo = setting(args, "--postgres", "LOCKSTORE_TEST_POSTGRES");
    // Creates the lease table, so the raw client finds it.
    run([&]() -> asio::awaitable<void> { co_await lockstore::PostgresLock::connect(conninfo, "setup"); });
    if (wanted("postgres", "pairs")) {
      compare_pairs("postgres", "raw_libpq_same_statements", rounds, pairs,
                    [&](int n) { return raw_libpq_pairs(conninfo, n); },
                    [&](int n) { return postgres_lock_pairs(conninfo, n); });
      compare_pairs("postgres", "raw_libpq_try_advisory_lock_unlock", rounds, pairs,
                    [&](int n) { return raw_advisory_pairs(conninfo, n); },
                    [&](int n) { return postgres_lock_pairs(conninfo, n); });
    }
    if (wanted("postgres", "held")) postgres_held_keys(conninfo, held_counts, pairs);
    if (wanted("postgres", "handoff"))
      handoff_processes("postgres", handoffs, [&](std::string owner) -> asio::awaitable<lockstore::PostgresLock> {
        auto connecting = lockstore::PostgresLock::connect(conninfo, std::move(owner));
        co_return co_await std::move(connecting);
      });
  }
  if (std::find(backends.begin(), backends.end(), "redis") != backends.end()) {
    const auto redis = redis_options(setting(args, "--redis", "LOCKSTORE_TEST_REDIS"));
    if (wanted("redis", "pairs")) {
      compare_pairs("redis", "raw_hiredis_set_nx_px_eval", rounds, pairs,
                    [&](int n) { return raw_hiredis_pairs(redis, n); },
                    [&](int n) { return redis_lock_pairs(redis, n); });
      compare_pairs("redis", "raw_hiredis_same_scripts", rounds, pairs,
                    [&](int n) { return raw_hiredis_same_scripts_pairs(redis, n); },
                    [&](int n) { return redis_lock_pairs(redis, n); });
    }
    if (wanted("redis", "held")) redis_held_keys(redis, held_counts, pairs);
    if (wanted("redis", "handoff"))
      handoff_processes("redis", handoffs, [&](std::string owner) -> asio::awaitable<lockstore::RedisLock> {
        auto connecting = lockstore::RedisLock::connect(redis, std::move(owner));
        co_return co_await std::move(connecting);
      });
  }
  return 0;
} catch (const std::exception& error) {
  fmt::print(stderr, "server_bench: {}\n", error.what());
  return 1;
}
