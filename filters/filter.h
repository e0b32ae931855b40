#pragma once

// The filter API (version 2). Filters depend on conf/, this header and the value types beside it
// (filters/http_head.h, filters/stats.h): nothing of proxy/ or libuv, so each one is
// unit-testable alone. What a filter needs from the running process (the clock, timers, posting
// work back to its worker, its metrics) reaches it through the interfaces below.
//
// Config once, instances per stream: a Filter is built once per config snapshot from its
// [[filters]] table; it creates a small StreamFilter for each request or WebSocket session. A
// FilterManager (proxy/) owns a stream's instances, drives every phase for HTTP and WebSocket
// alike, and keeps each instance's Filter alive (shared_ptr) for as long as the instance lives.
//
// A phase returns a Status; everything else a filter does goes through the StreamCallbacks it is
// handed once, before its first phase: resume after a stop, answer locally, close a WebSocket,
// drop a message, pause reading.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "filters/http_head.h"
#include "filters/redis.h"
#include "filters/stats.h"

namespace sluice::filters {

enum class Direction : uint8_t { kDownstreamToUpstream, kUpstreamToDownstream };
const char* directionName(Direction d);  // "downstream_to_upstream", "upstream_to_downstream"

enum class Status : uint8_t {
  // Go on with the next filter.
  kContinue,
  // Wait until this filter calls resume() (or answers, or closes). In the request-head phase the
  // body is not read meanwhile; in the message phase that direction stops reading.
  kStop,
  // Request head only: wait for the whole request body, bounded by the route's max_body_bytes
  // (413 beyond), then onRequestBody(body, true) is called once with all of it. The head goes on
  // to the next filters (and the backend) only when that call continues or resume() is called.
  kStopAndBuffer,
};

// What a filter may know about the stream it belongs to. Valid for the stream's whole life.
struct StreamInfo {
  std::string_view client_ip;   // the client's address as sluice resolved it
  std::string_view listener;    // listener name
  std::string_view route;       // route name (its index when unnamed)
  std::string_view request_id;  // X-Request-Id (the client's, or one sluice made)
  bool tls = false;             // the client connection is TLS
  bool websocket = false;       // a valid WebSocket upgrade request
  // The client connection, unique within the process (0: unknown), and this request's number on
  // it (1: the connection's first request). Limits on connections count a connection at its
  // first request, and per-connection limits key on the id.
  uint64_t connection_id = 0;
  uint32_t connection_request = 0;
};

enum class MessageType : uint8_t { kText, kBinary };

// A data frame about to be relayed: its header is known, its payload may still be arriving.
struct FrameInfo {
  Direction direction;
  MessageType type;
  bool first;              // the message's first frame
  bool fin;                // the message's last frame
  uint64_t frame_bytes;    // this frame's payload length
  uint64_t message_bytes;  // the message's length so far, this frame included
};

// A whole message (only for filters that need payloads), unmasked (and inflated, when
// compressed). A filter may rewrite it: the proxy then sends the new payload in frames of its
// own instead of the original frames.
class Message {
 public:
  Message(Direction direction, MessageType type, std::string* payload)
      : direction_(direction), type_(type), payload_(payload) {}
  Direction direction() const { return direction_; }
  MessageType type() const { return type_; }
  std::string_view payload() const { return *payload_; }
  // The payload to change in place; marks the message as rewritten.
  std::string& mutablePayload() {
    modified_ = true;
    return *payload_;
  }
  bool modified() const { return modified_; }

 private:
  Direction direction_;
  MessageType type_;
  std::string* payload_;
  bool modified_ = false;
};

// An asynchronous verdict on a WebSocket message (see StreamCallbacks::resumeMessage).
struct MessageVerdict {
  enum class Kind : uint8_t { kForward, kDrop, kClose };
  Kind kind = Kind::kForward;
  uint16_t close_code = 0;  // kClose: toward the message's sender (the other side gets 1001)
  std::string reason;       // kDrop, kClose: why (logged, counted)

