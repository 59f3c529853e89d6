// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The tool's --json output, built with Boost.JSON. Keys, owners and session
// ids are bytes, not necessarily UTF-8, and JSON text must be UTF-8: a
// value that is not is printed with U+FFFD for each bad byte, and the
// object gets a "<field>_hex" beside it with the exact bytes: the output
// stays parseable and nothing about the value is lost.
#pragma once

#include <boost/json.hpp>
#include <fmt/format.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace lockstore::cli {

/// The length of the valid UTF-8 sequence starting at text[i], or 0.
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t at) { return static_cast<unsigned char>(text[at]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) length = 2;
  else if (lead == 0xE0) length = 3, low = 0xA0;
  else if (lead >= 0xE1 && lead <= 0xEC) length = 3;
  else if (lead == 0xED) length = 3, high = 0x9F;  // no UTF-16 surrogates
  else if (lead >= 0xEE && lead <= 0xEF) length = 3;
  else if (lead == 0xF0) length = 4, low = 0x90;
  else if (lead >= 0xF1 && lead <= 0xF3) length = 4;
  else if (lead == 0xF4) length = 4, high = 0x8F;  // nothing above U+10FFFF
  else return 0;
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return length;
}

/// `text` with every byte that does not start a valid UTF-8 sequence
/// replaced by U+FFFD; `replaced` tells whether any was.
inline std::string valid_utf8(std::string_view text, bool& replaced) {
  std::string out;
  replaced = false;
  for (std::size_t i = 0; i < text.size();) {
    if (const auto length = utf8_sequence_length(text, i); length != 0) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out += "\xEF\xBF\xBD";
      replaced = true;
      ++i;
    }
  }
  return out;
}

/// Sets `object[field]` to `text` as valid UTF-8, and `object[field_hex]`
/// to its bytes in hex when it was not.
inline void put_text(boost::json::object& object, std::string_view field, std::string_view text) {
  bool replaced = false;
  object[field] = valid_utf8(text, replaced);
  if (!replaced) return;
  std::string hex;
  for (const char c : text) hex += fmt::format("{:02x}", static_cast<unsigned char>(c));
  object[std::string(field) + "_hex"] = hex;
}

inline void print_json(const boost::json::value& value) { fmt::print("{}\n", boost::json::serialize(value)); }

}  // namespace lockstore::cli
