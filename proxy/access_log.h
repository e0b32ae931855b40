#pragma once

// The access log: one line per request or WebSocket session, as a JSON object or as a combined
// log line followed by key=value fields. Each worker appends to its own shard (a lock nobody else
// takes but the writer, five times a second); one writer thread takes every shard's batch at
// once, merges the batches by time and writes them with one write(2): the lines of the file are
// in time order, and the hot path makes no syscall.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "proxy/log.h"

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
  std::string_view user_agent;
  std::string_view referer;
  std::string_view tls_version;  // "TLSv1.3"; empty on plain connections
  std::string_view tls_cipher;
  uint8_t http_minor = 1;
  uint16_t status = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double duration_ms = 0;
  double upstream_connect_ms = -1;   // a new upstream connection's connect (and TLS); -1: none
  double upstream_response_ms = -1;  // request sent to response head; -1: no response
  std::string_view error;            // why sluice answered itself, if it did
  std::string_view auth;             // what authentication filters decided (never a token), if any
  // WebSocket sessions (status 101): messages each way and how the session ended.
  uint64_t ws_messages_in = 0;
  uint64_t ws_messages_out = 0;
  uint16_t ws_close_code = 0;
  std::string_view ws_closed_by;
  std::string_view ws_close_reason;  // the close frame's reason text
  std::string_view ws_close_cause;   // why sluice closed: drain, reload, shutdown, limit, ...
};

class AccessLog {
 public:
  enum class Format : uint8_t { kJson, kText };

  // `shards`: one per worker.
  explicit AccessLog(unsigned shards);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Sets where lines go ("stdout", "stderr", "off" or a path) and how they look ("json" or
  // "text"). Any thread. On failure keeps the current target and returns false.
  bool configure(const std::string& target, const std::string& format, std::string* error);
  // SIGUSR1: opens the file again (logrotate renamed it). Lines already batched go to the new one.
  bool reopen(std::string* error);
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  const std::string& target() const { return target_; }

  // A worker's line, into its shard.
  void append(unsigned shard, const AccessLogEntry& e);
  // Writes what is batched now and stops the writer thread (at exit); after that, writes
  // what was appended since, each time it is called.
  void stop();

 private:
  struct alignas(64) Shard {
    std::mutex mutex;
    std::string lines;
    std::vector<std::pair<int64_t, uint32_t>> marks;  // each line's time (µs) and start
  };

  void run();
  void flushAll();
  void formatJson(std::string* b, const AccessLogEntry& e, const char* time);
  void formatText(std::string* b, const AccessLogEntry& e, int64_t time_us);

  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<bool> enabled_{false};
  std::atomic<Format> format_{Format::kJson};
  std::atomic<uint64_t> dropped_{0};
  std::string target_ = "off";  // main thread only

  std::mutex file_mutex_;  // guards file_ (the writer reads it, configure() replaces it)
  std::shared_ptr<log::LogFile> file_;

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool urgent_ = false;
  std::thread writer_;
};

void appendJsonString(std::string* out, std::string_view s);

}  // namespace sluice