  static MessageVerdict forward() { return {}; }
  static MessageVerdict drop(std::string reason) { return {Kind::kDrop, 0, std::move(reason)}; }
  static MessageVerdict close(uint16_t code, std::string reason) {
    return {Kind::kClose, code, std::move(reason)};
  }
};

// A one-shot timer on the stream's worker. Destroying it cancels it.
class Timer {
 public:
  virtual ~Timer() = default;
  virtual void arm(std::chrono::milliseconds after) = 0;
  virtual void disarm() = 0;
  virtual bool armed() const = 0;
};

// The worker a stream runs on: its clock, its timers, and a way back onto it from other threads.
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // Monotonic milliseconds (the worker loop's time: cheap, updated once per loop turn).
  virtual uint64_t nowMs() const = 0;
  // `callback` runs on this worker when the timer expires.
  virtual std::unique_ptr<Timer> createTimer(std::function<void()> callback) = 0;
  // Thread-safe: runs `task` on this worker soon (never inside this call). A task that refers to
  // a stream must check that the stream still wants it (a weak_ptr, or a token the filter's
  // onDestroy() invalidates).
  virtual void post(std::function<void()> task) = 0;
  // This worker's index: the cell a filter's Counter increments.
  virtual unsigned workerId() const = 0;
  // A Redis client whose calls complete on this worker (filters/redis.h). Call it on the worker
  // (from createWorkerState, say); the client connects at once and reconnects by itself. Null
  // where the process has none (unit tests' dispatchers, unless they provide one).
  virtual std::unique_ptr<RedisClient> connectRedis(const RedisOptions& options) { return nullptr; }
};

// An HTTP(S) GET that sluice makes itself (a remote JWKS, say), through its own upstream code:
// the same TLS verification as [pools.tls].
struct FetchRequest {
  std::string url;      // "https://host[:port]/path" or "http://..."
  std::string ca_file;  // verify against this CA (empty: the system's)
  bool verify = true;
  std::chrono::milliseconds timeout{5000};
  uint64_t max_body_bytes = 1 << 20;
};

struct FetchResult {
  uint16_t status = 0;  // 0: no HTTP answer (see `error`)
  std::string body;
  std::string error;  // why it failed, for logs
};

// What the process offers a filter for work that belongs to no stream (refreshing keys from a
// URL, say). Main thread only, except mainDispatcher().post(), which any thread may call.
class Services {
 public:
  virtual ~Services() = default;
  // The main thread's clock and timers.
  virtual Dispatcher& mainDispatcher() = 0;
  // Starts a fetch; `done` runs later on the main thread, exactly once (also on failure).
  virtual void fetch(const FetchRequest& request, std::function<void(FetchResult)> done) = 0;
};

// A filter's state shared by all its streams on one worker (a rate limiter's shard of buckets):
// made once per worker per snapshot, on that worker, and destroyed there.
class WorkerState {
 public:
  virtual ~WorkerState() = default;
};

// Fields of a stream's access-log entry that filters fill.
enum class LogField : uint8_t {
  // What authentication decided ("jwt:allow:verified", "keys:deny:unknown_key"): values from
  // several filters are joined with a space. Never a token or a key.
  kAuth,
  // The request-target as the log should show it (a token in the query redacted): replaces what
  // the log would show otherwise.
  kPath,
};

class StreamCallbacks {
 public:
  virtual ~StreamCallbacks() = default;
  virtual const StreamInfo& info() const = 0;
  virtual Dispatcher& dispatcher() = 0;
  // This filter's per-worker state (null when the filter makes none).
  virtual WorkerState* workerState() = 0;

  // After kStop or kStopAndBuffer in an HTTP phase: the phase goes on with the next filter.
  // Call it on the worker (from a timer or a posted task), or from inside the phase itself.
  virtual void resume() = 0;
  // Before the response has started: answers the request with `status` (and `reason` as the
  // small body and log detail; `headers` are extra lines such as "Retry-After: 3\r\n") and ends
  // the stream's filter phases. On a WebSocket upgrade this happens before any 101.
  // `close_connection`: the client connection ends after the answer (a refused connection must
  // not go on with its next request).
  virtual void sendLocalReply(uint16_t status, std::string_view reason,
                              std::string_view headers = {}, bool close_connection = false) = 0;
  // WebSocket: ends the session with `code` toward the sender of the message (or frame) being
  // judged, or toward the client outside a message phase; the other side gets 1001.
  virtual void closeWebSocket(uint16_t code, std::string_view reason) = 0;
  // WebSocket, inside onFrame or onMessage: the current message is not forwarded (counted).
  virtual void dropMessage(std::string_view reason) = 0;
  // WebSocket, after onMessage returned kStop: the verdict on the message waiting in
  // `direction` (a filter may have one waiting each way). kForward lets the next filters judge
  // it, then sends it on.
  virtual void resumeMessage(Direction direction, MessageVerdict verdict) = 0;
  // Stops (true) or resumes (false) reading in one direction. Counted per filter: the proxy's
  // own reasons (watermarks, pipelining) and other filters' pauses never undo this one.
  virtual void readDisable(Direction direction, bool disable) = 0;
  // Fills a field of the stream's access-log entry (see LogField), at any time before the
  // stream ends (a WebSocket session's entry is written when the session ends).
  virtual void setLogField(LogField field, std::string_view value) = 0;

