// 07: checking the fence at the protected resource. A lease can end while
// its holder is paused (a GC pause, a stalled call); the holder does not
// know. The resource it writes to is what stops it: each write carries the
// guard's fence, and the resource refuses a fence lower than one it has
// already seen. Here holder A pauses past its TTL, B takes the lock and
// writes, and A's late write is refused.
#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <string>

using namespace std::chrono_literals;
namespace asio = boost::asio;

/// The protected resource: a document that remembers the largest fence it
/// accepted. In a real system this check lives in the service or the
/// database that is written (a `WHERE fence <= ?` condition, a header the
/// service compares), atomically with the write.
class FencedDocument {
 public:
  bool write(std::uint64_t fence, std::string text) {
    if (fence < highest_fence_) return false;
    highest_fence_ = fence;
    text_ = std::move(text);
    return true;
  }
  const std::string& text() const { return text_; }

 private:
  std::uint64_t highest_fence_ = 0;
  std::string text_;
};

asio::awaitable<int> zombie_holder(std::filesystem::path path) {
  auto database = co_await lockstore::SqliteDatabase::open(path);
  lockstore::SqliteLock a(database, "holder-a");
  lockstore::SqliteLock b(database, "holder-b");
  const lockstore::AdvisoryKey key("example:report");
  FencedDocument document;

  auto a_guard = co_await a.acquire(key, 200ms, 1s);
  fmt::print("A holds the lock (fence {}) and pauses past its 200 ms TTL\n", a_guard.fence());
  asio::steady_timer pause(co_await asio::this_coro::executor, 400ms);
  co_await pause.async_wait(asio::use_awaitable);

  auto b_guard = co_await b.acquire(key, 5s, 1s);  // A's lease has run out
  const bool b_wrote = document.write(b_guard.fence(), "written by B");
  fmt::print("B took the lock (fence {}) and wrote: {}\n", b_guard.fence(), b_wrote ? "accepted" : "refused");

  const bool a_wrote = document.write(a_guard.fence(), "written by A, too late");
  fmt::print("A wakes and writes with fence {}: {}\n", a_guard.fence(), a_wrote ? "accepted (wrong!)" : "refused");
  fmt::print("the document says: {}\n", document.text());

  co_await a.release(std::move(a_guard));  // a no-op: the lease is B's now
  co_await b.release(std::move(b_guard));
  co_return b_wrote && !a_wrote && document.text() == "written by B" ? 0 : 1;
}

int main() {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("lockstore-fence-{}", ::getpid());
  std::filesystem::create_directories(dir);
  asio::io_context context;
  auto result = asio::co_spawn(context, zombie_holder(dir / "locks.db"), asio::use_future);
  context.run();
  const int status = result.get();
  std::filesystem::remove_all(dir);
  return status;
}
