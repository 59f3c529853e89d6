// Conan test_package: the package's headers compile, link and run.
#include <lockstore/lockstore.hpp>
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

int main() {
  namespace asio = boost::asio;
  using namespace std::chrono_literals;
  asio::io_context context;
  auto done = asio::co_spawn(context, []() -> asio::awaitable<std::uint64_t> {
    lockstore::MemoryLock memory;
    auto guard = co_await memory.acquire(lockstore::AdvisoryKey("test_package"), 1s, 1s);
    const auto fence = guard.fence();
    co_await memory.release(std::move(guard));
    auto database = co_await lockstore::SqliteDatabase::open_memory();
    lockstore::SqliteLock lock(database, "test_package");
    auto held = co_await lock.try_acquire(lockstore::AdvisoryKey("test_package"), 1s);
    co_await lock.release(std::move(*held));
    co_return fence;
  }, asio::use_future);
  context.run();
  fmt::print("lockstore {} test_package: fence {}\n", LOCKSTORE_VERSION_STRING, done.get());
  return 0;
}
