#include "proxy/log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>

#include "filters/log.h"

namespace sluice::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

const char* levelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "?";
}

// Open destinations by target, so that two writers of one place share a lock.
std::mutex g_files_mutex;
std::map<std::string, std::weak_ptr<LogFile>>& openFiles() {
  static auto* files = new std::map<std::string, std::weak_ptr<LogFile>>;
  return *files;
}

std::mutex g_error_log_mutex;
std::shared_ptr<LogFile>& errorLogSlot() {
  static auto* slot = new std::shared_ptr<LogFile>;
  return *slot;
}

int openAppend(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

Level fromFilter(filters::LogLevel level) {
  switch (level) {
    case filters::LogLevel::kDebug:
      return Level::kDebug;
    case filters::LogLevel::kInfo:
      return Level::kInfo;
    case filters::LogLevel::kWarn:
      return Level::kWarn;
    case filters::LogLevel::kError:
      break;
  }
  return Level::kError;
}

// Filters' lines go to this log, with its level; installed before main() runs.
[[maybe_unused]] const bool g_filter_sink = [] {
  filters::setLogSink({[](filters::LogLevel l) { return enabled(fromFilter(l)); },
                       [](filters::LogLevel l, std::string_view line) {
                         write(fromFilter(l), "%.*s", static_cast<int>(line.size()), line.data());
                       }});
  return true;
}();
}  // namespace

std::shared_ptr<LogFile> LogFile::open(const std::string& target, std::string* error) {
  std::lock_guard lock(g_files_mutex);
  auto& files = openFiles();
  if (auto it = files.find(target); it != files.end()) {
    if (std::shared_ptr<LogFile> file = it->second.lock()) {
      return file;
    }
  }
  std::shared_ptr<LogFile> file;
  if (target == "stdout") {
    file.reset(new LogFile(target, STDOUT_FILENO, false));
  } else if (target == "stderr") {
    file.reset(new LogFile(target, STDERR_FILENO, false));
  } else {
    int fd = openAppend(target);
    if (fd < 0) {
      *error = "cannot open '" + target + "' for writing: " + strerror(errno);
      return nullptr;
    }
    file.reset(new LogFile(target, fd, true));
  }
  files[target] = file;
  return file;
}

LogFile::~LogFile() {
  if (owned_ && fd_ >= 0) {
    ::close(fd_);
  }
  std::lock_guard lock(g_files_mutex);
  auto& files = openFiles();
  if (auto it = files.find(target_); it != files.end() && it->second.expired()) {
    files.erase(it);
  }
}

void LogFile::write(std::string_view data) {
  std::lock_guard lock(mutex_);
  while (!data.empty()) {
    ssize_t w = ::write(fd_, data.data(), data.size());
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;
    }
    data.remove_prefix(static_cast<size_t>(w));
  }
}

bool LogFile::reopen(std::string* error) {
  if (!owned_) {
    return true;
  }
  int fd = openAppend(target_);
  if (fd < 0) {
    *error = "cannot reopen '" + target_ + "': " + strerror(errno);
    return false;
  }
  std::lock_guard lock(mutex_);
  ::close(fd_);
  fd_ = fd;
  return true;
}

void setLevel(Level level) {
  g_level.store(static_cast<int>(level));
}

bool enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

bool parseLevel(std::string_view text, Level* level) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (text == levelName(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

void setErrorLog(std::shared_ptr<LogFile> file) {
  std::lock_guard lock(g_error_log_mutex);
  errorLogSlot() = std::move(file);
}

std::shared_ptr<LogFile> errorLog() {
  std::lock_guard lock(g_error_log_mutex);
  return errorLogSlot();
}

namespace {
std::mutex g_problems_mutex;
std::deque<Problem> g_problems;

void remember(std::string_view time, const char* level, std::string_view message) {
  std::lock_guard lock(g_problems_mutex);
  if (g_problems.size() == kRecentProblems) {
    g_problems.pop_front();
  }
  g_problems.push_back({std::string(time), level, std::string(message)});
}
}  // namespace

std::vector<Problem> recentProblems() {
  std::lock_guard lock(g_problems_mutex);
  return {g_problems.begin(), g_problems.end()};
}

void write(Level level, const char* fmt, ...) {
  char line[2112];
  char* msg = line + 32;  // the time and level go in front
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof line - 32 - 1, fmt, ap);
  va_end(ap);
  size_t len = n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof line - 32 - 2);
  msg[len++] = '\n';
  std::shared_ptr<LogFile> file = errorLog();
  // The time is taken under the destination's lock (LogFile::write takes it again, so hold the
  // global one): lines of one file are in time order.
  static std::mutex order;
  std::lock_guard lock(order);
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char prefix[40];
  size_t p = strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &t);
  p += static_cast<size_t>(snprintf(prefix + p, sizeof prefix - p, ".%03ldZ %s ",
                                    static_cast<long>(tv.tv_usec / 1000), levelName(level)));
  p = std::min<size_t>(p, 32);
  memcpy(msg - p, prefix, p);
  std::string_view out(msg - p, len + p);
  if (level >= Level::kWarn) {
    remember(std::string_view(prefix, p - strlen(levelName(level)) - 2), levelName(level),
             std::string_view(msg, len - 1));
  }
  if (file) {
    file->write(out);
  } else {
    ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
    (void)ignored;
  }
}

}  // namespace sluice::log
