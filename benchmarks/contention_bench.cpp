// contention_bench: N clients looping acquire -> release, for a fixed time,
// on one shared key or on a key each. MemoryLock clients are threads of this
// process; SQLite, PostgreSQL and Redis clients are processes, each with its
// own lock and connections. One JSON line per point:
//   pairs_per_s                 total acquire+release pairs per second
//   acquire_p50_us / p99 / max  time from acquire() to holding (the wait)
//   max_over_median             fairness: the longest wait over the median
//   per_client_min / max, jain  fairness: acquisitions per client (Jain's
//                               index, 1 = equal shares)
// The npm peers print the same lines (benchmarks/peers/bench.mjs).
//
//   contention_bench [--smoke] [--backends memory,sqlite,postgres,redis]
//                    [--workers 1,2,4,8,16] [--keys one,distinct] [--seconds S]
//                    [--postgres CONNINFO] [--redis HOST:PORT]
// A benchmark never decides a test's outcome by time; --smoke only checks
// that every mode still runs.
#include "bench_support.hpp"
#include "server_settings.hpp"

#include <lockstore/postgres.hpp>
#include <lockstore/redis.hpp>
#include <lockstore/sqlite.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <functional>
#include <new>
#include <numeric>
#include <sstream>
#include <thread>

using namespace lockstore::bench;

namespace {

constexpr int kMaxWorkers = 16;
constexpr int kSamplesPerWorker = 1 << 16;  // a ring: the latest waits of each worker

struct WorkerSlot {
  std::atomic<std::int64_t> acquisitions{0};
  std::atomic<int> failed{0};
  float wait_us[kSamplesPerWorker];
};

// Lives in shared memory (mmap before fork) or is shared by threads.
struct Board {
  std::atomic<int> ready{0};
  std::atomic<std::int64_t> start_ns{0};
  std::atomic<std::int64_t> stop_ns{0};
  WorkerSlot slots[kMaxWorkers];
};

struct Point {
  std::string backend;
  int workers;
  bool one_key;
  double seconds;
};

// One client: make its lock, say it is ready, wait for the start, then loop.
template <class MakeLock>
void client(Board& board, int index, const Point& point, MakeLock& make_lock) {
  auto& slot = board.slots[index];
  try {
    run([&]() -> asio::awaitable<void> {
      auto making = make_lock(fmt::format("client-{}", index));
      auto lock = co_await std::move(making);
      const lockstore::AdvisoryKey key(point.one_key ? std::string("contended") : fmt::format("own-{}", index));
      board.ready.fetch_add(1);
      while (board.start_ns.load() == 0) std::this_thread::sleep_for(100us);
      while (now_ns() < board.start_ns.load()) std::this_thread::yield();
      std::int64_t count = 0;
      while (now_ns() < board.stop_ns.load()) {
        const auto asked = now_ns();
        auto guard = co_await lock.acquire(key, 30s, 60s);
        slot.wait_us[count % kSamplesPerWorker] = static_cast<float>(now_ns() - asked) / 1000.0F;
        co_await lock.release(std::move(guard));
        slot.acquisitions.store(++count);
      }
    });
  } catch (const std::exception& error) {
    fmt::print(stderr, "contention_bench: client {} on {}: {}\n", index, point.backend, error.what());
    slot.failed = 1;
    board.ready.fetch_add(1);  // do not keep the others waiting for the start
  }
}

void start_when_ready(Board& board, int workers) {
  const auto give_up = Clock::now() + 60s;
  while (board.ready.load() < workers) {
    if (Clock::now() > give_up) throw std::runtime_error("clients did not get ready within 60 s");
    std::this_thread::sleep_for(1ms);
  }
}

void report(const Board& board, const Point& point) {
  std::vector<double> waits;
  std::vector<double> counts;
  std::int64_t total = 0;
  for (int i = 0; i < point.workers; ++i) {
    const auto& slot = board.slots[i];
    if (slot.failed.load() != 0) throw std::runtime_error(fmt::format("a {} client failed", point.backend));
    const auto count = slot.acquisitions.load();
    total += count;
    counts.push_back(static_cast<double>(count));
    const auto kept = std::min<std::int64_t>(count, kSamplesPerWorker);
    waits.insert(waits.end(), slot.wait_us, slot.wait_us + kept);
  }
  const double sum = std::accumulate(counts.begin(), counts.end(), 0.0);
  double squares = 0;
  for (const double count : counts) squares += count * count;
  const double jain = squares > 0 ? sum * sum / (static_cast<double>(counts.size()) * squares) : 0;
  const double median = percentile(waits, 0.5);
  const double longest = percentile(waits, 1.0);
  fmt::print("{{\"benchmark\":\"contention\",\"backend\":\"{}\",\"client\":\"lockstore\",\"workers\":{},"
             "\"keys\":\"{}\",\"seconds\":{:.2f},\"acquisitions\":{},\"pairs_per_s\":{:.0f},"
             "\"acquire_p50_us\":{:.1f},\"acquire_p99_us\":{:.1f},\"acquire_max_us\":{:.1f},"
             "\"max_over_median\":{:.2f},\"per_client_min\":{:.0f},\"per_client_max\":{:.0f},\"jain\":{:.3f}}}\n",
             point.backend, point.workers, point.one_key ? "one" : "distinct", point.seconds, total,
             static_cast<double>(total) / point.seconds, median, percentile(waits, 0.99), longest,
             median > 0 ? longest / median : 0, *std::min_element(counts.begin(), counts.end()),
             *std::max_element(counts.begin(), counts.end()), jain);
  std::fflush(stdout);
}

Board* new_shared_board() {
  void* memory = ::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw std::runtime_error("mmap failed");
  return new (memory) Board();
}

void set_clock(Board& board, const Point& point) {
  const auto start = now_ns() + 20'000'000;  // 20 ms for everyone to see it
  board.stop_ns = start + static_cast<std::int64_t>(point.seconds * 1e9);
  board.start_ns = start;
}

// Clients as processes, forked before any lock exists in this process.
template <class MakeLock>
void run_processes(const Point& point, MakeLock make_lock) {
  Board* board = new_shared_board();
  std::vector<pid_t> children;
  for (int i = 0; i < point.workers; ++i) {
    const pid_t child = ::fork();
    if (child == 0) {
      client(*board, i, point, make_lock);
      std::fflush(stderr);
      ::_exit(0);
    }
    children.push_back(child);
  }
  try {
    start_when_ready(*board, point.workers);
  } catch (...) {
    for (const pid_t child : children) ::kill(child, SIGKILL);
  }
  set_clock(*board, point);
  for (const pid_t child : children) ::waitpid(child, nullptr, 0);
  report(*board, point);
  ::munmap(board, sizeof(Board));
}

void run_threads(const Point& point) {
  auto board = std::make_unique<Board>();
  lockstore::MemoryLock shared;
  auto make_lock = [&](std::string) -> asio::awaitable<lockstore::MemoryLock> { co_return shared; };
  std::vector<std::thread> threads;
  for (int i = 0; i < point.workers; ++i)
    threads.emplace_back([&, i] { client(*board, i, point, make_lock); });
  start_when_ready(*board, point.workers);
  set_clock(*board, point);
  for (auto& thread : threads) thread.join();
  report(*board, point);
}

}  // namespace

