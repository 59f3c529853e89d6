// 02: SqliteLock across processes. Three forked processes share one SQLite
// file and increment a counter file under the lock; no increment is lost.
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace std::chrono_literals;
namespace asio = boost::asio;

asio::awaitable<void> increment(std::filesystem::path db_path, std::filesystem::path counter, int times) {
  // Open after fork: SQLite connections must not cross a fork.
  lockstore::SqliteLock lock(co_await lockstore::SqliteDatabase::open(db_path));
  for (int i = 0; i < times; ++i) {
    auto guard = co_await lock.acquire(lockstore::AdvisoryKey("counter"), 10s, 30s);
    int value = 0;
    std::ifstream(counter) >> value;
    std::ofstream(counter, std::ios::trunc) << value + 1;
    co_await lock.release(std::move(guard));
  }
}

int main() {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("lockstore-example-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto counter = dir / "counter.txt";
  std::ofstream(counter) << 0;

  constexpr int processes = 3, times = 50;
  for (int p = 0; p < processes; ++p) {
    if (::fork() == 0) {
      asio::io_context context;
      asio::co_spawn(context, increment(dir / "locks.db", counter, times), asio::detached);
      context.run();
      ::_exit(0);
    }
  }
  for (int p = 0; p < processes; ++p) ::wait(nullptr);

  int total = 0;
  std::ifstream(counter) >> total;
  fmt::print("counter = {} (expected {})\n", total, processes * times);
  std::filesystem::remove_all(dir);
  return total == processes * times ? 0 : 1;
}
