#pragma once

// The access log: one JSON object per line. Each worker appends to its own buffer; buffers are
// written with one write(2) when they fill or at least every 200 ms, so the hot path takes no
// lock and makes no syscall per request.

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace sluice {

struct AccessLogEntry {
  std::string_view listener;
  std::string_view route;
  std::string_view client;
  std::string_view method;
  std::string_view path;
  std::string_view host;
  std::string_view upstream;
  std::string_view request_id;
  uint16_t status = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double duration_ms = 0;
  std::string_view error;  // why sluice answered itself, if it did
  // WebSocket sessions (status 101): messages each way and how the session ended.
  uint64_t ws_messages_in = 0;
  uint64_t ws_messages_out = 0;
  uint16_t ws_close_code = 0;
  std::string_view ws_closed_by;
};

class AccessLog {
 public:
  // `target`: "stdout", "stderr", "off" or a path (opened for append).
  bool open(const std::string& target, std::string* error);
  ~AccessLog();
  bool enabled() const { return fd_ >= 0; }

  // Formats into `buffer` (the worker's own); flushes it when it is large.
  void append(std::string* buffer, const AccessLogEntry& e);
  void flush(std::string* buffer);

 private:
  int fd_ = -1;
  bool owned_ = false;
};

void appendJsonString(std::string* out, std::string_view s);

}  // namespace sluice
