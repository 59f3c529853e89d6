// Parsing of the tool's own argument types: backend URLs and durations.
// Errors are UsageError with one line that names what was wrong.
#pragma once

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lockstore::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct BackendUrl {
  enum class Kind { sqlite, postgres, redis } kind;
  std::string location;  ///< the file for sqlite; the whole URL otherwise
};

/// `sqlite:PATH`, `postgres://...` (or postgresql://), `redis://host:port[/db]`.
inline BackendUrl parse_backend_url(std::string_view url) {
  if (url.starts_with("sqlite:")) {
    auto path = url.substr(7);
    if (path.starts_with("//")) path.remove_prefix(2);  // sqlite:///abs/path as well as sqlite:PATH
    if (path.empty()) throw UsageError("bad --backend URL 'sqlite:': it needs a file path, e.g. sqlite:./lockstore.db");
    return {BackendUrl::Kind::sqlite, std::string(path)};
  }
  if (url.starts_with("postgres://") || url.starts_with("postgresql://")) return {BackendUrl::Kind::postgres, std::string(url)};
  if (url.starts_with("redis://")) return {BackendUrl::Kind::redis, std::string(url)};
  throw UsageError(fmt::format("bad --backend URL '{}': expected sqlite:PATH, postgres://... or redis://host:port[/db]", url));
}

/// A positive duration with a unit: 500ms, 30s, 5m, 2h.
inline std::chrono::milliseconds parse_duration(std::string_view text) {
  std::int64_t amount = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), amount);
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  const auto bad = [&](std::string_view why) {
    return UsageError(fmt::format("bad duration '{}': {} (use e.g. 500ms, 30s, 5m, 2h)", text, why));
  };
  if (error != std::errc() || end == text.data()) throw bad("it must start with a whole number");
  if (amount <= 0) throw bad("it must be positive");
  std::int64_t factor = 0;
  if (unit == "ms") factor = 1;
  else if (unit == "s") factor = 1000;
  else if (unit == "m") factor = 60'000;
  else if (unit == "h") factor = 3'600'000;
  else throw bad(unit.empty() ? "the unit is missing" : "unknown unit");
  if (amount > std::numeric_limits<std::int64_t>::max() / factor / 1000) throw bad("it is too large");
  return std::chrono::milliseconds(amount * factor);
}

inline std::string format_duration(std::chrono::milliseconds duration) {
  const auto ms = duration.count();
  if (ms < 10'000) return fmt::format("{}ms", ms);
  if (ms < 600'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000);
  return fmt::format("{:.1f}m", static_cast<double>(ms) / 60'000);
}

}  // namespace lockstore::cli
