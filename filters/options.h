#pragma once

// Reading a filter's own keys from its [[filters]] table: conf's Section reader (positions,
// typed getters, unknown keys reported with a did-you-mean), with getters that return optionals.
// Relative paths are resolved against the directory of the file the table is in.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/section.h"

namespace sluice::filters {

class Options {
 public:
  Options(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  std::optional<bool> boolean(std::string_view key);
  std::optional<uint64_t> size(std::string_view key);
  std::optional<conf::Duration> duration(std::string_view key);
  std::optional<std::string> string(std::string_view key);
  std::optional<std::vector<std::string>> strings(std::string_view key);
  std::optional<std::string> path(std::string_view key);
  std::optional<std::string> oneOf(std::string_view key,
                                   const std::vector<std::string_view>& allowed);
  template <typename T>
  std::optional<T> integer(std::string_view key, int64_t min, int64_t max) {
    T out{};
    return section_.integer(key, out, min, max) ? std::optional<T>(out) : std::nullopt;
  }
  // A sub-table (inline or not); null when absent or not a table (reported).
  const toml::table* table(std::string_view key) { return section_.table(key); }
  void error(std::string_view key, std::string message) { section_.error(key, std::move(message)); }
  // Reports every key that no getter asked for. Call once every key has been read.
  void finish() { section_.finish(); }
  // No problem reported since this reader was made.
  bool ok() const { return diagnostics_.size() == errors_before_; }
  conf::detail::Section& section() { return section_; }
  const conf::detail::FileContext& file() const { return file_; }

 private:
  conf::Diagnostics& diagnostics_;
  size_t errors_before_;
  conf::detail::FileContext file_;
  conf::detail::Section section_;
};

}  // namespace sluice::filters
