#pragma once

// The error log: one line per event, "TIME LEVEL message", on stderr or in a file. Thread-safe.
//
// LogFile is one log destination (stderr, stdout or a path). Every writer of a destination shares
// one LogFile and its lock, so the error log's lines and the access log's batches never cut into
// each other, even when both go to the same place. SIGUSR1 reopens the files (after logrotate
// moved them away).

#include <cstdarg>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::log {

enum class Level { kDebug, kInfo, kWarn, kError };

class LogFile {
 public:
  // "stdout", "stderr" or a path (opened for append, created with mode 0640). The same target
  // gives the same LogFile as long as one is open. Null (and `error` set) when the file cannot be
  // opened.
  static std::shared_ptr<LogFile> open(const std::string& target, std::string* error);
  ~LogFile();
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;

  // Writes all of `data` with as few write(2) calls as the descriptor allows, under the lock. A
  // full disk or a closed pipe loses the data (logging must never stop the proxy).
  void write(std::string_view data);
  // A path: opens it again, so that writes go to a new file after a rename. On failure the old
  // descriptor stays. stdout and stderr: nothing to do.
  bool reopen(std::string* error);
  const std::string& target() const { return target_; }
  bool isPath() const { return owned_; }

 private:
  LogFile(std::string target, int fd, bool owned)
      : target_(std::move(target)), fd_(fd), owned_(owned) {}

  std::string target_;
  std::mutex mutex_;
  int fd_;
  bool owned_;  // a file of ours (not stdout or stderr)
};

void setLevel(Level level);
bool enabled(Level level);
// "debug", "info", "warn", "error".
bool parseLevel(std::string_view text, Level* level);
void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// The last warnings and errors written (at most kRecentProblems, oldest first), for the status
// page: an operator looking at it wants to see what went wrong without reading the log file.
inline constexpr size_t kRecentProblems = 20;
struct Problem {
  std::string time;   // RFC 3339, UTC, milliseconds
  const char* level;  // "warn" or "error"
  std::string message;
};
std::vector<Problem> recentProblems();

// Where error-log lines go (stderr until set).
void setErrorLog(std::shared_ptr<LogFile> file);
std::shared_ptr<LogFile> errorLog();

#define SLUICE_LOG(level, ...)                    \
  do {                                            \
    if (::sluice::log::enabled(level)) {          \
      ::sluice::log::write((level), __VA_ARGS__); \
    }                                             \
  } while (0)
#define LOG_DEBUG(...) SLUICE_LOG(::sluice::log::Level::kDebug, __VA_ARGS__)
#define LOG_INFO(...) SLUICE_LOG(::sluice::log::Level::kInfo, __VA_ARGS__)
#define LOG_WARN(...) SLUICE_LOG(::sluice::log::Level::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) SLUICE_LOG(::sluice::log::Level::kError, __VA_ARGS__)

}  // namespace sluice::log