int main(int argc, char** argv) try {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  const bool smoke = std::find(args.begin(), args.end(), "--smoke") != args.end();
  const auto backends = split(option(args, "--backends", "memory,sqlite,postgres,redis"));
  std::vector<int> worker_counts;
  for (const auto& count : split(option(args, "--workers", smoke ? "1,2" : "1,2,4,8,16"))) {
    const int workers = std::stoi(count);
    if (workers < 1 || workers > kMaxWorkers)
      throw std::runtime_error(fmt::format("--workers takes 1 to {}, not {}", kMaxWorkers, workers));
    worker_counts.push_back(workers);
  }
  const auto key_modes = split(option(args, "--keys", "one,distinct"));
  const double seconds = std::stod(option(args, "--seconds", smoke ? "0.1" : "2"));

  for (const auto& backend : backends) {
    std::function<void(const Point&)> measure;
    if (backend == "memory") {
      measure = run_threads;
    } else if (backend == "sqlite") {
      const auto path = fresh_file("contention.db");
      run([&]() -> asio::awaitable<void> { co_await lockstore::SqliteDatabase::open(path); });  // before fork
      measure = [path](const Point& point) {
        run_processes(point, [&](std::string owner) -> asio::awaitable<lockstore::SqliteLock> {
          co_return lockstore::SqliteLock(co_await lockstore::SqliteDatabase::open(path), std::move(owner));
        });
      };
    } else if (backend == "postgres") {
      const auto conninfo = setting(args, "--postgres", "LOCKSTORE_TEST_POSTGRES");
      run([&]() -> asio::awaitable<void> { co_await lockstore::PostgresLock::connect(conninfo, "setup"); });
      measure = [conninfo](const Point& point) {
        run_processes(point, [&](std::string owner) -> asio::awaitable<lockstore::PostgresLock> {
          auto connecting = lockstore::PostgresLock::connect(conninfo, std::move(owner));
          co_return co_await std::move(connecting);
        });
      };
    } else if (backend == "redis") {
      const auto options = redis_options(setting(args, "--redis", "LOCKSTORE_TEST_REDIS"));
      measure = [options](const Point& point) {
        run_processes(point, [&](std::string owner) -> asio::awaitable<lockstore::RedisLock> {
          auto connecting = lockstore::RedisLock::connect(options, std::move(owner));
          co_return co_await std::move(connecting);
        });
      };
    } else {
      throw std::runtime_error(fmt::format("unknown backend '{}' (memory, sqlite, postgres, redis)", backend));
    }
    for (const auto& keys : key_modes) {
      if (keys != "one" && keys != "distinct")
        throw std::runtime_error(fmt::format("--keys takes one and/or distinct, not '{}'", keys));
      for (const int workers : worker_counts) {
        if (keys == "distinct" && workers == 1) continue;  // the same as one key
        measure(Point{backend, workers, keys == "one", seconds});
      }
    }
  }
  return 0;
} catch (const std::exception& error) {
  fmt::print(stderr, "contention_bench: {}\n", error.what());
  return 1;
}
