// Parsing of the tool's own argument types: backend URLs and durations.
// Errors are UsageError with one line that names what was wrong.
#pragma once

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdint>
#include <limits>
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

/// The parts of redis://[[user]:password@]host[:port][/db] (user and
/// password percent-decoded).
struct RedisUrl {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string user, password;
  bool has_password = false;
  int database = 0;
};

inline std::string percent_decoded(std::string_view text, std::string_view url) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    int value = 0;
    if (i + 2 >= text.size() || std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16).ptr != text.data() + i + 3)
      throw UsageError(fmt::format("bad --backend URL '{}': a '%' must be followed by two hex digits", url));
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

inline RedisUrl parse_redis_url(std::string_view url) {
  RedisUrl parts;
  auto rest = url.substr(8);  // after redis://
  const auto bad = [&](std::string_view why) {
    return UsageError(fmt::format("bad --backend URL '{}': {} (expected redis://[[user]:password@]host[:port][/db])", url, why));
  };
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const auto credentials = rest.substr(0, at);
    rest.remove_prefix(at + 1);
    const auto colon = credentials.find(':');
    if (colon == std::string_view::npos) throw bad("credentials need ':' before the password");
    parts.user = percent_decoded(credentials.substr(0, colon), url);
    parts.password = percent_decoded(credentials.substr(colon + 1), url);
    parts.has_password = true;
  }
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    const auto db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) {
      const auto [end, error] = std::from_chars(db.data(), db.data() + db.size(), parts.database);
      if (error != std::errc() || end != db.data() + db.size() || parts.database < 0)
        throw bad(fmt::format("database '{}' is not a number >= 0", db));
    }
  }
  if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    const auto port = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    unsigned value = 0;
    const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (error != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
      throw bad(fmt::format("port '{}' is not a number from 1 to 65535", port));
    parts.port = static_cast<std::uint16_t>(value);
  }
  if (!rest.empty()) parts.host = std::string(rest);
  return parts;
}

/// A positive duration with a unit: 500ms, 30s, 5m, 2h.
/// A duration: a number, whole or decimal, and a unit (ms, s, m, h): 500ms,
/// 1.5s, 5m. At least 1 ms; with `allow_zero`, also 0 (with or without a
/// unit), for --wait 0.
inline std::chrono::milliseconds parse_duration(std::string_view text, bool allow_zero = false) {
  const auto bad = [&](std::string_view why) {
    return UsageError(fmt::format("bad duration '{}': {} (use e.g. 500ms, 1.5s, 30s, 5m, 2h)", text, why));
  };
  std::size_t digits = 0;
  bool point = false;
  while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) != 0 ||
                                  (text[digits] == '.' && !point))) {
    point = point || text[digits] == '.';
    ++digits;
  }
  const std::string_view number = text.substr(0, digits), unit = text.substr(digits);
  if (number.empty() || number == "." || number.back() == '.') throw bad("it must start with a number");
  double amount = 0;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), amount);
  if (error != std::errc() || end != number.data() + number.size()) throw bad("it must start with a number");
  if (amount == 0 && allow_zero && (unit.empty() || unit == "ms" || unit == "s" || unit == "m" || unit == "h"))
    return std::chrono::milliseconds::zero();
  double factor = 0;
  if (unit == "ms") factor = 1;
  else if (unit == "s") factor = 1000;
  else if (unit == "m") factor = 60'000;
  else if (unit == "h") factor = 3'600'000;
  else throw bad(unit.empty() ? "the unit is missing" : "unknown unit");
  const double ms = amount * factor;
  if (ms > 1e15) throw bad("it is too large");
  if (ms < 1) throw bad(allow_zero ? "it must be 0 or at least 1 ms" : "it must be at least 1 ms");
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

inline std::string format_duration(std::chrono::milliseconds duration) {
  const auto ms = duration.count();
  if (ms < 10'000) return fmt::format("{}ms", ms);
  if (ms < 600'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000);
  return fmt::format("{:.1f}m", static_cast<double>(ms) / 60'000);
}

}  // namespace lockstore::cli
