// 01: MemoryLock. Two workers on one io_context take turns on one key; the
// second waits and is woken the moment the first releases.
#include <lockstore/lockstore.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

using namespace std::chrono_literals;
namespace asio = boost::asio;

asio::awaitable<void> worker(lockstore::MemoryLock& lock, std::string name) {
  for (int turn = 0; turn < 3; ++turn) {
    auto guard = co_await lock.acquire(lockstore::AdvisoryKey("printer"), 5s, 10s);
    fmt::print("{} holds 'printer' (fence {})\n", name, guard.fence());
    asio::steady_timer work(co_await asio::this_coro::executor, 10ms);
    co_await work.async_wait(asio::use_awaitable);
    co_await lock.release(std::move(guard));
    asio::steady_timer other_work(co_await asio::this_coro::executor, 1ms);
    co_await other_work.async_wait(asio::use_awaitable);
  }
}

int main() {
  asio::io_context context;
  lockstore::MemoryLock lock;
  asio::co_spawn(context, worker(lock, "alpha"), asio::detached);
  asio::co_spawn(context, worker(lock, "beta"), asio::detached);
  context.run();
  return lock.held_count() == 0 ? 0 : 1;
}
