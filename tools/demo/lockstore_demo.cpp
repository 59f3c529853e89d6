// lockstore_demo: the README's main command. Worker processes contend for
// one key through `lockstore run` for a few seconds, each writing enter/exit
// lines with its fence to a shared ledger inside the lock. Then one holder is
// SIGKILLed mid-hold and the next holder takes over after the TTL with a
// larger fence. Prints a summary and exits non-zero if any check fails.
//
//   lockstore_demo [--seconds N] [--workers N]   (finds `lockstore` beside it)
// Internal modes, run by `lockstore run` inside the lock:
//   lockstore_demo --enter LEDGER WORKER   append enter/exit around a short hold
//   lockstore_demo --hold LEDGER           append enter, then hold until killed
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch()).count();
}

void append(const fs::path& ledger, const std::string& line) {
  std::ofstream(ledger, std::ios::app) << line << '\n' << std::flush;
}

std::vector<std::string> read_lines(const fs::path& ledger) {
  std::ifstream in(ledger);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

pid_t start(const std::vector<std::string>& argv, bool own_group = false) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (own_group) ::setpgid(0, 0);
    std::vector<char*> raw;
    for (const auto& a : argv) raw.push_back(const_cast<char*>(a.c_str()));
    raw.push_back(nullptr);
    ::execv(raw[0], raw.data());
    std::perror("exec");
    ::_exit(127);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<std::size_t>(p * static_cast<double>(values.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 3 && args[0] == "--enter") {  // inside the lock: one short critical section
    const auto requested = std::strtoll(std::getenv("DEMO_REQUESTED_US"), nullptr, 10);
    const std::string fence = std::getenv("LOCKSTORE_FENCE");
    append(args[1], fmt::format("enter {} {} {}", args[2], fence, now_us() - requested));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    append(args[1], fmt::format("exit {} {}", args[2], fence));
    return 0;
  }
  if (args.size() == 2 && args[0] == "--hold") {  // inside the lock: hold until killed
    append(args[1], fmt::format("enter victim {} 0", std::getenv("LOCKSTORE_FENCE")));
    std::this_thread::sleep_for(std::chrono::minutes(5));
    return 0;
  }

  const char* usage = "usage: lockstore_demo [--seconds N] [--workers N]\n"
                      "  N workers (1-64, default 4) contend for one key through `lockstore run` for N seconds\n"
                      "  (1-3600, default 5), then a holder is killed mid-hold; exits non-zero if a check fails.\n";
  int seconds = 5, workers = 4;
  // A whole number in [low, high], or a usage error naming the option.
  const auto number = [&](const std::string& option, const std::string& text, int low, int high) -> std::optional<int> {
    int value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value < low || value > high) {
      fmt::print(stderr, "lockstore_demo: {} must be a whole number from {} to {}, got '{}'\n{}", option, low, high,
                 text, usage);
      return std::nullopt;
    }
    return value;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      fmt::print("{}", usage);
      return 0;
    }
    const bool known = args[i] == "--seconds" || args[i] == "--workers";
    if (!known || i + 1 == args.size()) {
      fmt::print(stderr, "lockstore_demo: {} '{}'\n{}", known ? "missing value after" : "unknown argument", args[i],
                 usage);
      return 64;
    }
    const auto value = args[i] == "--seconds" ? number(args[i], args[i + 1], 1, 3600) : number(args[i], args[i + 1], 1, 64);
    if (!value) return 64;
    (args[i] == "--seconds" ? seconds : workers) = *value;
    ++i;
  }
  const fs::path self = fs::canonical("/proc/self/exe");
  const fs::path tool = self.parent_path().parent_path() / "lockstore" / "lockstore";
  const fs::path dir = fs::temp_directory_path() / fmt::format("lockstore-demo-{}", ::getpid());
  fs::create_directories(dir);
  const auto ledger = dir / "ledger.txt";
  const std::string backend = "sqlite:" + (dir / "demo.db").string();
  fmt::print("lockstore demo: {} workers contend for 'demo-key' for {} s ({}; ledger {})\n", workers, seconds,
             backend, ledger.string());

  // Phase 1: contention. Each worker is a loop of `lockstore run`.
  const auto stop_at = Clock::now() + std::chrono::seconds(seconds);
  std::vector<pid_t> loops;
  for (int w = 0; w < workers; ++w) {
    const pid_t loop = ::fork();
    if (loop == 0) {
      while (Clock::now() < stop_at) {
        ::setenv("DEMO_REQUESTED_US", std::to_string(now_us()).c_str(), 1);
        const int status = wait_status(start({tool.string(), "run", "--backend", backend, "--ttl", "5s",
                                              "demo-key", "--", self.string(), "--enter", ledger.string(),
                                              fmt::format("w{}", w)}));
        if (status != 0) ::_exit(status);
      }
      ::_exit(0);
    }
    loops.push_back(loop);
  }
  const bool terminal = ::isatty(STDOUT_FILENO) != 0;  // a redrawn line there, one line a second elsewhere
  for (int tick = 1; Clock::now() < stop_at; ++tick) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (terminal || tick % 4 == 0)
      fmt::print("{}acquisitions so far: {}{}", terminal ? "\r" : "", read_lines(ledger).size() / 2,
                 terminal ? "   " : "\n");
    std::fflush(stdout);
  }
  bool ok = true;
  for (const pid_t loop : loops) ok = wait_status(loop) == 0 && ok;
  if (terminal) fmt::print("\n");

  // The check: enter/exit alternate with the same worker and fence, fences increase.
  const auto lines = read_lines(ledger);
  std::map<std::string, int> per_worker;
  std::vector<double> waits_ms;
  std::uint64_t last_fence = 0;
  bool alternates = lines.size() % 2 == 0, increasing = true;
  for (std::size_t i = 0; i + 1 < lines.size(); i += 2) {
    std::istringstream enter(lines[i]), exit(lines[i + 1]);
    std::string e_word, x_word, e_worker, x_worker;
    std::uint64_t e_fence = 0, x_fence = 0;
    std::int64_t wait_us = 0;
    enter >> e_word >> e_worker >> e_fence >> wait_us;
    exit >> x_word >> x_worker >> x_fence;
    alternates = alternates && e_word == "enter" && x_word == "exit" && e_worker == x_worker && e_fence == x_fence;
    increasing = increasing && e_fence > last_fence;
    last_fence = e_fence;
    ++per_worker[e_worker];
    waits_ms.push_back(static_cast<double>(wait_us) / 1000.0);
  }
  fmt::print("acquisitions per worker:");
  for (const auto& [worker, count] : per_worker) fmt::print(" {}={}", worker, count);
  fmt::print("\nwait for the lock (request -> inside): p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms\n",
             percentile(waits_ms, 0.5), percentile(waits_ms, 0.99), percentile(waits_ms, 1.0));
  fmt::print("no two holders overlapped: {}\nfences strictly increased: {} (last fence {})\n",
             alternates ? "yes" : "NO", increasing ? "yes" : "NO", last_fence);
  ok = ok && alternates && increasing && !lines.empty();

  // Phase 2: a holder is SIGKILLed mid-hold; the next one waits out the TTL.
  const pid_t victim = start({tool.string(), "run", "--backend", backend, "--ttl", "2s", "demo-key", "--",
                              self.string(), "--hold", ledger.string()},
                             true);
  while (read_lines(ledger).size() == lines.size()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto victim_line = read_lines(ledger).back();
  ::kill(-victim, SIGKILL);  // the tool and its command: a crashed holder
  wait_status(victim);
  const auto killed_at = Clock::now();
  fmt::print("killed the holder ({}) with SIGKILL mid-hold; its lease has a 2 s TTL\n", victim_line);
  ::setenv("DEMO_REQUESTED_US", std::to_string(now_us()).c_str(), 1);
  const int next = wait_status(start({tool.string(), "run", "--backend", backend, "--wait", "10s", "demo-key", "--",
                                      self.string(), "--enter", ledger.string(), "next"}));
  const auto took_over_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed_at).count();
  const auto after = read_lines(ledger);
  std::uint64_t victim_fence = 0, next_fence = 0;
  std::istringstream(victim_line.substr(13)) >> victim_fence;
  std::string word, who;
  std::istringstream(after.size() >= 2 ? after[after.size() - 2] : "") >> word >> who >> next_fence;
  const bool takeover = next == 0 && who == "next" && next_fence > victim_fence && took_over_ms >= 1000;
  fmt::print("the next holder took over after {} ms with fence {} (killed holder had {}): {}\n", took_over_ms,
             next_fence, victim_fence, takeover ? "ok" : "FAILED");
  ok = ok && takeover;

  fs::remove_all(dir);
  fmt::print("{}\n", ok ? "demo passed" : "DEMO FAILED");
  return ok ? 0 : 1;
}
