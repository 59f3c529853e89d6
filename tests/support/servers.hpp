// The PostgreSQL and Redis servers the server-backed suites run against.
// scripts/test.sh starts one of each (scripts/test-servers.sh) and exports
// where they are; a test that needs a server of its own (to restart or kill
// it) starts a private one with PrivateServer. A missing server is a test
// failure that says how to start one, never a skip.
#pragma once

#include "support/helpers.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#ifndef LOCKSTORE_SOURCE_DIR
#error "LOCKSTORE_SOURCE_DIR must name the source tree (for scripts/test-servers.sh)"
#endif

namespace lockstore::test {

inline std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(fmt::format(
        "{} is not set: run the suite with scripts/test.sh, or start servers with "
        "`scripts/test-servers.sh up DIR && source DIR/env`", name));
  return value;
}

/// The shared PostgreSQL server's conninfo.
inline std::string postgres_conninfo() { return required_env("LOCKSTORE_TEST_POSTGRES"); }

/// The shared Redis server as host and port.
inline std::pair<std::string, std::uint16_t> redis_endpoint() {
  const auto endpoint = required_env("LOCKSTORE_TEST_REDIS");
  const auto colon = endpoint.rfind(':');
  return {endpoint.substr(0, colon), static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1)))};
}

/// Runs scripts/test-servers.sh with `arguments`; throws if it fails.
inline void test_servers(const std::string& arguments) {
  const auto command = fmt::format("{}/scripts/test-servers.sh {}", LOCKSTORE_SOURCE_DIR, arguments);
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

/// A server of one test's own, in a temporary directory: "postgres" or
/// "redis". Stopped and removed at scope exit.
class PrivateServer {
 public:
  explicit PrivateServer(std::string kind, std::string options = "") : kind_(std::move(kind)) {
    test_servers(fmt::format("{} start {} {}", kind_, dir_.path().string(), options));
  }
  ~PrivateServer() {
    try {
      test_servers(fmt::format("{} stop {}", kind_, dir_.path().string()));
    } catch (const std::exception&) {
    }
  }
  PrivateServer(const PrivateServer&) = delete;
  PrivateServer& operator=(const PrivateServer&) = delete;

  void stop() { test_servers(fmt::format("{} stop {}", kind_, dir_.path().string())); }
  void start() { test_servers(fmt::format("{} start {}", kind_, dir_.path().string())); }
  void restart() { test_servers(fmt::format("{} restart {}", kind_, dir_.path().string())); }

  std::uint16_t port() const {
    std::ifstream in(dir_ / (kind_ + "/port"));
    int port = 0;
    in >> port;
    return static_cast<std::uint16_t>(port);
  }
  std::string conninfo() const {
    return fmt::format("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=5", port());
  }

 private:
  std::string kind_;
  TempDir dir_;
};

}  // namespace lockstore::test
