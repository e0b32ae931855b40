#pragma once

// Reading a filter's own keys from its [[filters]] table, with positions for diagnostics.

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace sluice::filters {

class Options {
 public:
  Options(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  // Reports every key not in `known` (name and type are always known).
  void allowOnly(std::initializer_list<std::string_view> known);
  std::optional<bool> boolean(std::string_view key);
  std::optional<uint64_t> size(std::string_view key);
  std::optional<std::vector<std::string>> strings(std::string_view key);
  void error(std::string_view key, std::string message);
  bool ok() const { return errors_ == 0; }

 private:
  conf::SourcePos posOf(const toml::node* node) const;

  const conf::FilterConfig& config_;
  conf::Diagnostics& diagnostics_;
  size_t errors_ = 0;
};

}  // namespace sluice::filters
