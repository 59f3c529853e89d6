// The torture ledger and its checker (docs/RELIABILITY.md).
//
// Every holder appends, with one O_APPEND write per line (atomic for lines
// this short), and with times from CLOCK_MONOTONIC, which every process on
// the machine shares:
//
//   enter <pid> <fence> <t_call> <t_held>   acquire was called at t_call and
//                                           returned the lease at t_held
//   exit  <pid> <fence> <t_exit>            still holding at t_exit, about to release
//   kill  <pid> <t_sent> <t_dead>           SIGKILL sent at t_sent, reaped at t_dead
//
// A hold is the interval [t_held, t_exit], or [t_held, t_dead] for a holder
// killed before its exit line. A holder runs on until the signal lands, after
// t_sent: its enter line may carry a t_held later than t_sent, never one later
// than t_dead. The checker proves:
//   - no two holds overlap, except where the earlier holder outlived its own
//     lease (the later hold began at or after the earlier t_call + TTL: the
//     lease may have expired, which the contract allows; counted, reported);
//   - fences strictly increase, both in ledger order and in hold order;
//   - every hold ends with an exit line or a kill (a worker that vanished on
//     its own is a failure elsewhere, but the ledger says so too);
//   - after every killed holder, the next hold began within `recovery_bound`
//     of the kill (the lease's TTL plus a waiter ticket's lifetime plus slack).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lockstore::torture {

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
inline std::int64_t monotonic_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

/// An append-only ledger file; one write() per line.
class LedgerFile {
 public:
  explicit LedgerFile(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)) {
    if (fd_ < 0) throw std::runtime_error("cannot open ledger " + path);
  }
  ~LedgerFile() { ::close(fd_); }
  LedgerFile(const LedgerFile&) = delete;
  LedgerFile& operator=(const LedgerFile&) = delete;

  void append(const std::string& line) const {
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error("ledger write failed");
  }

 private:
  int fd_;
};

struct Hold {
  std::int64_t pid = 0;
  std::uint64_t fence = 0;
  std::int64_t t_call = 0, t_held = 0, t_end = 0;
  bool killed = false;
  std::int64_t t_kill = 0;
};

struct LedgerReport {
  std::vector<std::string> violations;
  std::size_t holds = 0, kills = 0, holder_kills = 0, outlived_leases = 0;
  std::uint64_t first_fence = 0, last_fence = 0;
  std::vector<double> recovery_ms;  // kill of a holder -> next hold

  bool ok() const { return violations.empty(); }
};

inline double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

