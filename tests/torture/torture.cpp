// lockstore_torture: exclusion, fencing and durability while workers are
// SIGKILLed (docs/RELIABILITY.md).
//
//   lockstore_torture locks --backend sqlite|postgres|redis|memory --dir DIR
//                           [--acquisitions N] [--workers N] [--ttl-ms N] [--seed N]
//   lockstore_torture store --dir DIR [--commits N] [--items N] [--workers N] [--seed N]
//   lockstore_torture fenced --backend sqlite|postgres|redis --dir DIR [--acquisitions N] [--workers N]
//                            [--ttl-ms N] [--seed N]
//
// `locks`: N worker processes (threads for memory) loop acquire -> ledger
// "enter" -> a random hold of up to 0.5 ms -> ledger "exit" -> release on one
// key, while a chaos loop SIGKILLs the current holder (four times in five) or
// a random worker, and starts a new one. Once the ledger has N holds every
// worker is killed and a fresh process must get the key within the recovery
// bound. tests/torture/ledger_check.hpp then checks the ledger.
//
// `store`: half the workers commit to three sessions (each commit appends the
// graph node "rev-<revision>"), half claim and complete queue items, all
// while being SIGKILLed; afterwards a fresh process checks PRAGMA
// integrity_check, that the revisions are exactly 1..head each once, that
// every commit reported as done is there, and that no item was completed by
// two claims and none was lost.
//
// `fenced`: N worker processes loop acquire -> ledger "enter" -> a random
// hold of up to 1 ms -> a fenced write of (fence, pid) -> release, while a
// chaos loop pauses the current holder with SIGSTOP for longer than the
// TTL and resumes it with SIGCONT (a GC pause, a stalled call). The writes
// the backend accepted, in commit order, must have fences that never go
// down: a paused holder's late write (its fence older than its
// successor's) must have been refused with errc::lock_lost.
//
// Prints one JSON line with the figures; exits 0 when every check passed, 1
// when one failed (the violations go to stderr), 2 on bad arguments.
// PostgreSQL and Redis come from LOCKSTORE_TEST_POSTGRES / LOCKSTORE_TEST_REDIS.

#include "support/store_helpers.hpp"
#include "torture/ledger_check.hpp"

#include <lockstore/lockstore.hpp>
#include <lockstore/postgres.hpp>
#include <lockstore/redis.hpp>
#include <lockstore/sqlite.hpp>
#include <lockstore/store.hpp>

#include <boost/asio.hpp>
#include <hiredis/hiredis.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace lockstore::torture {
namespace {

struct Options {
  std::string mode;
  std::string backend;
  std::filesystem::path dir;
  long acquisitions = 20'000;
  long commits = 3'000;
  long items = 1'500;
  int workers = 6;
  std::chrono::milliseconds ttl{300};
  std::uint64_t seed = 0;
};

/// How long a SIGKILLed holder may keep its key: its lease's TTL, plus the
/// lifetime of a killed waiter's ticket at the head of the queue (1.5 s on
/// every queueing backend), plus slack for a loaded machine.
std::int64_t recovery_bound_ns(const Options& options) {
  return (std::chrono::nanoseconds(options.ttl) + 1500ms + 1500ms).count();
}

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr,
               "lockstore_torture: %s\n"
               "usage: lockstore_torture locks --backend sqlite|postgres|redis|memory --dir DIR "
               "[--acquisitions N] [--workers N] [--ttl-ms N] [--seed N]\n"
               "       lockstore_torture store --dir DIR [--commits N] [--items N] [--workers N] [--seed N]\n"
               "       lockstore_torture fenced --backend sqlite|postgres|redis --dir DIR [--acquisitions N] "
               "[--workers N] [--ttl-ms N] [--seed N]\n",
               problem.c_str());
  std::exit(2);
}

long parse_number(const std::string& flag, const std::string& text, long low, long high) {
  long value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < low || value > high)
    usage(fmt::format("{} wants a whole number from {} to {}, not '{}'", flag, low, high, text));
  return value;
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("no mode given");
  Options options;
  options.mode = argv[1];
  if (options.mode != "locks" && options.mode != "store" && options.mode != "fenced")
    usage("unknown mode '" + options.mode + "'");
  options.seed = static_cast<std::uint64_t>(std::random_device{}());
  for (int i = 2; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--backend") options.backend = value;
    else if (flag == "--dir") options.dir = value;
    else if (flag == "--acquisitions") options.acquisitions = parse_number(flag, value, 10, 100'000'000);
    else if (flag == "--commits") options.commits = parse_number(flag, value, 10, 100'000'000);
    else if (flag == "--items") options.items = parse_number(flag, value, 1, 10'000'000);
    else if (flag == "--workers") options.workers = static_cast<int>(parse_number(flag, value, 2, 64));
    else if (flag == "--ttl-ms") options.ttl = std::chrono::milliseconds(parse_number(flag, value, 50, 60'000));
    else if (flag == "--seed") options.seed = static_cast<std::uint64_t>(parse_number(flag, value, 0, 1L << 62));
    else usage("unknown option " + flag);
  }
  if (options.dir.empty()) usage("--dir is required");
  if (options.mode == "locks") {
    static const std::set<std::string> backends{"sqlite", "postgres", "redis", "memory"};
    if (!backends.contains(options.backend)) usage("--backend must be sqlite, postgres, redis or memory");
  }
  if (options.mode == "fenced") {
    static const std::set<std::string> backends{"sqlite", "postgres", "redis"};
    if (!backends.contains(options.backend)) usage("--backend must be sqlite, postgres or redis");
  }
  std::filesystem::create_directories(options.dir);
  return options;
}

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(fmt::format("{} is not set (scripts/test-servers.sh up DIR; source DIR/env)", name));
  return value;
}

