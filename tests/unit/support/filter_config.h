#pragma once

// A [[filters]] entry for a unit test, from its TOML text (name, type and the type's keys), as
// the config loader would hand it to the filter registry.

#include <toml++/toml.h>

#include <memory>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace sluice::testing {

// `file`: the config file the entry claims to come from (relative paths resolve beside it).
inline conf::FilterConfig filterConfig(const std::string& toml,
                                       const std::string& file = "test.toml") {
  auto table =
      std::make_shared<toml::table>(toml::parse(std::string_view(toml), std::string_view(file)));
  conf::FilterConfig c;
  c.name = table->get("name")->as_string()->get();
  c.type = table->get("type")->as_string()->get();
  c.options = table;
  c.pos = {file, 1, 1};
  return c;
}

}  // namespace sluice::testing
