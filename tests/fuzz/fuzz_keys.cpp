// libFuzzer target: AdvisoryKey and AdvisoryKey::for_session on any bytes.
// Input: byte 0 picks where the tenant ends; the rest is tenant, then thread.
// Properties: construction succeeds exactly for 1..512 bytes without NUL
// (errc::invalid_argument otherwise); a session key reads back to the same
// (tenant, thread), so the map is injective.
#include <lockstore/key.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using lockstore::AdvisoryKey;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const bool valid = !bytes.empty() && bytes.size() <= AdvisoryKey::max_size && bytes.find('\0') == std::string::npos;
  try {
    const AdvisoryKey key(bytes);
    require(valid && key.str() == bytes && key.hash64() == AdvisoryKey(bytes).hash64());
  } catch (const lockstore::Error& error) {
    require(!valid && error.code() == lockstore::errc::invalid_argument);
  }
  if (size < 1) return 0;
  const std::size_t split = 1 + (data[0] % size);
  const std::string tenant_id = bytes.substr(1, split - 1);
  const std::string thread = bytes.substr(split);
  try {
    const lockstore::TenantId tenant(tenant_id);
    const auto key = AdvisoryKey::for_session(tenant, thread);
    // Read it back: "session:<tenant length>:<tenant>:<thread>".
    const std::string& name = key.str();
    require(name.starts_with("session:"));
    const auto colon = name.find(':', 8);
    require(colon != std::string::npos);
    const auto length = std::stoul(name.substr(8, colon - 8));
    require(name.substr(colon + 1, length) == tenant_id);
    require(name[colon + 1 + length] == ':');
    require(name.substr(colon + 2 + length) == thread);
  } catch (const lockstore::Error& error) {
    require(error.code() == lockstore::errc::invalid_argument);
  }
  return 0;
}