RedisOptions redis_options() {
  const auto endpoint = required_env("LOCKSTORE_TEST_REDIS");
  const auto colon = endpoint.rfind(':');
  RedisOptions options;
  options.host = endpoint.substr(0, colon);
  options.port = static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1)));
  return options;
}

/// Runs one coroutine on a fresh io_context to completion.
template <class Make>
void run_coroutine(Make make) {
  asio::io_context context;
  auto future = asio::co_spawn(context, make(), asio::use_future);
  context.run();
  future.get();
}

asio::awaitable<void> sleep_for(std::chrono::microseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  co_await timer.async_wait(asio::use_awaitable);
}

/// Forks a child that runs `body` and exits with its status (1 if it threw).
/// Called only from the single-threaded orchestrator.
pid_t spawn(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int status = 1;
    try {
      status = body();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "torture child %d: %s\n", static_cast<int>(::getpid()), error.what());
    }
    std::fflush(nullptr);
    ::_exit(status);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int raw = 0;
  ::waitpid(pid, &raw, 0);
  return WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
}

// ---------------------------------------------------------------- locks

/// One holder's loop: acquire, ledger enter, hold up to 0.5 ms, ledger exit,
/// release; forever, until killed. `abandon()` is polled while holding (the
/// memory backend's stand-in for SIGKILL): when it returns true the holder
/// writes its own kill line and walks away from the lease without releasing.
template <class Lock>
asio::awaitable<void> hold_loop(Lock& lock, const Options& options, const LedgerFile& ledger, std::int64_t id,
                                const std::function<bool()>& abandon, std::mt19937_64& random) {
  const AdvisoryKey key(fmt::format("torture-{}", options.seed));
  for (;;) {
    const auto t_call = monotonic_ns();
    auto guard = co_await lock.acquire(key, options.ttl, 60s);
    const auto t_held = monotonic_ns();
    ledger.append(fmt::format("enter {} {} {} {}\n", id, guard.fence(), t_call, t_held));
    co_await sleep_for(std::chrono::microseconds(random() % 500));
    if (abandon && abandon()) {
      const auto now = monotonic_ns();
      ledger.append(fmt::format("kill {} {} {}\n", id, now, now));
      guard.mark_released();  // walks away: the lease lives on until its TTL
      co_return;
    }
    ledger.append(fmt::format("exit {} {} {}\n", id, guard.fence(), monotonic_ns()));
    co_await lock.release(std::move(guard));
  }
}

/// Connects to the server or file backend in `options` as `owner` and runs
/// `body(lock)`.
template <class Body>
asio::awaitable<void> with_process_lock(const Options& options, std::string owner, Body& body) {
  if (options.backend == "sqlite") {
    auto database = co_await SqliteDatabase::open(options.dir / "locks.db");
    SqliteLock lock(database, owner);
    co_await body(lock);
  } else if (options.backend == "postgres") {
    auto lock = co_await PostgresLock::connect(required_env("LOCKSTORE_TEST_POSTGRES"), owner);
    co_await body(lock);
  } else {
    auto lock = co_await RedisLock::connect(redis_options(), owner);
    co_await body(lock);
  }
}

/// The probe after the last kill: one hold, taken within the recovery bound
/// (or errc::timeout), written to the ledger like any other.
template <class Lock>
asio::awaitable<void> probe_once(Lock& lock, const Options& options, const LedgerFile& ledger, std::int64_t id) {
  const auto bound = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(recovery_bound_ns(options)));
  const AdvisoryKey key(fmt::format("torture-{}", options.seed));
  const auto t_call = monotonic_ns();
  auto guard = co_await lock.acquire(key, options.ttl, bound);
  const auto t_held = monotonic_ns();
  ledger.append(fmt::format("enter {} {} {} {}\n", id, guard.fence(), t_call, t_held));
  ledger.append(fmt::format("exit {} {} {}\n", id, guard.fence(), monotonic_ns()));
  co_await lock.release(std::move(guard));
}

/// A worker process: connects on its own and loops until killed.
int lock_worker(const Options& options, const std::string& ledger_path) {
  const LedgerFile ledger(ledger_path);
  std::mt19937_64 random(options.seed ^ static_cast<std::uint64_t>(::getpid()));
  const std::int64_t id = ::getpid();
  const std::function<bool()> never;  // killed for real, by SIGKILL
  auto body = [&](auto& lock) { return hold_loop(lock, options, ledger, id, never, random); };
  run_coroutine([&]() -> asio::awaitable<void> { co_await with_process_lock(options, fmt::format("torture-{}", id), body); });
  return 0;
}

/// Reads the ledger as it grows: how many holds, and who holds right now.
class LedgerTail {
 public:
  explicit LedgerTail(std::string path) : path_(std::move(path)) {}

  void poll() {
    if (!in_.is_open()) in_.open(path_);
    in_.clear();
    in_.seekg(offset_);
    std::string line;
    while (std::getline(in_, line)) {
      if (in_.eof()) break;  // a partial last line: read it next time
      offset_ += static_cast<std::streamoff>(line.size() + 1);
      std::istringstream fields(line);
      std::string word;
      std::int64_t pid = 0;
      fields >> word >> pid;
      if (word == "enter") {
        ++holds;
        ++holds_since_kill;
        holder = pid;
        last_enter = std::chrono::steady_clock::now();
      } else if (word == "exit" || word == "kill") {
        if (holder == pid) holder = 0;
        if (word == "kill") {
          ++kills;
          holds_since_kill = 0;
        }
      }
    }
  }