/// Checks a lock ledger (see the file comment). `ttl_ns` is the lease TTL the
/// holders used; `recovery_bound_ns` how soon after a holder's kill the next
/// hold must begin.
inline LedgerReport check_lock_ledger(const std::string& path, std::int64_t ttl_ns, std::int64_t recovery_bound_ns) {
  LedgerReport report;
  auto violation = [&](std::string text) {
    if (report.violations.size() < 20) report.violations.push_back(std::move(text));
  };
  std::ifstream in(path);
  if (!in) {
    violation("cannot read ledger " + path);
    return report;
  }
  std::vector<Hold> holds;
  std::map<std::pair<std::int64_t, std::uint64_t>, std::size_t> by_pid_fence;
  std::map<std::int64_t, std::vector<std::size_t>> by_pid;
  struct Kill {
    std::int64_t pid, t_sent, t_dead;
  };
  std::vector<Kill> kills;
  std::uint64_t last_fence_in_file = 0;
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    std::istringstream fields(line);
    std::string word;
    fields >> word;
    if (word == "enter") {
      Hold hold;
      fields >> hold.pid >> hold.fence >> hold.t_call >> hold.t_held;
      if (!fields) {
        violation("line " + std::to_string(number) + " is malformed: " + line);
        continue;
      }
      if (hold.fence <= last_fence_in_file)
        violation("line " + std::to_string(number) + ": fence " + std::to_string(hold.fence) +
                  " does not exceed the previous " + std::to_string(last_fence_in_file));
      last_fence_in_file = std::max(last_fence_in_file, hold.fence);
      by_pid_fence[{hold.pid, hold.fence}] = holds.size();
      by_pid[hold.pid].push_back(holds.size());
      holds.push_back(hold);
    } else if (word == "exit") {
      std::int64_t pid = 0, t_exit = 0;
      std::uint64_t fence = 0;
      fields >> pid >> fence >> t_exit;
      const auto found = by_pid_fence.find({pid, fence});
      if (!fields || found == by_pid_fence.end() || holds[found->second].t_end != 0) {
        violation("line " + std::to_string(number) + ": exit without its enter: " + line);
        continue;
      }
      holds[found->second].t_end = t_exit;
    } else if (word == "kill") {
      Kill kill{};
      fields >> kill.pid >> kill.t_sent >> kill.t_dead;
      if (!fields) {
        violation("line " + std::to_string(number) + " is malformed: " + line);
        continue;
      }
      kills.push_back(kill);
    } else if (!line.empty()) {
      violation("line " + std::to_string(number) + " is not a ledger line: " + line);
    }
  }
  report.kills = kills.size();
  // A kill ends its process's open hold, if it had one: one entered before
  // the process was reaped (the signal lands some time after t_sent, and the
  // holder may enter meanwhile), ending at the latest when it was reaped.
  for (const auto& kill : kills) {
    const auto it = by_pid.find(kill.pid);
    if (it == by_pid.end()) continue;
    for (const std::size_t index : it->second) {
      auto& hold = holds[index];
      if (hold.t_end == 0 && hold.t_held <= kill.t_dead) {
        hold.t_end = kill.t_dead;
        hold.killed = true;
        hold.t_kill = kill.t_sent;
        ++report.holder_kills;
      }
    }
  }
  for (const auto& hold : holds)
    if (hold.t_end == 0)
      violation("process " + std::to_string(hold.pid) + " entered with fence " + std::to_string(hold.fence) +
                " and neither exited nor was killed");

  std::sort(holds.begin(), holds.end(), [](const Hold& a, const Hold& b) { return a.t_held < b.t_held; });
  report.holds = holds.size();
  if (!holds.empty()) {
    report.first_fence = holds.front().fence;
    report.last_fence = holds.back().fence;
  }
  const Hold* latest_end = nullptr;  // the earlier hold that ends last
  for (std::size_t i = 0; i < holds.size(); ++i) {
    const auto& hold = holds[i];
    if (i > 0) {
      const auto& previous = holds[i - 1];
      if (hold.fence <= previous.fence)
        violation("fence " + std::to_string(hold.fence) + " (process " + std::to_string(hold.pid) +
                  ") was held after fence " + std::to_string(previous.fence) + " (process " +
                  std::to_string(previous.pid) + ")");
      if (previous.killed) {
        const auto recovery = hold.t_held - previous.t_kill;
        report.recovery_ms.push_back(static_cast<double>(recovery) / 1e6);
        if (recovery > recovery_bound_ns)
          violation("after process " + std::to_string(previous.pid) + " was killed holding fence " +
                    std::to_string(previous.fence) + ", the next hold began only " +
                    std::to_string(recovery / 1'000'000) + " ms later");
      }
    }
    if (latest_end != nullptr && hold.t_held < latest_end->t_end) {
      if (hold.t_held >= latest_end->t_call + ttl_ns) {
        ++report.outlived_leases;  // the earlier holder outlived its lease
      } else {
        violation("process " + std::to_string(hold.pid) + " held fence " + std::to_string(hold.fence) +
                  " while process " + std::to_string(latest_end->pid) + " still held fence " +
                  std::to_string(latest_end->fence) + " within its lease (overlap " +
                  std::to_string((latest_end->t_end - hold.t_held) / 1000) + " us)");
      }
    }
    if (latest_end == nullptr || hold.t_end > latest_end->t_end) latest_end = &hold;
  }
  return report;
}

}  // namespace lockstore::torture
