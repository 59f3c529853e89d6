// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The checkpoint manifest: the blob that names a checkpoint's parts.
//
//   lockstore-checkpoint/1\n
//   <64 hex hash> <name length in bytes> <name>\n     (one line per part, by name)
//
// The length prefix lets a name hold any bytes, newlines included. Decoding
// is strict: anything else is errc::corrupt_data naming what was wrong.
#pragma once

#include "lockstore/detail/sha256.hpp"
#include "lockstore/error.hpp"
#include "lockstore/store_types.hpp"

#include <charconv>
#include <string>
#include <string_view>

namespace lockstore::detail {

inline constexpr std::string_view manifest_header = "lockstore-checkpoint/1\n";

inline std::string encode_manifest(const Checkpoint& checkpoint) {
  std::string out(manifest_header);
  for (const auto& [name, ref] : checkpoint.parts) out += fmt::format("{} {} {}\n", ref.hash, name.size(), name);
  return out;
}

inline Checkpoint decode_manifest(std::string_view bytes) {
  const auto fail = [&](std::string_view what, std::size_t offset) -> Error {
    return Error(errc::corrupt_data, fmt::format("checkpoint manifest is corrupt: {} at byte {}", what, offset));
  };
  if (!bytes.starts_with(manifest_header)) throw fail("missing 'lockstore-checkpoint/1' header", 0);
  Checkpoint checkpoint;
  std::size_t at = manifest_header.size();
  std::string previous;
  while (at < bytes.size()) {
    if (bytes.size() - at < 66) throw fail("truncated part line", at);
    const auto hash = bytes.substr(at, 64);
    if (!is_sha256_hex(hash) || bytes[at + 64] != ' ') throw fail("bad part hash", at);
    at += 65;
    std::size_t length = 0;
    const auto* begin = bytes.data() + at;
    const auto [end, error] = std::from_chars(begin, bytes.data() + bytes.size(), length);
    // `end` may be one past the last byte: test it before reading there.
    if (error != std::errc() || end == begin || end == bytes.data() + bytes.size() || *end != ' ')
      throw fail("bad part name length", at);
    at += static_cast<std::size_t>(end - begin) + 1;
    if (length == 0 || length > bytes.size() - at || at + length >= bytes.size() || bytes[at + length] != '\n')
      throw fail("part name does not fit its length", at);
    std::string name(bytes.substr(at, length));
    if (!checkpoint.parts.empty() && name <= previous) throw fail("part names out of order or repeated", at);
    at += length + 1;
    previous = name;
    checkpoint.parts.emplace(std::move(name), BlobRef{std::string(hash)});
  }
  return checkpoint;
}

}  // namespace lockstore::detail
