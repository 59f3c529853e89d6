// `lockstore run`: hold a lease while a command runs. The command gets
// LOCKSTORE_KEY, LOCKSTORE_TOKEN and LOCKSTORE_FENCE; the lease is renewed
// every ttl/3; SIGINT, SIGTERM and SIGHUP are forwarded to it; the lease is
// released when it exits and the tool exits with its status. The renewal is
// the library's (renew_while): if a renewal finds the lease lost, or none is
// confirmed by the lease's assumed end less the safety margin (the server
// unreachable), the command gets SIGTERM before the lease ends, then SIGKILL
// after --kill-after, and the tool exits with exit_lease_lost.
#pragma once

#include "arguments.hpp"
#include "exit_codes.hpp"

#include <lockstore/sqlite.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/prctl.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

namespace lockstore::cli {

namespace asio = boost::asio;

struct RunOptions {
  std::string key;
  std::vector<std::string> command;
  std::chrono::milliseconds ttl{30'000};
  std::optional<std::chrono::milliseconds> wait;  ///< none: wait forever
  std::optional<std::string> owner;
  bool nonblock = false;  ///< also --wait 0
  std::chrono::milliseconds kill_after{10'000};
  int not_acquired_status = exit_not_acquired;  ///< -E: the status when the lock was not acquired
};

/// Starts `command` with `extra` added to the environment. The environment
/// and argv are built before fork(): the child only calls execvpe and _exit.
/// Returns the pid, or -errno of a failed exec (reported through a pipe).
inline pid_t spawn(const std::vector<std::string>& command, const std::vector<std::string>& extra) {
  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    bool replaced = false;
    for (const auto& variable : extra)
      replaced = replaced || text.substr(0, text.find('=') + 1) == variable.substr(0, variable.find('=') + 1);
    if (!replaced) environment.emplace_back(text);
  }
  environment.insert(environment.end(), extra.begin(), extra.end());
  std::vector<char*> envp, argv;
  for (auto& variable : environment) envp.push_back(variable.data());
  envp.push_back(nullptr);
  auto arguments = command;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return -errno;
  const pid_t child = ::fork();
  if (child == 0) {
    // The command dies with this process: a lockstore killed with SIGKILL
    // can no longer stop it when the lease ends.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) ::_exit(exit_cannot_exec);
    ::execvpe(argv[0], argv.data(), envp.data());
    const int error = errno;
    [[maybe_unused]] auto written = ::write(report[1], &error, sizeof error);
    ::_exit(exit_cannot_exec);
  }
  ::close(report[1]);
  int exec_error = 0;
  const auto got = child > 0 ? ::read(report[0], &exec_error, sizeof exec_error) : 0;
  ::close(report[0]);
  if (child < 0) return -errno;
  if (got == sizeof exec_error) {
    ::waitpid(child, nullptr, 0);
    return -exec_error;
  }
  return child;
}

/// SIGKILLs and reaps every process re-parented to this one (the command's
/// leftovers, once it has exited), until none is left.
inline void stop_leftovers() {
  for (;;) {
    bool found = false;
    const std::string parent = std::to_string(::getpid());
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ignored)) {
      std::ifstream stat(entry.path() / "stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
      const auto close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 1));
      std::string state, ppid;
      rest >> state >> ppid;
      if (ppid != parent) continue;
      const pid_t pid = static_cast<pid_t>(std::stol(entry.path().filename().string()));
      ::kill(pid, SIGKILL);
      found = true;
    }
    if (!found) return;
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Releases the guard; a failure (the server unreachable) is reported, not
/// thrown: the lease then ends by its TTL, and the exit status stays the
/// command's (or "lease lost").
template <class Lock>
asio::awaitable<void> release_quietly(Lock& lock, LockGuard& guard) {
  try {
    auto releasing = lock.release(std::move(guard));
    co_await std::move(releasing);
  } catch (const std::exception& error) {
    fmt::print(stderr, "lockstore: releasing '{}' failed: {}; it will expire by its TTL\n", guard.key().str(),
               error.what());
  }
}

/// Runs the command under a lease of `lock` (any backend's lock, connected
/// for the owner the options name).
template <class Lock>
asio::awaitable<int> supervise(Lock& lock, RunOptions options) {
  auto executor = co_await asio::this_coro::executor;
  const AdvisoryKey key(options.key);

  std::optional<LockGuard> guard;
  if (options.nonblock) {
    guard = co_await lock.try_acquire(key, options.ttl);
    if (!guard) {
      fmt::print(stderr, "lockstore: '{}' is held by another owner\n", key.str());
      co_return options.not_acquired_status;
    }
  } else {
    bool timed_out = false;
    try {
      auto acquiring = lock.acquire(key, options.ttl, options.wait.value_or(std::chrono::milliseconds::max()));
      guard.emplace(co_await std::move(acquiring));
    } catch (const Error& error) {
      if (error.code() != errc::timeout) throw;
      timed_out = true;
    }
    if (timed_out) {
      fmt::print(stderr, "lockstore: '{}' was still held after waiting {}\n", key.str(), format_duration(*options.wait));
      co_return options.not_acquired_status;
    }
  }

  // A lease whose grant came back with no time left to use it (the margin
  // included) does not start the command.
  if (std::chrono::steady_clock::now() >= guard->valid_until() - safety_margin(options.ttl)) {
    fmt::print(stderr, "lockstore: the lease on '{}' had no time left once granted; not starting {}\n", key.str(),
               options.command.front());
    co_await release_quietly(lock, *guard);
    co_return exit_lease_lost;
  }

  // Processes the command leaves behind (`sh -c 'work & wait'`) are
  // re-parented to this process instead of init, so that a lost lease can
  // stop them too (stop_leftovers).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Signals are watched before the child exists, so none is missed.
  asio::signal_set forwarded(executor, SIGINT, SIGTERM, SIGHUP);
  asio::signal_set child_ended(executor, SIGCHLD);
  const std::vector<std::string> environment = {
      "LOCKSTORE_KEY=" + key.str(), "LOCKSTORE_TOKEN=" + guard->token(), fmt::format("LOCKSTORE_FENCE={}", guard->fence())};
  const pid_t child = spawn(options.command, environment);
  if (child < 0) {
    fmt::print(stderr, "lockstore: cannot run '{}': {}\n", options.command.front(), std::strerror(-child));
    co_await release_quietly(lock, *guard);
    // As the shells do: 127 when there is no such command, 126 when there is
    // one that cannot be run.
    co_return -child == ENOENT ? exit_command_not_found : exit_cannot_exec;
  }

  std::function<void()> forward = [&] {
    forwarded.async_wait([&](boost::system::error_code error, int signal) {
      if (error) return;
      ::kill(child, signal);
      forward();
    });
  };
  forward();

  // The library's renewal (renew_while) runs beside the wait for the child:
  // when the lease is lost, or no renewal was confirmed by its assumed end
  // less the safety margin, the wait is cancelled, and the child gets
  // SIGTERM then, before another holder can get in, and SIGKILL after
  // --kill-after or at the lease's assumed end, whichever comes first: the
  // command never runs past it.
  int status = 0;
  auto wait_for_child = [&]() -> asio::awaitable<void> {
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
      if (::waitpid(child, &status, WNOHANG) == child) co_return;
      boost::system::error_code ignored;
      co_await child_ended.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none) break;
    }
    co_await asio::this_coro::reset_cancellation_state();
    fmt::print(stderr, "lockstore: the lease on '{}' (fence {}) was lost or is ending unconfirmed; sending SIGTERM "
               "to {} (pid {})\n", key.str(), guard->fence(), options.command.front(), child);
    ::kill(child, SIGTERM);
    const auto kill_at = std::min(std::chrono::steady_clock::now() + options.kill_after, guard->valid_until());
    bool killed = false;
    asio::steady_timer timer(executor);
    while (::waitpid(child, &status, WNOHANG) != child) {
      if (!killed && std::chrono::steady_clock::now() >= kill_at) {
        fmt::print(stderr, "lockstore: {} (pid {}) still ran at the lease's end or {} after SIGTERM; sending "
                   "SIGKILL\n", options.command.front(), child, format_duration(options.kill_after));
        ::kill(child, SIGKILL);
        killed = true;
      }
      timer.expires_at(killed ? std::chrono::steady_clock::time_point::max() : kill_at);
      co_await asio::experimental::make_parallel_group(child_ended.async_wait(asio::deferred),
                                                       timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    }
    stop_leftovers();
  };
  bool lost = false;
  try {
    auto running = renew_while(lock, *guard, options.ttl, wait_for_child);
    co_await std::move(running);
  } catch (const Error& error) {
    if (error.code() != errc::lock_lost) throw;
    lost = true;
  }
  forwarded.cancel();
  co_await release_quietly(lock, *guard);
  if (lost) co_return exit_lease_lost;
  if (WIFSIGNALED(status)) co_return 128 + WTERMSIG(status);
  co_return WEXITSTATUS(status);
}

}  // namespace lockstore::cli
