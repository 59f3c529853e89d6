// Parsing of the tool's own argument types: backend URLs and durations.
// Errors are UsageError with one line that names what was wrong.
#pragma once

#include <boost/url/parse.hpp>
#include <fmt/format.h>

#include <algorithm>
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
  std::string location;  ///< the file for sqlite; what libpq is given for postgres; the URL for redis
};

/// The URL parsed by Boost.URL, or a usage error naming what is wrong.
inline boost::urls::url_view parsed_url(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed)
    throw UsageError(fmt::format("bad --backend URL '{}': not a valid URL ({}); characters such as spaces and '@' in "
                                 "a password must be percent-escaped (%20, %40)",
                                 url, parsed.error().message()));
  return *parsed;
}

/// A libpq connection string ("host=db port=5432 dbname=app"): its first
/// word is a keyword and '='.
inline bool is_conninfo(std::string_view text) {
  const auto equals = text.find('=');
  if (equals == std::string_view::npos || equals == 0) return false;
  const auto keyword = text.substr(0, equals);
  return std::all_of(keyword.begin(), keyword.end(),
                     [](char c) { return std::islower(static_cast<unsigned char>(c)) != 0 || c == '_'; });
}

/// The parts of redis://[[user]:password@]host[:port][/db], user and
/// password percent-decoded, an IPv6 host without its brackets.
struct RedisUrl {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string user, password;
  bool has_password = false;
  int database = 0;
};

inline RedisUrl parse_redis_url(std::string_view text) {
  const auto url = parsed_url(text);
  const auto bad = [&](std::string_view why) {
    return UsageError(
        fmt::format("bad --backend URL '{}': {} (expected redis://[[user]:password@]host[:port][/db])", text, why));
  };
  if (url.has_query() || url.has_fragment()) throw bad("it has a query or fragment, which lockstore does not read");
  RedisUrl parts;
  if (url.has_userinfo()) {
    if (!url.has_password()) throw bad("credentials need ':' before the password");
    parts.user = url.user();
    parts.password = url.password();
    parts.has_password = true;
  }
  if (!url.host_address().empty()) parts.host = url.host_address();
  if (url.has_port()) {
    const auto port = std::string_view(url.port());
    unsigned value = 0;
    const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (error != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
      throw bad(fmt::format("port '{}' is not a number from 1 to 65535", port));
    parts.port = static_cast<std::uint16_t>(value);
  }
  std::string_view path = url.encoded_path();
  if (path.starts_with("/")) path.remove_prefix(1);
  if (!path.empty()) {
    const auto [end, error] = std::from_chars(path.data(), path.data() + path.size(), parts.database);
    if (error != std::errc() || end != path.data() + path.size() || parts.database < 0)
      throw bad(fmt::format("database '{}' is not a number >= 0", path));
  }
  return parts;
}

/// `sqlite:PATH`, `postgres://...` (or postgresql://) or a libpq connection
/// string, `redis://[[user]:password@]host[:port][/db]`.
inline BackendUrl parse_backend_url(std::string_view url) {
  if (url.starts_with("sqlite:")) {
    auto path = url.substr(7);
    if (path.starts_with("//")) path.remove_prefix(2);  // sqlite:///abs/path as well as sqlite:PATH
    if (path.empty()) throw UsageError("bad --backend URL 'sqlite:': it needs a file path, e.g. sqlite:./lockstore.db");
    return {BackendUrl::Kind::sqlite, std::string(path)};
  }
  if (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
    parsed_url(url);  // libpq reads it; checked here so a typo is a usage error
    return {BackendUrl::Kind::postgres, std::string(url)};
  }
  if (is_conninfo(url)) return {BackendUrl::Kind::postgres, std::string(url)};
  if (url.starts_with("rediss://"))
    throw UsageError(fmt::format("bad --backend URL '{}': TLS (rediss://) is not supported; lockstore's Redis backend "
                                 "speaks plain TCP (reach a TLS server through a tunnel, and give redis://)",
                                 url));
  if (url.starts_with("unix:") || url.starts_with("redis+unix:") || url.starts_with("redis-socket:"))
    throw UsageError(fmt::format("bad --backend URL '{}': Unix sockets are not supported; lockstore's Redis backend "
                                 "speaks TCP (redis://host:port)",
                                 url));
  if (url.starts_with("redis://")) {
    parse_redis_url(url);  // every part checked now, whatever the binary was built with
    return {BackendUrl::Kind::redis, std::string(url)};
  }
  throw UsageError(fmt::format("bad --backend URL '{}': expected sqlite:PATH, postgres://..., a PostgreSQL "
                               "connection string (host=... dbname=...) or redis://host:port[/db]",
                               url));
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
