// 03: with_session_lock. An agent turn runs under its session's lease,
// renewed while it runs and released afterwards, even when the turn throws.
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <filesystem>

using namespace std::chrono_literals;
namespace asio = boost::asio;

asio::awaitable<int> run_turns(std::filesystem::path path) {
  lockstore::SqliteLock lock(co_await lockstore::SqliteDatabase::open(path), "agent-runtime-1");
  const lockstore::TenantId tenant("acme");

  lockstore::LockOptions options;
  options.ttl = 300ms;  // renewed every 100 ms while the turn runs
  const std::string reply = co_await lockstore::with_session_lock(lock, tenant, "thread-42", [&]() -> asio::awaitable<std::string> {
    asio::steady_timer thinking(co_await asio::this_coro::executor, 500ms);  // longer than the TTL
    co_await thinking.async_wait(asio::use_awaitable);
    co_return std::string("the answer is 42");
  }, options);
  fmt::print("turn finished: {}\n", reply);

  try {
    co_await lockstore::with_session_lock(lock, tenant, "thread-42", []() -> asio::awaitable<void> {
      throw std::runtime_error("tool call failed");
      co_return;
    });
  } catch (const std::runtime_error& error) {
    fmt::print("turn failed: {} (lease released anyway)\n", error.what());
  }

  auto leases = co_await lock.list();
  fmt::print("leases still held: {}\n", leases.size());
  co_return leases.empty() ? 0 : 1;
}

int main() {
  // A directory of its own: the database, its WAL files and the wake file
  // (`-lockstore-wake`) all go when it does.
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("lockstore-example-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto path = dir / "locks.db";
  asio::io_context context;
  auto result = asio::co_spawn(context, run_turns(path), asio::use_future);
  context.run();
  const int status = result.get();
  std::filesystem::remove_all(dir);
  return status;
}
