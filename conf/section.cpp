#include "conf/section.h"

#include <algorithm>
#include <cmath>
#include <system_error>

#include "conf/text.h"

namespace sluice::conf::detail {
namespace {

bool hasControlCharacters(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

}  // namespace

std::optional<std::string> resolvePath(std::string_view text, const std::filesystem::path& dir,
                                       std::string& why) {
  if (text.empty()) {
    why = "must not be empty";
    return std::nullopt;
  }
  if (hasControlCharacters(text)) {
    why = "must not contain control characters";
    return std::nullopt;
  }
  std::filesystem::path path(text);
  if (path.is_relative()) {
    path = dir / path;
  }
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  return (ec ? path : absolute).lexically_normal().string();
}

std::string formatPos(const SourcePos& pos) {
  std::string out = pos.file;
  if (pos.line > 0) {
    out += ':' + std::to_string(pos.line) + ':' + std::to_string(pos.column);
  }
  return out;
}

SourcePos positionOf(const toml::source_region& region, const std::string& fallback_file) {
  return SourcePos{region.path ? *region.path : fallback_file, region.begin.line,
                   region.begin.column};
}

std::string_view typeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::array:
      return "array";
    case toml::node_type::table:
      return "table";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

Section::Section(const toml::table& table, std::string title, const FileContext& file,
                 Diagnostics& diagnostics)
    : table_(table), title_(std::move(title)), file_(file), diagnostics_(diagnostics) {}

const toml::node* Section::get(std::string_view key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) {
    known_.emplace_back(key);
  }
  return table_.get(key);
}

void Section::require(std::initializer_list<std::string_view> keys) {
  for (std::string_view key : keys) {
    if (get(key) == nullptr) {
      error(pos(), "missing required key " + quoteName(key) + " " + where());
    }
  }
}

bool Section::string(std::string_view key, std::string& out, const StringCheck& check) {
  return read(key, out,
              [&](const toml::node& node, std::string& message) -> std::optional<std::string> {
                const std::optional<std::string_view> value = node.value_exact<std::string_view>();
                if (!value) {
                  message = mustBe(key, "a string", node);
                  return std::nullopt;
                }
                if (!check) {
                  return std::string(*value);
                }
                std::string why;
                std::optional<std::string> checked = check(*value, why);
                if (!checked) {
                  message = quoteName(key) + " " + why;
                }
                return checked;
              });
}

bool Section::boolean(std::string_view key, bool& out) {
  return read(key, out, [&](const toml::node& node, std::string& message) {
    const std::optional<bool> value = node.value_exact<bool>();
    if (!value) {
      message = mustBe(key, "a boolean (true or false)", node);
    }
    return value;
  });
}

bool Section::positiveNumber(std::string_view key, double& out) {
  return read(key, out, [&](const toml::node& node, std::string& message) -> std::optional<double> {
    if (!node.is_number()) {
      message = mustBe(key, "a number", node);
      return std::nullopt;
    }
    const double value = *node.value<double>();
    if (!std::isfinite(value) || value <= 0) {
      message = quoteName(key) + " must be greater than 0";
      return std::nullopt;
    }
    return value;
  });
}

bool Section::duration(std::string_view key, Duration& out, Zero zero) {
  return read(
      key, out, [&](const toml::node& node, std::string& message) -> std::optional<Duration> {
        const std::optional<std::string_view> text = node.value_exact<std::string_view>();
        if (!text) {
          message = mustBe(key, "a duration string", node);
          if (node.is_number()) {
            message += "; use a string with a unit, e.g. \"30s\"";
          }
          return std::nullopt;
        }
        std::string why;
        const std::optional<Duration> value = parseDuration(*text, &why);
        if (!value) {
          message = quoteName(key) + " has an invalid duration " + quote(*text) + ": " + why;
        } else if (zero == Zero::kRejected && value->count() == 0) {
          message = quoteName(key) + " must be longer than 0s";
          return std::nullopt;
        }
        return value;
      });
}

bool Section::size(std::string_view key, uint64_t& out, uint64_t min, uint64_t max) {
  return read(key, out,
              [&](const toml::node& node, std::string& message) -> std::optional<uint64_t> {
                std::optional<uint64_t> value;
                if (const std::optional<int64_t> bytes = node.value_exact<int64_t>()) {
                  if (*bytes < 0) {
                    message = quoteName(key) + " must not be negative";
                    return std::nullopt;
                  }
                  value = static_cast<uint64_t>(*bytes);
                } else if (const std::optional<std::string_view> text =
                               node.value_exact<std::string_view>()) {
                  std::string why;
                  value = parseSize(*text, &why);
                  if (!value) {
                    message = quoteName(key) + " has an invalid size " + quote(*text) + ": " + why;
                    return std::nullopt;
                  }
                } else {
                  message = mustBe(key, "a size (bytes, or a string like \"16KiB\")", node);
                  return std::nullopt;
                }
                if (*value < min || *value > max) {
                  message = quoteName(key) + " must be between " + std::to_string(min) + " and " +
                            std::to_string(max) + " bytes, got " + std::to_string(*value);
                  return std::nullopt;
                }
                return value;
              });
}

bool Section::address(std::string_view key, Address& out, AddressUse use) {
  return read(
      key, out, [&](const toml::node& node, std::string& message) -> std::optional<Address> {
        const std::optional<std::string_view> text = node.value_exact<std::string_view>();
        if (!text) {
          message = mustBe(key, "an address string (\"127.0.0.1:8080\")", node);
          return std::nullopt;
        }
        std::string why;
        if (text->starts_with("unix:")) {
          if (use == AddressUse::kListen) {
            message = quoteName(key) +
                      " must be an IP address and port; Unix sockets are for "
                      "backends (\"unix:/run/app.sock\")";
            return std::nullopt;
          }
          // sockaddr_un holds 107 bytes of path and a NUL.
          std::optional<std::string> path = resolvePath(text->substr(5), file_.dir, why);
          if (path && path->size() > 107) {
            why = "the socket path is longer than 107 bytes";
            path.reset();
          }
          if (!path) {
            message =
                quoteName(key) + " has an invalid Unix socket address " + quote(*text) + ": " + why;
            return std::nullopt;
          }
          Address unix_address;
          unix_address.text = std::string(*text);
          unix_address.unix_path = *path;
          return unix_address;
        }
        std::optional<Address> value = parseAddress(*text, &why);
        if (!value) {
          message = quoteName(key) + " has an invalid address " + quote(*text) + ": " + why;
          return std::nullopt;
        }
        const bool ip_literal =
            value->ipv6 || value->host.find_first_not_of("0123456789.") == std::string::npos;
        if (use == AddressUse::kListen && !ip_literal && value->host != "localhost") {
          message = quoteName(key) + " must listen on an IP address or localhost, got host name " +
                    quote(value->host);
          return std::nullopt;
        }
        return value;
      });
}

bool Section::path(std::string_view key, std::string& out) {
  return string(key, out, [this](std::string_view text, std::string& why) {
    return resolvePath(text, file_.dir, why);
  });
}

bool Section::oneOf(std::string_view key, std::string& out,
                    const std::vector<std::string_view>& allowed) {
  return string(key, out, [&](std::string_view text, std::string& why) {
    if (std::find(allowed.begin(), allowed.end(), text) != allowed.end()) {
      return std::optional<std::string>(text);
    }
    why = "must be ";
    size_t i = 0;
    for (std::string_view option : allowed) {
      why += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + quote(option);
      ++i;
    }
    why += ", got " + quote(text);
    std::vector<std::string> options(allowed.begin(), allowed.end());
    why += didYouMean(text, options);
    return std::optional<std::string>();
  });
}

bool Section::strings(std::string_view key, std::vector<std::string>& out,
                      std::vector<SourcePos>* positions) {
  const toml::node* node = get(key);
  if (node == nullptr) {
    return false;
  }
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    error(pos(*node), mustBe(key, "an array of strings", *node));
    return false;
  }
  std::vector<std::string> values;
  std::vector<SourcePos> where;
  bool ok = true;
  for (const toml::node& element : *array) {
    const std::optional<std::string_view> value = element.value_exact<std::string_view>();
    if (!value) {
      error(pos(element),
            quoteName(key) + " entries must be strings, got " + std::string(typeName(element)));
      ok = false;
    } else if (value->empty()) {
      error(pos(element), quoteName(key) + " entries must not be empty");
      ok = false;
    } else {
      values.emplace_back(*value);
      where.push_back(pos(element));
    }
  }
  if (!ok) {
    return false;
  }
  out = std::move(values);
  if (positions != nullptr) {
    *positions = std::move(where);
  }
  return true;
}

