#pragma once

// Private to conf/: reads one TOML table key by key, with typed getters that report every problem
// at the offending value's position. Asking for a key also declares it known, so `finish()` can
// report the keys nobody asked for, with a did-you-mean among the ones that were.

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace sluice::conf::detail {

// The file a table came from: its name in diagnostics, and the directory that relative paths in it
// are resolved against.
struct FileContext {
  std::string name;
  std::filesystem::path dir;
};

// "FILE:LINE:COLUMN", or "FILE" for a position without a line.
std::string formatPos(const SourcePos& pos);

// A node's start as a SourcePos; `fallback_file` when the node carries no path.
SourcePos positionOf(const toml::source_region& region, const std::string& fallback_file);

// "string", "integer", "float", "boolean", "array", "table", "date", "time" or "date-time".
std::string_view typeName(const toml::node& node);

// `text` resolved against `dir` (absolute, normalised); nullopt with `why` set for an empty path
// or one with control characters.
std::optional<std::string> resolvePath(std::string_view text, const std::filesystem::path& dir,
                                       std::string& why);

enum class Zero { kAllowed, kRejected };
enum class AddressUse { kListen, kConnect };  // listen: IP literal or localhost only

// Checks (and may normalise) a string value; on failure returns nullopt and sets `why` to the
// rest of a sentence that starts with the key ("must start with '/'").
using StringCheck = std::function<std::optional<std::string>(std::string_view, std::string& why)>;

class Section {
 public:
  // `title` names the table in messages ("[[listeners]]", "[pools.health]"); empty for the
  // top level of a file.
  Section(const toml::table& table, std::string title, const FileContext& file,
          Diagnostics& diagnostics);

  // Declares `key` known and returns its value, or nullptr when it is absent.
  const toml::node* get(std::string_view key);
  // Reports each absent key at the table's position.
  void require(std::initializer_list<std::string_view> keys);

  // Typed getters. Present and valid: store in `out`, return true. Present and invalid: report at
  // the value, return false. Absent: return false.
  bool string(std::string_view key, std::string& out, const StringCheck& check = {});
  bool boolean(std::string_view key, bool& out);
  template <typename T>
  bool integer(std::string_view key, T& out, int64_t min, int64_t max);
  bool positiveNumber(std::string_view key, double& out);  // integer or float, > 0
  bool duration(std::string_view key, Duration& out, Zero zero);
  bool size(std::string_view key, uint64_t& out, uint64_t min, uint64_t max);
  bool address(std::string_view key, Address& out, AddressUse use);
  bool path(std::string_view key, std::string& out);  // resolved against the file's directory
  bool oneOf(std::string_view key, std::string& out, const std::vector<std::string_view>& allowed);
  // An array of non-empty strings; `positions` (optional) receives each element's position.
  bool strings(std::string_view key, std::vector<std::string>& out,
               std::vector<SourcePos>* positions = nullptr);
  // A sub-table (a [header] or an inline table).
  const toml::table* table(std::string_view key);
  // The entries of an array of tables ([[key]] or key = [{...}]); reports entries that are not.
  std::vector<const toml::table*> tables(std::string_view key);
  // Any other type: `convert(node, message)` returns the value, or nullopt with `message` set to
  // a whole sentence.
  template <typename T, typename Convert>
  bool read(std::string_view key, T& out, Convert convert);

  SourcePos pos() const;                      // the table's own position
  SourcePos pos(std::string_view key) const;  // the key's value, or the table when absent
  SourcePos pos(const toml::node& node) const;

  void error(const SourcePos& pos, std::string message);
  void error(std::string_view key, std::string message);  // at the key's value

  // Reports every key that no getter asked for.
  void finish();

  const std::string& title() const { return title_; }
  const FileContext& file() const { return file_; }
  Diagnostics& diagnostics() { return diagnostics_; }

  // "'key' must be WHAT, got TYPE"
  std::string mustBe(std::string_view key, std::string_view what, const toml::node& node) const;

 private:
  std::string where() const;

  const toml::table& table_;
  std::string title_;
  const FileContext& file_;
  Diagnostics& diagnostics_;
  std::vector<std::string> known_;
};

template <typename T, typename Convert>
bool Section::read(std::string_view key, T& out, Convert convert) {
  const toml::node* node = get(key);
  if (node == nullptr) {
    return false;
  }
  std::string message;
  std::optional<T> value = convert(*node, message);
  if (!value) {
    error(pos(*node), std::move(message));
    return false;
  }
  out = std::move(*value);
  return true;
}

template <typename T>
bool Section::integer(std::string_view key, T& out, int64_t min, int64_t max) {
  return read(key, out, [&](const toml::node& node, std::string& message) -> std::optional<T> {
    const std::optional<int64_t> value = node.value_exact<int64_t>();
    if (!value) {
      message = mustBe(key, "an integer", node);
      return std::nullopt;
    }
    if (*value < min || *value > max) {
      message = "'" + std::string(key) + "' must be between " + std::to_string(min) + " and " +
                std::to_string(max) + ", got " + std::to_string(*value);
      return std::nullopt;
    }
    return static_cast<T>(*value);
  });
}

}  // namespace sluice::conf::detail
