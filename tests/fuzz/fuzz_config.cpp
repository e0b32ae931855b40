// Fuzzes config loading: TOML parsing, schema validation, value parsers and filter building.
// Nothing may crash or throw; a config either loads or yields positioned diagnostics.

#include <cstddef>
#include <cstdint>
#include <string>

#include "conf/config.h"
#include "filters/filter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  sluice::conf::LoadResult r =
      sluice::conf::loadString(text, "fuzz.toml", &sluice::filters::validateFilterConfig);
  if (r.config == nullptr && r.diagnostics.empty()) {
    __builtin_trap();  // a rejected config must say why
  }
  for (const auto& d : r.diagnostics) {
    (void)d.format();
  }
  (void)sluice::conf::parseDuration(text);
  (void)sluice::conf::parseSize(text);
  (void)sluice::conf::parseAddress(text);
  return 0;
}
