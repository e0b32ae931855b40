#include "filters/options.h"

#include <filesystem>

namespace sluice::filters {

Options::Options(const conf::FilterConfig& config, conf::Diagnostics& diagnostics)
    : diagnostics_(diagnostics),
      errors_before_(diagnostics.size()),
      file_{config.pos.file, std::filesystem::path(config.pos.file).parent_path()},
      section_(*config.options, "[[filters]] '" + config.name + "'", file_, diagnostics) {
  section_.get("name");  // read by conf/ already
  section_.get("type");
}

std::optional<bool> Options::boolean(std::string_view key) {
  bool out = false;
  return section_.boolean(key, out) ? std::optional<bool>(out) : std::nullopt;
}

std::optional<uint64_t> Options::size(std::string_view key) {
  uint64_t out = 0;
  return section_.size(key, out, 0, UINT64_MAX) ? std::optional<uint64_t>(out) : std::nullopt;
}

std::optional<conf::Duration> Options::duration(std::string_view key) {
  conf::Duration out{0};
  return section_.duration(key, out, conf::detail::Zero::kAllowed)
             ? std::optional<conf::Duration>(out)
             : std::nullopt;
}

std::optional<std::string> Options::string(std::string_view key) {
  std::string out;
  return section_.string(key, out) ? std::optional<std::string>(std::move(out)) : std::nullopt;
}

std::optional<std::vector<std::string>> Options::strings(std::string_view key) {
  std::vector<std::string> out;
  return section_.strings(key, out) ? std::optional<std::vector<std::string>>(std::move(out))
                                    : std::nullopt;
}

std::optional<std::string> Options::path(std::string_view key) {
  std::string out;
  return section_.path(key, out) ? std::optional<std::string>(std::move(out)) : std::nullopt;
}

std::optional<std::string> Options::oneOf(std::string_view key,
                                          const std::vector<std::string_view>& allowed) {
  std::string out;
  return section_.oneOf(key, out, allowed) ? std::optional<std::string>(std::move(out))
                                           : std::nullopt;
}

}  // namespace sluice::filters
