// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// Decoders of the text the servers hand back: PostgreSQL's hex bytea output
// and the release notifications of both server backends. Anything on the
// wire may be another program's (a channel is just a name), so these never
// trust their input: bad bytes give errc::corrupt_data or "not ours".
// tests/fuzz runs them under libFuzzer.
#pragma once

#include "lockstore/error.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lockstore::detail {

/// Decodes PostgreSQL's text output of a bytea (`\x` followed by hex).
inline std::string pg_unhex_bytea(std::string_view text) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0)
    throw Error(errc::corrupt_data, fmt::format("PostgreSQL returned a bytea that is not hex: '{}'", text));
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw Error(errc::corrupt_data, fmt::format("PostgreSQL returned a bytea that is not hex: '{}'", text));
  };
  std::string bytes;
  bytes.reserve(text.size() / 2 - 1);
  for (std::size_t at = 2; at < text.size(); at += 2)
    bytes.push_back(static_cast<char>(nibble(text[at]) * 16 + nibble(text[at + 1])));
  return bytes;
}

/// A release notification: whose key, and which waiter is next in line
/// (0: unknown, every waiter on the key looks again).
struct Wakeup {
  std::string key;
  std::int64_t next_ticket = 0;
};

/// Redis: "<next ticket>:<key>". No colon: not ours. A ticket that does not
/// parse as a whole number counts as 0.
inline std::optional<Wakeup> parse_redis_wakeup(std::string_view payload) {
  const auto colon = payload.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  Wakeup wakeup{std::string(payload.substr(colon + 1)), 0};
  const auto [end, error] = std::from_chars(payload.data(), payload.data() + colon, wakeup.next_ticket);
  if (error != std::errc() || end != payload.data() + colon) wakeup.next_ticket = 0;
  return wakeup;
}

/// PostgreSQL: "<key in lower-case hex>[:<next ticket>]". Anything else
/// (bad hex, a ticket that is not a whole number) is not ours.
inline std::optional<Wakeup> parse_postgres_wakeup(std::string_view payload) {
  const auto colon = payload.find(':');
  Wakeup wakeup;
  if (colon != std::string_view::npos) {
    const auto ticket = payload.substr(colon + 1);
    const auto [end, error] = std::from_chars(ticket.data(), ticket.data() + ticket.size(), wakeup.next_ticket);
    if (error != std::errc() || end != ticket.data() + ticket.size()) return std::nullopt;
  }
  try {
    wakeup.key = pg_unhex_bytea("\\x" + std::string(payload.substr(0, colon)));
  } catch (const Error&) {
    return std::nullopt;
  }
  return wakeup;
}

}  // namespace lockstore::detail
