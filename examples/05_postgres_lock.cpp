// 05: PostgresLock. Two owners on one PostgreSQL database: the second waits
// for the first's release and gets a larger fence.
// Usage: example_05_postgres_lock CONNINFO (a libpq connection string or
// postgres:// URL; default: $LOCKSTORE_POSTGRES, else host=localhost).
#include <lockstore/postgres.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <cstdlib>
#include <string>

using namespace std::chrono_literals;
namespace asio = boost::asio;

asio::awaitable<int> take_turns(std::string conninfo) {
  auto alice = co_await lockstore::PostgresLock::connect(conninfo, "alice");
  auto bob = co_await lockstore::PostgresLock::connect(conninfo, "bob");
  const lockstore::AdvisoryKey key("example:nightly-report");

  auto first = co_await alice.acquire(key, 10s, 5s);
  fmt::print("alice holds '{}' with fence {}\n", key.str(), first.fence());
  auto held = co_await bob.try_acquire(key, 10s);
  fmt::print("bob's try_acquire while alice holds it: {}\n", held ? "granted (wrong!)" : "refused");
  const auto first_fence = first.fence();
  co_await alice.release(std::move(first));

  auto second = co_await bob.acquire(key, 10s, 5s);
  fmt::print("bob holds it now with fence {}\n", second.fence());
  const bool larger = second.fence() > first_fence;
  co_await bob.release(std::move(second));
  co_return !held && larger ? 0 : 1;
}

int main(int argc, char** argv) {
  const char* from_environment = std::getenv("LOCKSTORE_POSTGRES");
  const std::string conninfo = argc > 1 ? argv[1] : from_environment != nullptr ? from_environment : "host=localhost";
  asio::io_context context;
  auto result = asio::co_spawn(context, take_turns(conninfo), asio::use_future);
  context.run();
  try {
    return result.get();
  } catch (const lockstore::Error& error) {
    fmt::print(stderr, "{}\n", error.what());
    return 1;
  }
}
