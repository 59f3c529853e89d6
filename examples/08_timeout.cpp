// 08: when the lock does not come in time. acquire() waits up to its
// deadline, then throws lockstore::Error with errc::timeout (nothing held,
// nothing left queued); with as_tuple the same outcome is an error code and
// an empty guard instead of an exception.
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <fmt/format.h>

#include <filesystem>

using namespace std::chrono_literals;
namespace asio = boost::asio;

asio::awaitable<int> wait_for_a_busy_lock(std::filesystem::path path) {
  auto database = co_await lockstore::SqliteDatabase::open(path);
  lockstore::SqliteLock busy(database, "long-job");
  lockstore::SqliteLock impatient(database, "impatient");
  const lockstore::AdvisoryKey key("example:busy");
  auto held = co_await busy.acquire(key, 30s, 1s);

  int timeouts = 0;
  try {
    auto never = co_await impatient.acquire(key, 30s, 200ms);
    co_await impatient.release(std::move(never));
  } catch (const lockstore::Error& error) {
    if (error.code() != lockstore::errc::timeout) throw;  // a broken database is not a busy lock
    fmt::print("gave up after 200 ms: {}\n", error.message());
    ++timeouts;
  }

  auto [code, guard] = co_await impatient.acquire(key, 30s, 200ms, asio::as_tuple(asio::use_awaitable));
  if (code == lockstore::errc::timeout) {
    fmt::print("as an error code: {} (the guard holds nothing: {})\n", code.message(), guard.released());
    ++timeouts;
  }

  co_await busy.release(std::move(held));
  co_return timeouts == 2 ? 0 : 1;
}

int main() {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("lockstore-timeout-{}", ::getpid());
  std::filesystem::create_directories(dir);
  asio::io_context context;
  auto result = asio::co_spawn(context, wait_for_a_busy_lock(dir / "locks.db"), asio::use_future);
  context.run();
  const int status = result.get();
  std::filesystem::remove_all(dir);
  return status;
}