const toml::table* Section::table(std::string_view key) {
  const toml::node* node = get(key);
  if (node == nullptr) {
    return nullptr;
  }
  if (const toml::table* table = node->as_table()) {
    return table;
  }
  error(pos(*node), mustBe(key, "a table", *node));
  return nullptr;
}

std::vector<const toml::table*> Section::tables(std::string_view key) {
  std::vector<const toml::table*> out;
  const toml::node* node = get(key);
  if (node == nullptr) {
    return out;
  }
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    std::string message = mustBe(key, "an array of tables", *node);
    if (node->is_table() && title_.empty()) {
      message += "; write [[" + std::string(key) + "]], not [" + std::string(key) + "]";
    }
    error(pos(*node), std::move(message));
    return out;
  }
  for (const toml::node& element : *array) {
    if (const toml::table* table = element.as_table()) {
      out.push_back(table);
    } else {
      error(pos(element),
            quoteName(key) + " entries must be tables, got " + std::string(typeName(element)));
    }
  }
  return out;
}

SourcePos Section::pos() const {
  return pos(table_);
}

SourcePos Section::pos(std::string_view key) const {
  const toml::node* node = table_.get(key);
  return node != nullptr ? pos(*node) : pos();
}

SourcePos Section::pos(const toml::node& node) const {
  SourcePos position = positionOf(node.source(), file_.name);
  if (position.line == 0 && &node != &table_) {
    return pos();
  }
  return position;
}

void Section::error(const SourcePos& pos, std::string message) {
  diagnostics_.push_back(Diagnostic{pos, std::move(message)});
}

void Section::error(std::string_view key, std::string message) {
  error(pos(key), std::move(message));
}

void Section::finish() {
  for (const auto& [key, value] : table_) {
    if (std::find(known_.begin(), known_.end(), key.str()) != known_.end()) {
      continue;
    }
    error(positionOf(key.source(), file_.name),
          "unknown key " + quoteName(key.str()) + " " + where() + didYouMean(key.str(), known_));
  }
}

std::string Section::mustBe(std::string_view key, std::string_view what,
                            const toml::node& node) const {
  return quoteName(key) + " must be " + std::string(what) + ", got " + std::string(typeName(node));
}

std::string Section::where() const {
  return title_.empty() ? "at top level" : "in " + title_;
}

}  // namespace sluice::conf::detail
