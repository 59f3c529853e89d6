// Test helpers: run a coroutine to completion, temporary directories,
// capturing log messages, forked child processes.
#pragma once

#include <lockstore/lockstore.hpp>

#include <boost/asio.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <vector>

namespace lockstore::test {

namespace asio = boost::asio;

/// Runs `make()` (which returns an awaitable) on a fresh io_context until it
/// finishes, and returns its result or rethrows its exception.
template <class F>
auto run(F&& make) {
  asio::io_context context;
  auto future = asio::co_spawn(context, make(), asio::use_future);
  context.run();
  return future.get();
}

inline asio::awaitable<void> sleep_for(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  co_await timer.async_wait(asio::use_awaitable);
}

/// Runs `operation` and cancels it (terminal) once `after` has passed, unless
/// it finished first. Returns its result, or nullopt when the cancellation
/// ended it with operation_aborted; any other exception propagates.
///
/// The cancellation is emitted from a timer handler on the caller's own
/// executor, straight into the slot of a completion handler that has no
/// executor of its own, so co_spawn forwards it at once instead of posting
/// it (Asio 1.81 can post a forwarded cancellation that outlives its slot,
/// chriskohlhoff/asio#1332). The shared state outlives both handlers, and the
/// timer emits only while the operation has not finished.
template <class T>
asio::awaitable<std::optional<T>> cancel_after(asio::awaitable<T> operation, std::chrono::milliseconds after) {
  struct State {
    explicit State(asio::any_io_executor executor) : finished(executor, asio::steady_timer::time_point::max()) {}
    asio::cancellation_signal signal;
    asio::steady_timer finished;
    bool done = false;
    std::optional<T> value;
    std::exception_ptr failure;
  };
  auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<State>(executor);
  asio::steady_timer timer(executor, after);
  timer.async_wait([state](boost::system::error_code error) {
    if (!error && !state->done) state->signal.emit(asio::cancellation_type::terminal);
  });
  asio::co_spawn(
      executor,
      [](asio::awaitable<T> inner) -> asio::awaitable<std::optional<T>> { co_return co_await std::move(inner); }(
          std::move(operation)),
      asio::bind_cancellation_slot(state->signal.slot(), [state](std::exception_ptr failure, std::optional<T> value) {
        state->done = true;
        state->failure = failure;
        state->value = std::move(value);
        state->finished.cancel();
      }));
  while (!state->done) co_await state->finished.async_wait(asio::as_tuple(asio::use_awaitable));
  timer.cancel();
  if (state->failure) {
    try {
      std::rethrow_exception(state->failure);
    } catch (const boost::system::system_error& error) {
      if (error.code() != asio::error::operation_aborted) throw;
      co_return std::nullopt;
    }
  }
  co_return std::move(state->value);
}

/// lock.acquire(key, 30 s, 30 s) with a default-constructible result, for
/// co_spawn(use_future) (Asio 1.81's co_spawn needs one).
template <class Lock>
asio::awaitable<std::optional<LockGuard>> acquire_optional(Lock& lock, AdvisoryKey key) {
  auto acquiring = lock.acquire(std::move(key), std::chrono::seconds(30), std::chrono::seconds(30));
  co_return co_await std::move(acquiring);
}

/// Waits (a timer, so the io_context's other work goes on meanwhile) until
/// `waiting` is ready or 20 s have passed; returns whether it is ready.
template <class T>
asio::awaitable<bool> ready_within_20s(std::future<T>& waiting) {
  using namespace std::chrono_literals;
  asio::steady_timer pause(co_await asio::this_coro::executor);
  for (const auto give_up = std::chrono::steady_clock::now() + 20s;
       waiting.wait_for(0s) != std::future_status::ready && std::chrono::steady_clock::now() < give_up;) {
    pause.expires_after(1ms);
    co_await pause.async_wait(asio::use_awaitable);
  }
  co_return waiting.wait_for(0s) == std::future_status::ready;
}

/// Waits (a timer, so the io_context's other work goes on meanwhile) until
/// `done()` or 20 s have passed; returns whether `done()` became true.
inline asio::awaitable<bool> true_within_20s(std::function<bool()> done) {
  using namespace std::chrono_literals;
  asio::steady_timer pause(co_await asio::this_coro::executor);
  for (const auto give_up = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < give_up;) {
    if (done()) co_return true;
    pause.expires_after(5ms);
    co_await pause.async_wait(asio::use_awaitable);
  }
  co_return done();
}

/// A directory removed (with its contents) at scope exit.
class TempDir {
 public:
  TempDir() {
    auto pattern = (std::filesystem::temp_directory_path() / "lockstore-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Collects log messages while alive; restores the default sink after.
class LogCapture {
 public:
  LogCapture() {
    set_log_handler([this](LogLevel level, std::string_view message) {
      std::lock_guard lock(mutex_);
      entries_.emplace_back(level, std::string(message));
    });
  }
  ~LogCapture() { set_log_handler(nullptr); }
  std::vector<std::pair<LogLevel, std::string>> entries() const {
    std::lock_guard lock(mutex_);
    return entries_;
  }
  std::size_t count_containing(std::string_view text) const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& [level, message] : entries_) n += message.find(text) != std::string::npos ? 1 : 0;
    return n;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<LogLevel, std::string>> entries_;
};

/// Forks `count` children that each run `body(index)` and exit with its
/// return value; runs `after_fork` in the parent once all exist; returns the
/// children's exit statuses (or -signal) in index order. Call it from a
/// process with no other threads and no open SqliteDatabase: a fork taken
/// while another thread runs can leave a child deadlocked (seen under ASan).
inline std::vector<int> run_children(int count, const std::function<int(int)>& body,
                                     const std::function<void()>& after_fork = {}) {
  std::vector<pid_t> pids;
  for (int index = 0; index < count; ++index) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      int status = 1;
      try {
        status = body(index);
      } catch (const std::exception& error) {
        std::fprintf(stderr, "child %d: %s\n", index, error.what());
      }
      std::fflush(nullptr);
      ::_exit(status);
    }
    pids.push_back(pid);
  }
  if (after_fork) after_fork();
  std::vector<int> statuses;
  for (const pid_t pid : pids) {
    int raw = 0;
    ::waitpid(pid, &raw, 0);
    statuses.push_back(WIFEXITED(raw) ? WEXITSTATUS(raw) : -WTERMSIG(raw));
  }
  return statuses;
}

/// Waits (polling every millisecond) until `done()` or the timeout passes.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace lockstore::test
