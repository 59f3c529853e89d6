// Command-line options of the benchmarks, and where the benchmark servers
// are: a command-line flag, else the variable scripts/bench.sh (and
// scripts/test.sh) export for its throwaway servers.
#pragma once

#include <lockstore/redis.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lockstore::bench {

/// The value after `flag`, else `fallback`.
inline std::string option(const std::vector<std::string_view>& args, std::string_view flag, std::string fallback) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag) return std::string(args[i + 1]);
  return fallback;
}

/// "a,b,c" -> {a, b, c}; empty parts are dropped.
inline std::vector<std::string> split(std::string_view list) {
  std::vector<std::string> parts;
  std::stringstream stream{std::string(list)};
  for (std::string part; std::getline(stream, part, ',');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

/// The value after `flag`, else $variable; throws when neither is given.
inline std::string setting(const std::vector<std::string_view>& args, std::string_view flag, const char* variable) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag) return std::string(args[i + 1]);
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(fmt::format("give {} or set {} (scripts/bench.sh starts servers)", flag, variable));
  return value;
}

/// HOST:PORT, with a key prefix of this process's own.
inline lockstore::RedisOptions redis_options(const std::string& endpoint) {
  lockstore::RedisOptions options;
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error(fmt::format("Redis endpoint '{}' is not HOST:PORT", endpoint));
  options.host = endpoint.substr(0, colon);
  options.port = static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1)));
  options.key_prefix = fmt::format("bench{}:", ::getpid());
  return options;
}

}  // namespace lockstore::bench
