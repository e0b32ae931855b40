#include "filters/options.h"

namespace sluice::filters {

Options::Options(const conf::FilterConfig& config, conf::Diagnostics& diagnostics)
    : config_(config), diagnostics_(diagnostics) {}

conf::SourcePos Options::posOf(const toml::node* node) const {
  if (node == nullptr) {
    return config_.pos;
  }
  const toml::source_region& src = node->source();
  conf::SourcePos pos;
  pos.file = src.path ? *src.path : config_.pos.file;
  pos.line = src.begin.line;
  pos.column = src.begin.column;
  return pos;
}

void Options::error(std::string_view key, std::string message) {
  ++errors_;
  diagnostics_.push_back({posOf(config_.options->get(key)), std::move(message)});
}

void Options::allowOnly(std::initializer_list<std::string_view> known) {
  for (const auto& [key, node] : *config_.options) {
    std::string_view k = key.str();
    if (k == "name" || k == "type") {
      continue;
    }
    bool found = false;
    std::string list;
    for (std::string_view n : known) {
      found = found || n == k;
      list += list.empty() ? "" : ", ";
      list += n;
    }
    if (!found) {
      error(k, "unknown key '" + std::string(k) + "' for filter type '" + config_.type +
                   "' (known: " + list + ")");
    }
  }
}

std::optional<bool> Options::boolean(std::string_view key) {
  const toml::node* n = config_.options->get(key);
  if (n == nullptr) {
    return std::nullopt;
  }
  if (!n->is_boolean()) {
    error(key, "'" + std::string(key) + "' must be true or false");
    return std::nullopt;
  }
  return n->as_boolean()->get();
}

std::optional<uint64_t> Options::size(std::string_view key) {
  const toml::node* n = config_.options->get(key);
  if (n == nullptr) {
    return std::nullopt;
  }
  if (n->is_integer() && n->as_integer()->get() >= 0) {
    return static_cast<uint64_t>(n->as_integer()->get());
  }
  if (n->is_string()) {
    std::string why;
    if (auto v = conf::parseSize(n->as_string()->get(), &why)) {
      return v;
    }
    error(key, "'" + std::string(key) + "': " + why);
    return std::nullopt;
  }
  error(key, "'" + std::string(key) + "' must be a size (bytes, or a string like \"1MiB\")");
  return std::nullopt;
}

std::optional<std::vector<std::string>> Options::strings(std::string_view key) {
  const toml::node* n = config_.options->get(key);
  if (n == nullptr) {
    return std::nullopt;
  }
  const toml::array* arr = n->as_array();
  if (arr == nullptr || !(arr->empty() || arr->is_homogeneous(toml::node_type::string))) {
    error(key, "'" + std::string(key) + "' must be an array of strings");
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const toml::node& item : *arr) {
    out.push_back(item.as_string()->get());
  }
  return out;
}

}  // namespace sluice::filters
