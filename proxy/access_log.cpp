#include "proxy/access_log.h"

#include <sys/time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace sluice {

namespace {

constexpr auto kFlushInterval = std::chrono::milliseconds(200);
// A shard this full wakes the writer before its next turn.
constexpr size_t kUrgentBytes = size_t{256} * 1024;
// A writer that cannot keep up (a blocked pipe, a stalled disk) must not take all memory: above
// this a shard drops lines, and the writer says how many.
constexpr size_t kMaxShardBytes = size_t{32} * 1024 * 1024;

int64_t nowMicros() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
}

void appendDouble(std::string* b, const char* key, double v) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, ",\"%s\":%.3f", key, v);
  b->append(buf, static_cast<size_t>(n));
}

// A value of the text format: quoted when it is empty or holds a space, a quote or a control
// character; `"`, `\` and control bytes escaped as nginx escapes them (\" \\ \xHH).
void appendTextValue(std::string* b, std::string_view s, bool always_quote) {
  bool plain = !always_quote && !s.empty() && std::none_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u >= 0x7f || c == '"' || c == '\\';
  });
  if (plain) {
    b->append(s);
    return;
  }
  b->push_back('"');
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      b->push_back('\\');
      b->push_back(c);
    } else if (u < 0x20 || u >= 0x7f) {
      char hex[8];
      snprintf(hex, sizeof hex, "\\x%02X", u);
      b->append(hex);
    } else {
      b->push_back(c);
    }
  }
  b->push_back('"');
}

void appendField(std::string* b, const char* key, std::string_view value) {
  b->push_back(' ');
  b->append(key);
  b->push_back('=');
  appendTextValue(b, value.empty() ? "-" : value, false);
}

}  // namespace

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

AccessLog::AccessLog(unsigned shards) {
  for (unsigned i = 0; i < std::max(1u, shards); ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
  writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  stop();
}

bool AccessLog::configure(const std::string& target, const std::string& format,
                          std::string* error) {
  std::shared_ptr<log::LogFile> file;
  if (target != "off") {
    file = log::LogFile::open(target, error);
    if (!file) {
      *error = "access_log: " + *error;
      return false;
    }
  }
  if (target != target_) {
    flushAll();  // what was logged so far goes where it was meant to
  }
  format_ = format == "text" ? Format::kText : Format::kJson;
  {
    std::lock_guard lock(file_mutex_);
    file_ = std::move(file);
  }
  target_ = target;
  enabled_ = target != "off";
  return true;
}

bool AccessLog::reopen(std::string* error) {
  std::shared_ptr<log::LogFile> file;
  {
    std::lock_guard lock(file_mutex_);
    file = file_;
  }
  return file == nullptr || file->reopen(error);
}

void AccessLog::append(unsigned shard, const AccessLogEntry& e) {
  if (!enabled()) {
    return;
  }
  Shard& s = *shards_[shard % shards_.size()];
  bool urgent;
  {
    // The time is read under the shard's lock, which the writer holds for all shards at once
    // when it takes a batch: every line of a batch is older than every line after it.
    std::lock_guard lock(s.mutex);
    if (s.lines.size() >= kMaxShardBytes) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    int64_t now = nowMicros();
    auto start = static_cast<uint32_t>(s.lines.size());
    if (format_.load(std::memory_order_relaxed) == Format::kText) {
      formatText(&s.lines, e, now);
    } else {
      time_t secs = static_cast<time_t>(now / 1000000);
      tm t;
      gmtime_r(&secs, &t);
      char ts[40];
      size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &t);
      snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(now % 1000000 / 1000));
      formatJson(&s.lines, e, ts);
    }
    s.marks.emplace_back(now, start);
    urgent = s.lines.size() >= kUrgentBytes;
  }
  if (urgent) {
    {
      std::lock_guard lock(wake_mutex_);
      urgent_ = true;
    }
    wake_.notify_one();
  }
}

