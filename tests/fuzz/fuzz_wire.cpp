// libFuzzer target: what the servers send back. PostgreSQL's hex bytea text
// and the release notifications of both server backends (a channel may carry
// another program's messages). Properties: a value, "not ours" or
// errc::corrupt_data, nothing else; a decoded key encodes back to its hex.
#include <lockstore/detail/wire_text.hpp>

#include <fmt/format.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

std::string hex(const std::string& bytes) {
  std::string out;
  for (const unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lockstore::detail;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto bytes = pg_unhex_bytea(text);
    if ("\\x" + hex(bytes) != text) std::abort();
  } catch (const lockstore::Error& error) {
    if (error.code() != lockstore::errc::corrupt_data) std::abort();
  }
  if (const auto wakeup = parse_postgres_wakeup(text)) {
    if (!text.starts_with(hex(wakeup->key))) std::abort();
  }
  if (const auto wakeup = parse_redis_wakeup(text)) {
    if (!text.ends_with(":" + wakeup->key)) std::abort();
  }
  return 0;
}
