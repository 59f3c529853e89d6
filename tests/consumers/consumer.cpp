// A program as a user of lockstore writes it, built by each way of consuming
// lockstore (find_package, add_subdirectory, FetchContent, single headers).
// It takes and releases a SQLite lease twice and checks the fences grow.
#include <lockstore/lockstore.hpp>
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

static_assert(LOCKSTORE_VERSION == LOCKSTORE_VERSION_MAJOR * 10000 + LOCKSTORE_VERSION_MINOR * 100 + LOCKSTORE_VERSION_PATCH);

int main(int argc, char** argv) {
  namespace asio = boost::asio;
  using namespace std::chrono_literals;
  const std::filesystem::path file = argc > 1 ? argv[1] : "consumer.db";
  asio::io_context context;
  auto done = asio::co_spawn(context, [&]() -> asio::awaitable<int> {
    lockstore::SqliteLock lock(co_await lockstore::SqliteDatabase::open(file), "consumer");
    auto first = co_await lock.acquire(lockstore::AdvisoryKey("consumer"), 5s, 5s);
    const auto first_fence = first.fence();
    co_await lock.release(std::move(first));
    auto second = co_await lock.acquire(lockstore::AdvisoryKey("consumer"), 5s, 5s);
    const bool grew = second.fence() > first_fence;
    co_await lock.release(std::move(second));
    co_return grew ? 0 : 1;
  }, asio::use_future);
  context.run();
  const int status = done.get();
  fmt::print("lockstore {} consumer: {}\n", LOCKSTORE_VERSION_STRING, status == 0 ? "ok" : "fences did not grow");
  return status;
}