void AccessLog::formatJson(std::string* out, const AccessLogEntry& e, const char* time) {
  std::string& b = *out;
  b.append("{\"time\":\"");
  b.append(time);
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
           ",\"status\":%u,\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"duration_ms\":%.3f",
           static_cast<unsigned>(e.status), e.bytes_in, e.bytes_out, e.duration_ms);
  b.append(nums);
  b.append(",\"upstream\":");
  appendJsonString(&b, e.upstream);
  if (e.upstream_connect_ms >= 0) {
    appendDouble(&b, "upstream_connect_ms", e.upstream_connect_ms);
  }
  if (e.upstream_response_ms >= 0) {
    appendDouble(&b, "upstream_response_ms", e.upstream_response_ms);
  }
  b.append(",\"request_id\":");
  appendJsonString(&b, e.request_id);
  b.append(",\"user_agent\":");
  appendJsonString(&b, e.user_agent);
  b.append(",\"referer\":");
  appendJsonString(&b, e.referer);
  if (!e.tls_version.empty()) {
    b.append(",\"tls_version\":");
    appendJsonString(&b, e.tls_version);
    b.append(",\"tls_cipher\":");
    appendJsonString(&b, e.tls_cipher);
  }
  if (e.status == 101) {
    char ws[160];
    snprintf(ws, sizeof ws,
             ",\"ws_messages_in\":%" PRIu64 ",\"ws_messages_out\":%" PRIu64 ",\"ws_close_code\":%u",
             e.ws_messages_in, e.ws_messages_out, static_cast<unsigned>(e.ws_close_code));
    b.append(ws);
    b.append(",\"ws_closed_by\":");
    appendJsonString(&b, e.ws_closed_by);
    b.append(",\"ws_close_reason\":");
    appendJsonString(&b, e.ws_close_reason);
    if (!e.ws_close_cause.empty()) {
      b.append(",\"ws_close_cause\":");
      appendJsonString(&b, e.ws_close_cause);
    }
  }
  if (!e.error.empty()) {
    b.append(",\"error\":");
    appendJsonString(&b, e.error);
  }
  if (!e.auth.empty()) {
    b.append(",\"auth\":");
    appendJsonString(&b, e.auth);
  }
  b.append("}\n");
}

// 127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 2326 "referer" "agent"
// then key=value fields: what the combined log format has room for first, so that tools made for
// it read these lines, and sluice's own fields after it.
void AccessLog::formatText(std::string* out, const AccessLogEntry& e, int64_t time_us) {
  std::string& b = *out;
  b.append(e.client.empty() ? std::string_view("-") : e.client);
  time_t secs = static_cast<time_t>(time_us / 1000000);
  tm t;
  gmtime_r(&secs, &t);
  char ts[48];
  strftime(ts, sizeof ts, " - - [%d/%b/%Y:%H:%M:%S +0000] \"", &t);
  b.append(ts);
  // The request line is quoted as a whole: escape it piece by piece.
  std::string request;
  request.reserve(e.method.size() + e.path.size() + 10);
  request.append(e.method).append(" ").append(e.path);
  request.append(e.http_minor == 0 ? " HTTP/1.0" : " HTTP/1.1");
  std::string quoted;
  appendTextValue(&quoted, request, true);
  b.append(quoted, 1, quoted.size() - 1);  // without the opening quote: it is in `ts`
  char nums[64];
  snprintf(nums, sizeof nums, " %u %" PRIu64 " ", static_cast<unsigned>(e.status), e.bytes_out);
  b.append(nums);
  appendTextValue(&b, e.referer.empty() ? "-" : e.referer, true);
  b.push_back(' ');
  appendTextValue(&b, e.user_agent.empty() ? "-" : e.user_agent, true);
  appendField(&b, "request_id", e.request_id);
  appendField(&b, "listener", e.listener);
  appendField(&b, "route", e.route);
  appendField(&b, "host", e.host);
  appendField(&b, "upstream", e.upstream);
  char times[160];
  int n = snprintf(times, sizeof times, " duration_ms=%.3f bytes_in=%" PRIu64, e.duration_ms,
                   e.bytes_in);
  b.append(times, static_cast<size_t>(n));
  if (e.upstream_connect_ms >= 0) {
    n = snprintf(times, sizeof times, " upstream_connect_ms=%.3f", e.upstream_connect_ms);
    b.append(times, static_cast<size_t>(n));
  }
  if (e.upstream_response_ms >= 0) {
    n = snprintf(times, sizeof times, " upstream_response_ms=%.3f", e.upstream_response_ms);
    b.append(times, static_cast<size_t>(n));
  }
  if (!e.tls_version.empty()) {
    appendField(&b, "tls_version", e.tls_version);
    appendField(&b, "tls_cipher", e.tls_cipher);
  }
  if (e.status == 101) {
    n = snprintf(times, sizeof times,
                 " ws_messages_in=%" PRIu64 " ws_messages_out=%" PRIu64 " ws_close_code=%u",
                 e.ws_messages_in, e.ws_messages_out, static_cast<unsigned>(e.ws_close_code));
    b.append(times, static_cast<size_t>(n));
    appendField(&b, "ws_closed_by", e.ws_closed_by);
    appendField(&b, "ws_close_reason", e.ws_close_reason);
    appendField(&b, "ws_close_cause", e.ws_close_cause);
  }
  if (!e.error.empty()) {
    appendField(&b, "error", e.error);
  }
  if (!e.auth.empty()) {
    appendField(&b, "auth", e.auth);
  }
  b.push_back('\n');
}

