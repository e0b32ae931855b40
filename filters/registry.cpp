#include <string_view>

#include "filters/filter.h"

namespace sluice::filters {

namespace {

conf::SourcePos posOf(const toml::node& node, const conf::FilterConfig& config) {
  const toml::source_region& src = node.source();
  conf::SourcePos pos;
  pos.file = src.path ? *src.path : config.pos.file;
  pos.line = src.begin.line;
  pos.column = src.begin.column;
  return pos;
}

struct KeySpec {
  std::string_view name;
  enum Kind { kString, kBool, kSize, kStringArray } kind;
};

void checkKeys(const conf::FilterConfig& config, std::initializer_list<KeySpec> specs,
               conf::Diagnostics& out) {
  for (const auto& [key, node] : *config.options) {
    if (key.str() == "name" || key.str() == "type") {
      continue;
    }
    const KeySpec* spec = nullptr;
    for (const KeySpec& s : specs) {
      if (s.name == key.str()) {
        spec = &s;
      }
    }
    conf::SourcePos pos = posOf(node, config);
    if (spec == nullptr) {
      std::string known;
      for (const KeySpec& s : specs) {
        known += known.empty() ? "" : ", ";
        known += s.name;
      }
      out.push_back({pos, "unknown key '" + std::string(key.str()) + "' for filter type '" +
                              config.type + "' (known: " + known + ")"});
      continue;
    }
    bool ok = true;
    switch (spec->kind) {
      case KeySpec::kString:
        ok = node.is_string();
        break;
      case KeySpec::kBool:
        ok = node.is_boolean();
        break;
      case KeySpec::kSize:
        if (node.is_integer()) {
          ok = node.as_integer()->get() >= 0;
        } else if (node.is_string()) {
          std::string why;
          ok = conf::parseSize(node.as_string()->get(), &why).has_value();
        } else {
          ok = false;
        }
        break;
      case KeySpec::kStringArray:
        ok = node.is_array() && node.as_array()->is_homogeneous(toml::node_type::string);
        break;
    }
    if (!ok) {
      static constexpr const char* kWant[] = {"a string", "a boolean", "a size (bytes or \"1MiB\")",
                                              "an array of strings"};
      out.push_back({pos, "'" + std::string(key.str()) + "' must be " + kWant[spec->kind]});
    }
  }
}

}  // namespace

void validateFilterConfig(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  if (config.type == "origin") {
    checkKeys(config, {{"allow", KeySpec::kStringArray}, {"allow_missing", KeySpec::kBool}},
              diagnostics);
  } else if (config.type == "message_limits") {
    checkKeys(config,
              {{"max_message_bytes", KeySpec::kSize}, {"allow_types", KeySpec::kStringArray}},
              diagnostics);
  } else {
    conf::SourcePos pos = config.pos;
    if (const toml::node* t = config.options->get("type")) {
      pos = posOf(*t, config);
    }
    diagnostics.push_back(
        {pos, "unknown filter type '" + config.type + "' (known: origin, message_limits)"});
  }
}

}  // namespace sluice::filters
