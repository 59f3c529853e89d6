// libFuzzer target: the checkpoint manifest decoder (bytes stored in the
// SQLite file, so anything a corrupted file holds). Properties: it returns a
// checkpoint or throws errc::corrupt_data, nothing else; what it returns
// encodes and decodes back to itself.
#include <lockstore/detail/manifest.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // libFuzzer's buffer holds exactly `size` bytes: reading past it is an ASan report.
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto checkpoint = lockstore::detail::decode_manifest(bytes);
    const auto again = lockstore::detail::decode_manifest(lockstore::detail::encode_manifest(checkpoint));
    if (again.parts.size() != checkpoint.parts.size()) std::abort();
    for (const auto& [name, ref] : checkpoint.parts)
      if (!again.parts.contains(name) || again.parts.at(name).hash != ref.hash) std::abort();
  } catch (const lockstore::Error& error) {
    if (error.code() != lockstore::errc::corrupt_data) std::abort();
  }
  return 0;
}