void AccessLog::run() {
  std::unique_lock lock(wake_mutex_);
  while (!stop_) {
    wake_.wait_for(lock, kFlushInterval, [this] { return stop_ || urgent_; });
    urgent_ = false;
    lock.unlock();
    flushAll();
    lock.lock();
  }
}

void AccessLog::flushAll() {
  // One writer at a time (the thread, or configure()/stop() on the main thread).
  static std::mutex flushing;
  std::lock_guard flush_lock(flushing);
  struct Batch {
    std::string lines;
    std::vector<std::pair<int64_t, uint32_t>> marks;
  };
  std::vector<Batch> batches(shards_.size());
  // Every shard at once: the batch is everything logged before this instant.
  for (auto& s : shards_) {
    s->mutex.lock();
  }
  size_t total = 0;
  for (size_t i = 0; i < shards_.size(); ++i) {
    batches[i].lines.swap(shards_[i]->lines);
    batches[i].marks.swap(shards_[i]->marks);
    total += batches[i].lines.size();
  }
  for (auto& s : shards_) {
    s->mutex.unlock();
  }
  uint64_t dropped = dropped_.exchange(0, std::memory_order_relaxed);
  if (dropped > 0) {
    LOG_WARN("access log: the writer fell behind; %llu lines were dropped",
             static_cast<unsigned long long>(dropped));
  }
  if (total == 0) {
    return;
  }
  std::shared_ptr<log::LogFile> file;
  {
    std::lock_guard lock(file_mutex_);
    file = file_;
  }
  if (!file) {
    return;
  }
  size_t nonempty = 0;
  const Batch* only = nullptr;
  for (const Batch& b : batches) {
    if (!b.lines.empty()) {
      ++nonempty;
      only = &b;
    }
  }
  if (nonempty == 1) {
    file->write(only->lines);
    return;
  }
  // Merge the shards' lines by time (each shard's are in order already; a stable sort keeps
  // lines of equal time in shard order).
  struct Line {
    int64_t time;
    std::string_view text;
  };
  std::vector<Line> lines;
  for (const Batch& b : batches) {
    for (size_t i = 0; i < b.marks.size(); ++i) {
      size_t start = b.marks[i].second;
      size_t end = i + 1 < b.marks.size() ? b.marks[i + 1].second : b.lines.size();
      lines.push_back({b.marks[i].first, std::string_view(b.lines).substr(start, end - start)});
    }
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const Line& a, const Line& b) { return a.time < b.time; });
  std::string out;
  out.reserve(total);
  for (const Line& l : lines) {
    out.append(l.text);
  }
  file->write(out);
}

void AccessLog::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    if (stop_) {
      flushAll();  // what came after the first stop (late lines of a closing worker)
      return;
    }
    stop_ = true;
  }
  wake_.notify_one();
  if (writer_.joinable()) {
    writer_.join();
  }
  flushAll();
}

}  // namespace sluice