  /// Recovered from kill number `kill`: it is in the ledger and a hold followed.
  bool recovered_from(long kill) const { return kills >= kill && holds_since_kill > 0; }

  long holds = 0;
  long kills = 0;
  long holds_since_kill = 0;
  std::int64_t holder = 0;
  std::chrono::steady_clock::time_point last_enter = std::chrono::steady_clock::now();

 private:
  std::string path_;
  std::ifstream in_;
  std::streamoff offset_ = 0;
};

struct ChaosFigures {
  long kills = 0;
  long waiter_kills = 0;
  std::vector<std::string> failures;
};

/// Normal operation between a recovery and the next kill.
std::chrono::milliseconds kill_gap(std::mt19937_64& random) { return std::chrono::milliseconds(300 + random() % 600); }

/// The memory backend: worker threads in this process share one MemoryLock;
/// "killing" a holder makes it abandon its lease mid-hold and start afresh.
ChaosFigures run_memory_chaos(const Options& options, const std::string& ledger_path) {
  ChaosFigures figures;
  const LedgerFile ledger(ledger_path);
  MemoryLock lock;
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<std::atomic<bool>>> kill_requests;
  for (int i = 0; i < options.workers; ++i) kill_requests.push_back(std::make_unique<std::atomic<bool>>(false));
  std::mutex failure_mutex;
  std::vector<std::thread> threads;
  for (int worker = 0; worker < options.workers; ++worker) {
    threads.emplace_back([&, worker] {
      std::mt19937_64 random(options.seed + static_cast<std::uint64_t>(worker));
      for (std::int64_t incarnation = 0; !stop; ++incarnation) {
        const std::int64_t id = 1'000'000 + worker * 100'000 + incarnation;
        const std::function<bool()> abandon = [&, worker] {
          return stop.load() || kill_requests[static_cast<std::size_t>(worker)]->exchange(false);
        };
        try {
          run_coroutine([&]() -> asio::awaitable<void> { co_await hold_loop(lock, options, ledger, id, abandon, random); });
        } catch (const std::exception& error) {
          const std::lock_guard guard(failure_mutex);
          figures.failures.push_back(fmt::format("memory worker {}: {}", worker, error.what()));
          return;
        }
      }
    });
  }
  LedgerTail tail(ledger_path);
  std::mt19937_64 random(options.seed);
  auto next_kill = std::chrono::steady_clock::now() + 100ms;
  long pending_kill = 0;  // the kill line we wait to recover from (0: none)
  while (tail.holds < options.acquisitions) {
    std::this_thread::sleep_for(1ms);
    tail.poll();
    const auto now = std::chrono::steady_clock::now();
    if (now - tail.last_enter > 60s) {
      figures.failures.push_back("no one acquired the key for 60 s");
      break;
    }
    if (pending_kill != 0 && tail.recovered_from(pending_kill)) {  // schedule the next kill
      pending_kill = 0;
      next_kill = now + kill_gap(random);
    }
    if (pending_kill == 0 && now >= next_kill && tail.holds < options.acquisitions * 97 / 100) {
      kill_requests[random() % kill_requests.size()]->store(true);
      ++figures.kills;
      pending_kill = tail.kills + 1;
    }
  }
  stop = true;  // every worker abandons its lease at its next hold
  for (auto& thread : threads) thread.join();
  // The probe: after the last abandoned lease, the key comes free again.
  try {
    run_coroutine([&]() -> asio::awaitable<void> { co_await probe_once(lock, options, ledger, 999'999); });
  } catch (const std::exception& error) {
    figures.failures.push_back(fmt::format("the key did not come free after the last abandon: {}", error.what()));
  }
  return figures;
}

/// Process backends: the chaos loop forks workers, SIGKILLs the holder (or a
/// waiter) and starts replacements. It never creates a thread, so it may fork.
ChaosFigures run_process_chaos(const Options& options, const std::string& ledger_path) {
  ChaosFigures figures;
  const LedgerFile ledger(ledger_path);
  std::vector<pid_t> workers;
  auto start_worker = [&] { return spawn([&] { return lock_worker(options, ledger_path); }); };
  for (int i = 0; i < options.workers; ++i) workers.push_back(start_worker());
  auto kill_worker = [&](pid_t victim) {
    const auto t_sent = monotonic_ns();
    ::kill(victim, SIGKILL);
    const int status = wait_status(victim);
    const auto t_dead = monotonic_ns();
    ledger.append(fmt::format("kill {} {} {}\n", victim, t_sent, t_dead));
    if (status != 128 + SIGKILL) figures.failures.push_back(fmt::format("worker {} had exited with status {} before its kill", victim, status));
  };
  LedgerTail tail(ledger_path);
  std::mt19937_64 random(options.seed);
  auto next_kill = std::chrono::steady_clock::now() + 200ms;
  long pending_kill = 0;
  while (tail.holds < options.acquisitions && figures.failures.empty()) {
    std::this_thread::sleep_for(2ms);
    tail.poll();
    const auto now = std::chrono::steady_clock::now();
    for (auto& worker : workers) {  // a worker that died on its own is a failure
      int raw = 0;
      if (::waitpid(worker, &raw, WNOHANG) == worker) {
        figures.failures.push_back(fmt::format("worker {} exited on its own (status {})", worker, raw));
        worker = start_worker();
      }
    }
    if (now - tail.last_enter > 60s) {
      figures.failures.push_back("no one acquired the key for 60 s");
      break;
    }
    if (pending_kill != 0 && tail.recovered_from(pending_kill)) {
      pending_kill = 0;
      next_kill = now + kill_gap(random);
    }
    if (pending_kill == 0 && now >= next_kill && tail.holds < options.acquisitions * 97 / 100) {
      // Four kills in five go to a holder: watch closely for one inside its
      // hold (holds are short; most of the time no one is inside).
      const bool want_holder = random() % 5 != 0;
      auto holder_at = [&] { return std::find(workers.begin(), workers.end(), tail.holder); };
      for (const auto until = now + 500ms; want_holder && holder_at() == workers.end() && std::chrono::steady_clock::now() < until;) {
        std::this_thread::sleep_for(50us);
        tail.poll();
      }
      const auto holder = holder_at();
      const auto index = want_holder && holder != workers.end() ? static_cast<std::size_t>(holder - workers.begin())
                                                                 : static_cast<std::size_t>(random() % workers.size());
      if (workers[index] != tail.holder) ++figures.waiter_kills;
      kill_worker(workers[index]);
      workers[index] = start_worker();
      ++figures.kills;
      tail.poll();  // reads our own kill line too
      pending_kill = tail.kills;
    }
  }
  for (const pid_t worker : workers) kill_worker(worker);
  // The probe: a fresh process must get the key within the recovery bound.
  const auto probe = spawn([&]() -> int {
    auto body = [&](auto& lock) { return probe_once(lock, options, ledger, ::getpid()); };
    run_coroutine([&]() -> asio::awaitable<void> { co_await with_process_lock(options, "torture-probe", body); });
    return 0;
  });
  if (const int status = wait_status(probe); status != 0)
    figures.failures.push_back(fmt::format("the probe could not take the key after the last kill (status {})", status));
  return figures;
}

int run_locks(const Options& options) {
  const auto ledger_path = (options.dir / fmt::format("ledger-{}-{}.txt", options.backend, options.seed)).string();
  std::filesystem::remove(ledger_path);
  const auto started = std::chrono::steady_clock::now();
  const auto chaos = options.backend == "memory" ? run_memory_chaos(options, ledger_path)
                                                 : run_process_chaos(options, ledger_path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const auto report = check_lock_ledger(ledger_path, std::chrono::nanoseconds(options.ttl).count(), recovery_bound_ns(options));
  const bool ok = report.ok() && chaos.failures.empty();
  std::cout << fmt::format(
                   "{{\"torture\":\"locks\",\"backend\":\"{}\",\"workers\":{},\"ttl_ms\":{},\"seed\":{},"
                   "\"holds\":{},\"kills\":{},\"holder_kills\":{},\"waiter_kills\":{},\"outlived_leases\":{},"
                   "\"first_fence\":{},\"last_fence\":{},\"recovery_ms_p50\":{:.1f},\"recovery_ms_max\":{:.1f},"
                   "\"recovery_bound_ms\":{},\"seconds\":{:.1f},\"ok\":{}}}",
                   options.backend, options.workers, options.ttl.count(), options.seed, report.holds, report.kills,
                   report.holder_kills, chaos.waiter_kills, report.outlived_leases, report.first_fence, report.last_fence,
                   percentile(report.recovery_ms, 0.5), percentile(report.recovery_ms, 1.0),
                   recovery_bound_ns(options) / 1'000'000, seconds, ok)
            << std::endl;
  for (const auto& failure : chaos.failures) std::cerr << "FAILED: " << failure << "\n";
  for (const auto& violation : report.violations) std::cerr << "VIOLATION: " << violation << "\n";
  if (ok) std::filesystem::remove(ledger_path);
  else std::cerr << "ledger kept at " << ledger_path << "\n";
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------- store

constexpr int store_sessions = 3;

/// A committer: commits to a random one of three sessions, each commit
/// appending node "rev-<revision>" whose payload (and checkpoint part
/// "state") is "<pid>:<n>". Logs "committing" before and "commit" after.
asio::awaitable<void> commit_loop(SessionStore& store, const LedgerFile& ledger, std::mt19937_64& random) {
  const auto pid = ::getpid();
  for (long n = 0;; ++n) {
    const auto session = fmt::format("session-{}", random() % store_sessions);
    auto head = co_await store.load(session);
    const std::uint64_t expected = head ? head->head_revision : 0;
    const auto tag = fmt::format("{}:{}", pid, n);
    CommitRequest request;
    request.session_id = session;
    request.expected_head_revision = expected;
    request.parts.emplace("state", tag);
    GraphNode node;
    node.node_id = fmt::format("rev-{}", expected + 1);
    if (expected > 0) node.parent_id = fmt::format("rev-{}", expected);
    node.payload = tag;
    request.append_nodes.push_back(std::move(node));
    ledger.append(fmt::format("committing {} {} {}\n", session, expected + 1, tag));
    try {
      const auto result = co_await store.commit(std::move(request));
      ledger.append(fmt::format("commit {} {} {}\n", session, result.head_revision, tag));
    } catch (const Error& error) {
      if (error.code() != errc::head_revision_conflict) throw;
    }
  }
}

/// A claimer: claims one item at a time, completes it, and logs
/// "completing" before and "completed" after.
asio::awaitable<void> claim_loop(SessionStore& store, const LedgerFile& ledger, std::mt19937_64& random) {
  const auto owner = fmt::format("claimer-{}", ::getpid());
  for (;;) {
    auto claim = co_await store.claim("queue", owner, 400ms, 1);
    if (!claim) {
      co_await sleep_for(5ms);
      continue;
    }
    const auto item = claim->items.front().id;
    co_await sleep_for(std::chrono::microseconds(random() % 1000));
    ledger.append(fmt::format("completing {} {}\n", item, claim->fence));
    try {
      co_await store.complete(*claim);
      ledger.append(fmt::format("completed {} {}\n", item, claim->fence));
    } catch (const Error& error) {
      if (error.code() != errc::claim_superseded) throw;
    }
  }
}

int store_worker(const Options& options, const std::string& ledger_path, bool committer) {
  const LedgerFile ledger(ledger_path);
  std::mt19937_64 random(options.seed ^ static_cast<std::uint64_t>(::getpid()));
  run_coroutine([&]() -> asio::awaitable<void> {
    auto database = co_await SqliteDatabase::open(options.dir / "store.db");
    // Committers collect as they go, so collections are killed too.
    StoreOptions store_options;
    if (committer) store_options.gc_every_commits = 5;
    auto store = co_await SessionStore::open(database, store_options);
    if (committer) co_await commit_loop(store, ledger, random);
    else co_await claim_loop(store, ledger, random);
  });
  return 0;
}

/// PRAGMA integrity_check through the SQLite C API: "ok" or what it found.
std::string integrity_check(const std::filesystem::path& path) {
  sqlite3* connection = nullptr;
  if (sqlite3_open_v2(path.c_str(), &connection, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string message = connection ? sqlite3_errmsg(connection) : "out of memory";
    sqlite3_close(connection);
    return "cannot open: " + message;
  }
  std::string result;
  sqlite3_stmt* statement = nullptr;
  if (sqlite3_prepare_v2(connection, "PRAGMA integrity_check", -1, &statement, nullptr) == SQLITE_OK) {
    while (sqlite3_step(statement) == SQLITE_ROW) {
      if (!result.empty()) result += "; ";
      result += reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    }
  } else {
    result = sqlite3_errmsg(connection);
  }
  sqlite3_finalize(statement);
  sqlite3_close(connection);
  return result;
}

struct StoreLedger {
  std::map<std::pair<std::string, std::uint64_t>, std::string> committed;      // (session, rev) -> tag
  std::set<std::tuple<std::string, std::uint64_t, std::string>> attempted;     // (session, rev, tag)
  std::vector<std::int64_t> enqueued;
  std::map<std::int64_t, int> completed;                                      // item -> successful completes
  std::set<std::int64_t> completing;
  long commits = 0;
};

StoreLedger read_store_ledger(const std::string& path) {
  StoreLedger ledger;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string word, session, tag;
    std::uint64_t revision = 0;
    std::int64_t item = 0;
    fields >> word;
    if (word == "committing") {
      fields >> session >> revision >> tag;
      ledger.attempted.emplace(session, revision, tag);
    } else if (word == "commit") {
      fields >> session >> revision >> tag;
      ledger.committed[{session, revision}] = tag;
      ++ledger.commits;
    } else if (word == "enqueued") {
      fields >> item;
      ledger.enqueued.push_back(item);
    } else if (word == "completing") {
      fields >> item;
      ledger.completing.insert(item);
    } else if (word == "completed") {
      fields >> item;
      ++ledger.completed[item];
    }
  }
  return ledger;
}

int run_store(const Options& options) {
  const auto ledger_path = (options.dir / fmt::format("ledger-store-{}.txt", options.seed)).string();
  const auto path = options.dir / "store.db";
  for (const auto* suffix : {"", "-wal", "-shm", "-lockstore-wake"}) std::filesystem::remove(path.string() + suffix);
  std::filesystem::remove(ledger_path);
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::string> failures;
  {
    const LedgerFile ledger(ledger_path);
    // The queue is filled by a child: this process must not open SQLite
    // before it is done forking.
    const auto setup = spawn([&]() -> int {
      run_coroutine([&]() -> asio::awaitable<void> {
        auto database = co_await SqliteDatabase::open(path);
        auto store = co_await SessionStore::open(database);
        for (long i = 0; i < options.items; ++i) {
          WorkDraft draft;
          draft.payload = fmt::format("item-{}", i);
          const auto item = co_await store.enqueue("queue", std::move(draft));
          ledger.append(fmt::format("enqueued {}\n", item.id));
        }
      });
      return 0;
    });
    if (wait_status(setup) != 0) throw std::runtime_error("could not fill the queue");

    std::vector<pid_t> workers;
    auto start_worker = [&](int index) {
      return spawn([&, index] { return store_worker(options, ledger_path, index % 2 == 0); });
    };
    for (int i = 0; i < options.workers; ++i) workers.push_back(start_worker(i));
    std::mt19937_64 random(options.seed);
    long kills = 0;
    long commits_seen = 0;
    auto last_progress = std::chrono::steady_clock::now();
    auto next_kill = last_progress + 100ms;
    std::ifstream tail(ledger_path);
    std::string line;
    while (commits_seen < options.commits && failures.empty()) {
      std::this_thread::sleep_for(5ms);
      tail.clear();
      auto seen = commits_seen;
      for (std::streampos at = tail.tellg(); std::getline(tail, line); at = tail.tellg()) {
        if (tail.eof()) {  // a partial last line: read it again next time
          tail.clear();
          tail.seekg(at);
          break;
        }
        if (line.starts_with("commit ")) ++seen;
      }
      const auto now = std::chrono::steady_clock::now();
      if (seen > commits_seen) last_progress = now;
      commits_seen = seen;
      if (now - last_progress > 60s) failures.push_back("no commit for 60 s");
      for (std::size_t i = 0; i < workers.size(); ++i) {
        int raw = 0;
        if (::waitpid(workers[i], &raw, WNOHANG) == workers[i]) {
          failures.push_back(fmt::format("store worker {} exited on its own (status {})", workers[i], raw));
          workers[i] = start_worker(static_cast<int>(i));
        }
      }
      if (now >= next_kill) {
        const auto index = static_cast<std::size_t>(random() % workers.size());
        ::kill(workers[index], SIGKILL);
        wait_status(workers[index]);
        workers[index] = start_worker(static_cast<int>(index));
        ++kills;
        next_kill = now + std::chrono::milliseconds(10 + random() % 50);
      }
    }
    for (const pid_t worker : workers) {
      ::kill(worker, SIGKILL);
      wait_status(worker);
    }

    // No more forks from here: the checks may open SQLite in this process.
    auto ledger_now = read_store_ledger(ledger_path);
    const auto integrity = integrity_check(path);
    if (integrity != "ok") failures.push_back("PRAGMA integrity_check: " + integrity);
    long drained = 0;
    std::uint64_t revisions = 0;
    run_coroutine([&]() -> asio::awaitable<void> {
      auto database = co_await SqliteDatabase::open(path);
      auto store = co_await SessionStore::open(database);
      for (int s = 0; s < store_sessions; ++s) {
        const auto session = fmt::format("session-{}", s);
        const auto head = co_await store.load(session);
        const std::uint64_t head_revision = head ? head->head_revision : 0;
        revisions += head_revision;
        const auto nodes = co_await store.load_graph(session);
        if (nodes.size() != head_revision)
          failures.push_back(fmt::format("{}: head revision {} but {} commits applied", session, head_revision, nodes.size()));
        for (std::size_t i = 0; i < nodes.size(); ++i) {
          const auto revision = static_cast<std::uint64_t>(i + 1);
          if (nodes[i].node_id != fmt::format("rev-{}", revision)) {
            failures.push_back(fmt::format("{}: commit {} is node '{}' (skipped or applied twice)", session, revision, nodes[i].node_id));
            break;
          }
          const auto reported = ledger_now.committed.find({session, revision});
          if (reported != ledger_now.committed.end() ? reported->second != nodes[i].payload
                                                     : !ledger_now.attempted.contains({session, revision, nodes[i].payload}))
            failures.push_back(fmt::format("{}: revision {} holds '{}', which no one committed there", session, revision, nodes[i].payload));
        }
        for (const auto& [key, tag] : ledger_now.committed)
          if (key.first == session && key.second > head_revision)
            failures.push_back(fmt::format("{}: commit {} ({}) returned success but is gone", session, key.second, tag));
        if (head && !nodes.empty()) {
          const auto checkpoint = co_await store.get_checkpoint(head->checkpoint_ref);
          std::optional<std::string> state;
          if (checkpoint && checkpoint->parts.contains("state")) state = co_await store.get_blob(checkpoint->parts.at("state"));
          if (!state || *state != nodes.back().payload)
            failures.push_back(fmt::format("{}: the head checkpoint does not hold the last commit's state", session));
        }
      }
      // The GC bookkeeping survived the kills, and after one more collection
      // every head still loads whole.
      const auto bookkeeping = co_await test::gc_bookkeeping_errors(store);
      if (!bookkeeping.empty()) failures.push_back("GC bookkeeping: " + bookkeeping);
      co_await store.gc();
      for (int s = 0; s < store_sessions; ++s) {
        const auto session = fmt::format("session-{}", s);
        std::optional<std::string> unreadable;
        try {
          auto loading = store.load_snapshot(session);
          co_await std::move(loading);
        } catch (const Error& error) {
          unreadable = error.what();
        }
        if (unreadable) failures.push_back(fmt::format("{}: not readable after gc: {}", session, *unreadable));
      }
      // Drain what the killed claimers left: their leases run out in 400 ms.
      const auto give_up = std::chrono::steady_clock::now() + 30s;
      while (std::chrono::steady_clock::now() < give_up) {
        auto claim = co_await store.claim("queue", "drain", 60s, 100);
        if (claim) {
          for (const auto& item : claim->items) ++ledger_now.completed[item.id];
          drained += static_cast<long>(claim->items.size());
          co_await store.complete(*claim);
          continue;
        }
        const auto pending = co_await store.pending("queue");
        if (pending.empty()) break;
        co_await sleep_for(50ms);
      }
      const auto left = co_await store.pending("queue");
      if (!left.empty()) failures.push_back(fmt::format("{} queue items could not be drained in 30 s", left.size()));
    });
    long completed_once = 0;
    for (const auto item : ledger_now.enqueued) {
      const auto found = ledger_now.completed.find(item);
      const int times = found == ledger_now.completed.end() ? 0 : found->second;
      if (times > 1) failures.push_back(fmt::format("queue item {} was completed by {} claims", item, times));
      if (times == 1) ++completed_once;
      if (times == 0 && !ledger_now.completing.contains(item))
        failures.push_back(fmt::format("queue item {} was lost: never completed, not pending", item));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const bool ok = failures.empty();
    std::cout << fmt::format(
                     "{{\"torture\":\"store\",\"workers\":{},\"seed\":{},\"commits_reported\":{},\"revisions\":{},"
                     "\"items\":{},\"completed_by_workers\":{},\"drained_after\":{},\"kills\":{},\"integrity\":\"{}\","
                     "\"seconds\":{:.1f},\"ok\":{}}}",
                     options.workers, options.seed, ledger_now.commits, revisions, ledger_now.enqueued.size(),
                     completed_once - drained, drained, kills, integrity == "ok" ? "ok" : "FAILED", seconds, ok)
              << std::endl;
  }
  for (const auto& failure : failures) std::cerr << "FAILED: " << failure << "\n";
  if (failures.empty()) std::filesystem::remove(ledger_path);
  else std::cerr << "ledger kept at " << ledger_path << "\n";
  return failures.empty() ? 0 : 1;
}

// ---------------------------------------------------------------- fenced

std::string writes_name(const Options& options) { return fmt::format("torture_writes_{}", options.seed); }

/// One fenced write of (fence, writer) into the backend's record of writes.
template <class Lock>
asio::awaitable<void> fenced_write(Lock& lock, const LockGuard& guard, const Options& options, std::int64_t id) {
  constexpr bool sqlite = std::is_same_v<Lock, SqliteLock>;
  std::vector<SqlStatement> insert(1);
  insert[0].sql = fmt::format("INSERT INTO {} (fence, writer) VALUES ({})", writes_name(options),
                              sqlite ? "?1, ?2" : "$1::bigint, $2::bigint");
  insert[0].params.emplace_back(static_cast<std::int64_t>(guard.fence()));
  insert[0].params.emplace_back(id);
  auto writing = lock.fenced(guard, std::move(insert));
  co_await std::move(writing);
}
asio::awaitable<void> fenced_write(RedisLock& lock, const LockGuard& guard, const Options& options, std::int64_t id) {
  std::vector<RedisCommand> push;
  push.push_back(RedisCommand{"RPUSH", writes_name(options), fmt::format("{} {}", guard.fence(), id)});
  auto writing = lock.fenced(guard, std::move(push));
  co_await std::move(writing);
}

/// Creates the record of writes (a table; Redis needs none).
template <class Lock>
asio::awaitable<void> create_writes(Lock& lock, const Options& options) {
  if constexpr (!std::is_same_v<Lock, RedisLock>) {
    auto guard = co_await lock.acquire(AdvisoryKey("torture-setup"), 30s, 30s);
    std::vector<SqlStatement> create(1);
    create[0].sql = std::is_same_v<Lock, SqliteLock>
                        ? fmt::format("CREATE TABLE IF NOT EXISTS {} (id INTEGER PRIMARY KEY, fence INTEGER, writer "
                                      "INTEGER)",
                                      writes_name(options))
                        : fmt::format("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, fence bigint, writer "
                                      "bigint)",
                                      writes_name(options));
    auto creating = lock.fenced(guard, std::move(create));
    co_await std::move(creating);
    co_await lock.release(std::move(guard));
  }
}

/// The fences of the accepted writes, in commit order (SQLite's rowid and
/// PostgreSQL's id are taken under the lease row's lock; Redis appends in
/// script order), read through the backend's own client.
template <class Lock>
asio::awaitable<std::vector<std::int64_t>> accepted_fences(Lock& lock, const Options& options) {
  std::vector<std::int64_t> fences;
  if constexpr (std::is_same_v<Lock, RedisLock>) {
    // LRANGE is no write, so not a fenced command: read with hiredis.
    const auto redis = redis_options();
    redisContext* context = redisConnect(redis.host.c_str(), redis.port);
    if (context == nullptr || context->err != 0) throw std::runtime_error("hiredis cannot connect");
    auto* reply = static_cast<redisReply*>(redisCommand(context, "LRANGE %s 0 -1", writes_name(options).c_str()));
    for (std::size_t i = 0; reply != nullptr && i < reply->elements; ++i)
      fences.push_back(std::stoll(std::string(reply->element[i]->str, reply->element[i]->len)));
    if (reply != nullptr) freeReplyObject(reply);
    freeReplyObject(redisCommand(context, "DEL %s", writes_name(options).c_str()));
    redisFree(context);
  } else {
    auto guard = co_await lock.acquire(AdvisoryKey("torture-reader"), 30s, 30s);
    std::vector<SqlStatement> select(1);
    select[0].sql = fmt::format("SELECT fence FROM {} ORDER BY id", writes_name(options));
    auto reading = lock.fenced(guard, std::move(select));
    auto results = co_await std::move(reading);
    for (const auto& row : results.at(0).rows) {
      if (const auto* number = std::get_if<std::int64_t>(&row.at(0))) fences.push_back(*number);
      else fences.push_back(std::stoll(std::get<std::string>(row.at(0))));
    }
    if constexpr (std::is_same_v<Lock, PostgresLock>) {
      std::vector<SqlStatement> drop(1);
      drop[0].sql = fmt::format("DROP TABLE {}", writes_name(options));
      auto dropping = lock.fenced(guard, std::move(drop));
      co_await std::move(dropping);
    }
    co_await lock.release(std::move(guard));
  }
  co_return fences;
}

/// A worker of the fenced mode: holds, writes under the fence, releases;
/// forever, until killed. Ledger: enter, then wrote or refused, then exit.
template <class Lock>
asio::awaitable<void> fenced_loop(Lock& lock, const Options& options, const LedgerFile& ledger, std::int64_t id,
                                  std::mt19937_64& random) {
  const AdvisoryKey key(fmt::format("torture-{}", options.seed));
  for (;;) {
    auto guard = co_await lock.acquire(key, options.ttl, 60s);
    ledger.append(fmt::format("enter {} {} {} {}\n", id, guard.fence(), monotonic_ns(), monotonic_ns()));
    co_await sleep_for(std::chrono::microseconds(random() % 1000));  // where a pause usually lands
    bool refused = false;
    try {
      auto writing = fenced_write(lock, guard, options, id);
      co_await std::move(writing);
    } catch (const Error& error) {
      if (error.code() != errc::lock_lost) throw;
      refused = true;
    }
    ledger.append(fmt::format("{} {} {}\n", refused ? "refused" : "wrote", id, guard.fence()));
    ledger.append(fmt::format("exit {} {} {}\n", id, guard.fence(), monotonic_ns()));
    co_await lock.release(std::move(guard));
  }
}

int run_fenced(const Options& options) {
  const auto ledger_path = (options.dir / fmt::format("ledger-fenced-{}-{}.txt", options.backend, options.seed)).string();
  std::filesystem::remove(ledger_path);
  const auto started = std::chrono::steady_clock::now();
  auto setup = [&](auto& lock) { return create_writes(lock, options); };
  run_coroutine([&]() -> asio::awaitable<void> { co_await with_process_lock(options, "torture-setup", setup); });

  std::vector<std::string> failures;
  const LedgerFile ledger(ledger_path);
  auto start_worker = [&] {
    return spawn([&] {
      const LedgerFile own(ledger_path);
      std::mt19937_64 random(options.seed ^ static_cast<std::uint64_t>(::getpid()));
      const std::int64_t id = ::getpid();
      auto body = [&](auto& lock) { return fenced_loop(lock, options, own, id, random); };
      run_coroutine([&]() -> asio::awaitable<void> {
        co_await with_process_lock(options, fmt::format("torture-{}", id), body);
      });
      return 0;
    });
  };
  std::vector<pid_t> workers;
  for (int i = 0; i < options.workers; ++i) workers.push_back(start_worker());
  LedgerTail tail(ledger_path);
  std::mt19937_64 random(options.seed);
  long pauses = 0;
  auto next_pause = std::chrono::steady_clock::now() + 100ms;
  while (tail.holds < options.acquisitions && failures.empty()) {
    std::this_thread::sleep_for(1ms);
    tail.poll();
    const auto now = std::chrono::steady_clock::now();
    for (auto& worker : workers) {
      int raw = 0;
      if (::waitpid(worker, &raw, WNOHANG) == worker) {
        failures.push_back(fmt::format("worker {} exited on its own (status {})", worker, raw));
        worker = start_worker();
      }
    }
    if (now - tail.last_enter > 60s) {
      failures.push_back("no one acquired the key for 60 s");
      break;
    }
    if (now < next_pause || tail.holds >= options.acquisitions * 97 / 100) continue;
    // Pause the holder while it holds (before its write, most of the time).
    auto holder_at = [&] { return std::find(workers.begin(), workers.end(), tail.holder); };
    for (const auto until = now + 500ms; holder_at() == workers.end() && std::chrono::steady_clock::now() < until;) {
      std::this_thread::sleep_for(20us);
      tail.poll();
    }
    const auto holder = holder_at();
    if (holder == workers.end()) continue;
    ::kill(*holder, SIGSTOP);
    std::this_thread::sleep_for(options.ttl + std::chrono::milliseconds(50 + random() % 300));
    ::kill(*holder, SIGCONT);
    ++pauses;
    next_pause = std::chrono::steady_clock::now() + std::chrono::milliseconds(50 + random() % 250);
  }
  for (const pid_t worker : workers) {
    ::kill(worker, SIGKILL);
    wait_status(worker);
  }
  std::vector<std::int64_t> fences;
  auto read = [&](auto& lock) -> asio::awaitable<void> {
    auto reading = accepted_fences(lock, options);
    fences = co_await std::move(reading);
  };
  run_coroutine([&]() -> asio::awaitable<void> { co_await with_process_lock(options, "torture-reader", read); });

  long wrote = 0, refused = 0;
  {
    std::ifstream in(ledger_path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("wrote ")) ++wrote;
      else if (line.starts_with("refused ")) ++refused;
    }
  }
  long stale_accepted = 0;
  for (std::size_t i = 1; i < fences.size(); ++i)
    if (fences[i] < fences[i - 1]) {
      ++stale_accepted;
      if (stale_accepted <= 10)
        failures.push_back(fmt::format("write {} has fence {} after one with fence {}: a stale write was accepted",
                                       i, fences[i], fences[i - 1]));
    }
  // Each reported write is in the record; at most one per worker more
  // (killed between its commit and its ledger line).
  const auto accepted = static_cast<long>(fences.size());
  if (accepted < wrote || accepted > wrote + options.workers)
    failures.push_back(fmt::format("{} writes were accepted but workers reported {}", accepted, wrote));
  if (tail.holds < options.acquisitions) failures.push_back(fmt::format("only {} holds", tail.holds));
  const bool ok = failures.empty();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << fmt::format(
                   "{{\"torture\":\"fenced\",\"backend\":\"{}\",\"workers\":{},\"ttl_ms\":{},\"seed\":{},"
                   "\"holds\":{},\"pauses\":{},\"writes_accepted\":{},\"stale_writes_refused\":{},"
                   "\"stale_writes_accepted\":{},\"seconds\":{:.1f},\"ok\":{}}}",
                   options.backend, options.workers, options.ttl.count(), options.seed, tail.holds, pauses, accepted,
                   refused, stale_accepted, seconds, ok)
            << std::endl;
  for (const auto& failure : failures) std::cerr << "FAILED: " << failure << "\n";
  if (ok) std::filesystem::remove(ledger_path);
  else std::cerr << "ledger kept at " << ledger_path << "\n";
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace lockstore::torture

int main(int argc, char** argv) {
  using namespace lockstore::torture;
  const auto options = parse(argc, argv);
  lockstore::set_log_handler([](lockstore::LogLevel level, std::string_view message) {
    if (level >= lockstore::LogLevel::error) std::cerr << "lockstore: " << message << "\n";
  });
  try {
    if (options.mode == "locks") return run_locks(options);
    if (options.mode == "fenced") return run_fenced(options);
    return run_store(options);
  } catch (const std::exception& error) {
    std::cerr << "lockstore_torture: " << error.what() << "\n";
    return 1;
  }
}