  // Attributes of the stream: what one filter learned for the filters after it to read, for the
  // stream's whole life (a WebSocket session's too). By convention "claim:NAME" holds the value
  // of claim NAME of a token a filter verified. Setting a name again replaces its value.
  virtual void setAttribute(std::string_view name, std::string_view value) = 0;
  // The value, or nullopt when no filter set it. The view is valid until the name is set again.
  virtual std::optional<std::string_view> attribute(std::string_view name) const = 0;
};

// Per request or per WebSocket session. A phase is only called when the Filter declares it
// (Filter::phases()); all of them run on the stream's worker.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  void setCallbacks(StreamCallbacks& callbacks) { callbacks_ = &callbacks; }

  // The request head, changeable (headers added, set, removed) before it goes upstream.
  virtual Status onRequestHead(RequestHead& head) { return Status::kContinue; }
  // A piece of the request body (or, after kStopAndBuffer, all of it with `end` set). May
  // continue, or stop (only with `end`: after kStopAndBuffer) until resume().
  virtual Status onRequestBody(std::string_view data, bool end) { return Status::kContinue; }
  // The response head from the backend, changeable before it goes to the client.
  virtual Status onResponseHead(ResponseHead& head) { return Status::kContinue; }
  // WebSocket data frame headers; drop or close through the callbacks.
  virtual Status onFrame(const FrameInfo& frame) { return Status::kContinue; }
  // A whole WebSocket message, when the filter needs payloads (Filter::kMessage).
  virtual Status onMessage(Message& message) { return Status::kContinue; }
  // The stream ends, however it ends (completed, client or backend gone, reload, shutdown): cancel
  // async work (timers, pending lookups). No callback may be used from here on.
  virtual void onDestroy() {}

 protected:
  StreamCallbacks& callbacks() { return *callbacks_; }

 private:
  StreamCallbacks* callbacks_ = nullptr;
};

// Built once per config snapshot; shared read-only by every worker.
class Filter {
 public:
  // The phases a filter takes part in (a bit set): only those are called.
  enum Phase : uint8_t {
    kRequestHead = 1,
    kRequestBody = 2,
    kResponseHead = 4,
    kFrame = 8,
    kMessage = 16,  // whole WebSocket messages are assembled for it (bounded by
                    // max_message_bytes); otherwise frames stream through unassembled
  };

  explicit Filter(std::string name) : name_(std::move(name)) {}
  virtual ~Filter() = default;
  const std::string& name() const { return name_; }
  virtual uint8_t phases() const = 0;
  virtual std::unique_ptr<StreamFilter> create() const = 0;
  // Made once per worker per snapshot, on that worker.
  virtual std::shared_ptr<WorkerState> createWorkerState(Dispatcher& dispatcher) const {
    return nullptr;
  }
  // Main thread, once the process knows its workers: declare the filter's own metrics. Not
  // called for `--check`.
  virtual void bindStats(Stats& stats) {}
  // Main thread: the filter's snapshot goes live (start background work: refreshes), and is
  // replaced or the process stops (stop it; streams of the old snapshot may still use the
  // filter afterwards). Not called for `--check`.
  virtual void start(Services& services) {}
  virtual void stop() {}

 private:
  std::string name_;
};

using FilterPtr = std::shared_ptr<Filter>;
using ConstFilterPtr = std::shared_ptr<const Filter>;

// Builds the filter a [[filters]] entry describes. On a bad entry, appends `file:line:col`
// diagnostics and returns null.
FilterPtr buildFilter(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

// conf::FilterValidator: builds the filter and discards it, so `--check` runs the same code.
void validateFilterConfig(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

}  // namespace sluice::filters
