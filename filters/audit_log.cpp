#include "filters/audit_log.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

namespace sluice::filters {

std::string AuditLog::where(const std::optional<std::string>& value,
                            const std::filesystem::path& config_dir) {
  if (!value) {
    return "stderr";
  }
  const std::string& v = *value;
  if (v == "stderr" || v == "off" || v.empty() || v[0] == '/') {
    return v;
  }
  return (config_dir / v).lexically_normal().string();
}

std::shared_ptr<const AuditLog> AuditLog::open(const std::string& where, std::string* error) {
  if (where == "off") {
    return std::shared_ptr<const AuditLog>(new AuditLog(-1, false));
  }
  if (where == "stderr") {
    return std::shared_ptr<const AuditLog>(new AuditLog(STDERR_FILENO, false));
  }
  int fd = ::open(where.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    *error = "cannot open '" + where + "' for appending: " + std::strerror(errno);
    return nullptr;
  }
  return std::shared_ptr<const AuditLog>(new AuditLog(fd, true));
}

AuditLog::~AuditLog() {
  if (owned_) {
    ::close(fd_);
  }
}

void AuditLog::write(std::string_view line) const {
  if (fd_ < 0) {
    return;
  }
  char newline = '\n';
  iovec parts[2] = {{const_cast<char*>(line.data()), line.size()}, {&newline, 1}};
  ssize_t n;
  do {
    n = ::writev(fd_, parts, 2);
  } while (n < 0 && errno == EINTR);
}

std::string AuditLog::now() {
  using namespace std::chrono;
  const auto t = system_clock::now();
  const time_t secs = system_clock::to_time_t(t);
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  std::string out(buf);
  char frac[8];
  snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(ms));
  out += frac;
  return out;
}

}  // namespace sluice::filters
