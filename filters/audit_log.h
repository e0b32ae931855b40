#pragma once

// Where filters write their audit records (one JSON object per line: a WAF verdict, a rule
// match): "stderr", beside the error log (the default), "off", or a file opened for appending.
// Thread-safe and lock-free: each line is one write(2) on a descriptor opened with O_APPEND, so
// lines written by several threads (the WAF writes from its pool threads) never interleave.
// A file is opened when the filter's config is loaded: a reload reopens it (after rotation).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::filters {

class AuditLog {
 public:
  // `where`: "stderr", "off", or an absolute path. Null with `error` set when the file cannot
  // be opened.
  static std::shared_ptr<const AuditLog> open(const std::string& where, std::string* error);
  // What a filter's `audit_log` key names, for open(): "stderr" when unset, "stderr" and "off"
  // as they are, a path relative to `config_dir` made absolute.
  static std::string where(const std::optional<std::string>& value,
                           const std::filesystem::path& config_dir);

  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  bool enabled() const { return fd_ >= 0; }
  // Writes `line` and a newline (nothing when off). A failed write is dropped: an audit line is
  // never worth stalling the caller.
  void write(std::string_view line) const;

  // "2024-05-01T12:00:00.123Z" (UTC, milliseconds), for a record's "time" field.
  static std::string now();

 private:
  AuditLog(int fd, bool owned) : fd_(fd), owned_(owned) {}
  int fd_;
  bool owned_;
};

}  // namespace sluice::filters
