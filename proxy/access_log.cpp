#include "proxy/access_log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace sluice {

namespace {
constexpr size_t kFlushThreshold = 32 * 1024;
}

bool AccessLog::open(const std::string& target, std::string* error) {
  if (target == "off") {
    fd_ = -1;
  } else if (target == "stdout") {
    fd_ = STDOUT_FILENO;
  } else if (target == "stderr") {
    fd_ = STDERR_FILENO;
  } else {
    fd_ = ::open(target.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      *error = "cannot open access log '" + target + "': " + strerror(errno);
      return false;
    }
    owned_ = true;
  }
  return true;
}

AccessLog::~AccessLog() {
  if (owned_ && fd_ >= 0) {
    ::close(fd_);
  }
}

void appendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", u);
      out->append(buf);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

void AccessLog::append(std::string* buffer, const AccessLogEntry& e) {
  if (fd_ < 0) {
    return;
  }
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char ts[40];
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &t);
  snprintf(ts + n, sizeof ts - n, ".%03ldZ", static_cast<long>(tv.tv_usec / 1000));
  std::string& b = *buffer;
  b.append("{\"time\":\"");
  b.append(ts);
  b.append("\",\"listener\":");
  appendJsonString(&b, e.listener);
  b.append(",\"route\":");
  appendJsonString(&b, e.route);
  b.append(",\"client\":");
  appendJsonString(&b, e.client);
  b.append(",\"method\":");
  appendJsonString(&b, e.method);
  b.append(",\"host\":");
  appendJsonString(&b, e.host);
  b.append(",\"path\":");
  appendJsonString(&b, e.path);
  char nums[160];
  snprintf(nums, sizeof nums,
           ",\"status\":%u,\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f",
           static_cast<unsigned>(e.status), static_cast<unsigned long long>(e.bytes_in),
           static_cast<unsigned long long>(e.bytes_out), e.duration_ms);
  b.append(nums);
  b.append(",\"upstream\":");
  appendJsonString(&b, e.upstream);
  b.append(",\"request_id\":");
  appendJsonString(&b, e.request_id);
  if (e.status == 101) {
    char ws[160];
    snprintf(
        ws, sizeof ws, ",\"ws_messages_in\":%llu,\"ws_messages_out\":%llu,\"ws_close_code\":%u",
        static_cast<unsigned long long>(e.ws_messages_in),
        static_cast<unsigned long long>(e.ws_messages_out), static_cast<unsigned>(e.ws_close_code));
    b.append(ws);
    b.append(",\"ws_closed_by\":");
    appendJsonString(&b, e.ws_closed_by);
  }
  if (!e.error.empty()) {
    b.append(",\"error\":");
    appendJsonString(&b, e.error);
  }
  b.append("}\n");
  if (b.size() >= kFlushThreshold) {
    flush(buffer);
  }
}

void AccessLog::flush(std::string* buffer) {
  if (fd_ < 0 || buffer->empty()) {
    buffer->clear();
    return;
  }
  const char* p = buffer->data();
  size_t left = buffer->size();
  while (left > 0) {
    ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;  // a full disk or a closed pipe must not stop the proxy
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  buffer->clear();
}

}  // namespace sluice
