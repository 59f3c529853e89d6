// libFuzzer target: the command-line tool's parsers of backend URLs and
// durations. Properties: a result or a UsageError, nothing else (no
// out_of_range, no crash); a parsed duration is positive and formats.
#include "arguments.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lockstore::cli;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto url = parse_backend_url(text);
    if (url.kind == BackendUrl::Kind::redis) {
      const auto redis = parse_redis_url(url.location);
      if (redis.port == 0 || redis.database < 0) std::abort();
    }
  } catch (const UsageError&) {
  }
  try {
    const auto duration = parse_duration(text);
    if (duration.count() <= 0) std::abort();
    if (format_duration(duration).empty()) std::abort();
  } catch (const UsageError&) {
  }
  return 0;
}
