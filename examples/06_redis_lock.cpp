// 06: RedisLock. A lease on a Redis server, extended while the work runs,
// then released; a second owner is refused while it is held.
// Usage: example_06_redis_lock [HOST:PORT] (default: $LOCKSTORE_REDIS, else
// 127.0.0.1:6379).
#include <lockstore/redis.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <cstdlib>
#include <string>

using namespace std::chrono_literals;
namespace asio = boost::asio;

asio::awaitable<int> hold_and_extend(lockstore::RedisOptions options) {
  auto worker = co_await lockstore::RedisLock::connect(options, "worker-1");
  auto other = co_await lockstore::RedisLock::connect(options, "worker-2");
  const lockstore::AdvisoryKey key("example:invoice-42");

  auto guard = co_await worker.acquire(key, 2s, 5s);
  fmt::print("worker-1 holds '{}' with fence {}\n", key.str(), guard.fence());
  const bool extended = co_await worker.extend(guard, 2s);  // what with_lock does every ttl/3
  fmt::print("extended: {}\n", extended);
  auto refused = co_await other.try_acquire(key, 2s);
  fmt::print("worker-2 while it is held: {}\n", refused ? "granted (wrong!)" : "refused");
  co_await worker.release(std::move(guard));
  co_return extended && !refused ? 0 : 1;
}

int main(int argc, char** argv) {
  const char* from_environment = std::getenv("LOCKSTORE_REDIS");
  const std::string address = argc > 1 ? argv[1] : from_environment != nullptr ? from_environment : "127.0.0.1:6379";
  lockstore::RedisOptions options;
  const auto colon = address.rfind(':');
  options.host = address.substr(0, colon);
  if (colon != std::string::npos) options.port = static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)));
  options.key_prefix = "lockstore-example:";
  asio::io_context context;
  auto result = asio::co_spawn(context, hold_and_extend(options), asio::use_future);
  context.run();
  try {
    return result.get();
  } catch (const lockstore::Error& error) {
    fmt::print(stderr, "{}\n", error.what());
    return 1;
  }
}
