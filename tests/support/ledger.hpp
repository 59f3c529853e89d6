// The ledger check every multi-process exclusion test uses: each holder
// appends "enter <process> <fence>" on acquiring and "exit <process> <fence>"
// before releasing, with O_APPEND writes; afterwards the lines must pair up
// (no two holders inside at once) and fences must strictly increase.
#pragma once

#include "support/helpers.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lockstore::test {

/// One process's append-only handle on the ledger.
class LedgerWriter {
 public:
  explicit LedgerWriter(const std::filesystem::path& path) : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)) {
    if (fd_ < 0) throw std::runtime_error("cannot open ledger " + path.string());
  }
  ~LedgerWriter() { ::close(fd_); }
  LedgerWriter(const LedgerWriter&) = delete;
  LedgerWriter& operator=(const LedgerWriter&) = delete;

  void enter(int process, std::uint64_t fence) { write(fmt::format("enter {} {}\n", process, fence)); }
  void exit(int process, std::uint64_t fence) { write(fmt::format("exit {} {}\n", process, fence)); }

 private:
  void write(const std::string& line) {
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error("ledger write failed");
  }
  int fd_;
};

/// Asserts the ledger holds `holds` enter/exit pairs, never interleaved,
/// with strictly increasing fences.
inline void check_ledger(const std::filesystem::path& path, std::size_t holds) {
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  REQUIRE(lines.size() == 2 * holds);
  std::uint64_t last_fence = 0;
  for (std::size_t i = 0; i < lines.size(); i += 2) {
    std::istringstream enter(lines[i]);
    std::istringstream exit(lines[i + 1]);
    std::string enter_word, exit_word;
    int enter_process = -1, exit_process = -2;
    std::uint64_t enter_fence = 0, exit_fence = 0;
    enter >> enter_word >> enter_process >> enter_fence;
    exit >> exit_word >> exit_process >> exit_fence;
    INFO("ledger lines " << i << " and " << i + 1 << ": '" << lines[i] << "' / '" << lines[i + 1] << "'");
    REQUIRE(enter_word == "enter");
    REQUIRE(exit_word == "exit");
    REQUIRE(enter_process == exit_process);
    REQUIRE(enter_fence == exit_fence);
    REQUIRE(enter_fence > last_fence);
    last_fence = enter_fence;
  }
}

}  // namespace lockstore::test
