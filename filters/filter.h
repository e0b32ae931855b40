#pragma once

// The filter interface. A filter sees the HTTP request head of every request on its routes and,
// on WebSocket routes, the messages in each direction. Filters depend on conf/ and this header
// only (nothing of proxy/ or libuv), so each one is unit-testable alone.
//
// Config once, instances per stream: a Filter is built once per config snapshot from its
// [[filters]] table; it creates a small StreamFilter for each request or WebSocket session.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/config.h"

namespace sluice::filters {

enum class Direction : uint8_t { kDownstreamToUpstream, kUpstreamToDownstream };
const char* directionName(Direction d);  // "downstream_to_upstream", "upstream_to_downstream"

// What a filter sees of a request head.
class RequestView {
 public:
  virtual ~RequestView() = default;
  virtual std::string_view method() const = 0;
  virtual std::string_view path() const = 0;  // request-target, query included
  virtual std::string_view host() const = 0;
  virtual std::optional<std::string_view> header(std::string_view name) const = 0;
  virtual std::string_view clientIp() const = 0;
  virtual bool webSocketUpgrade() const = 0;
};

struct HeadDecision {
  enum class Action : uint8_t { kContinue, kReject, kPause };
  Action action = Action::kContinue;
  uint16_t status = 0;  // kReject: the HTTP status sent to the client
  std::string reason;   // why: logged, counted and sent in the small response body
  std::string headers;  // kReject: extra response header lines ("Retry-After: 3\r\n")

  static HeadDecision next() { return {}; }
  static HeadDecision reject(uint16_t status, std::string reason, std::string headers = {}) {
    return {Action::kReject, status, std::move(reason), std::move(headers)};
  }
  static HeadDecision pause() { return {Action::kPause, 0, {}, {}}; }
};

// Handed to a filter that paused the request head. The filter calls resume() exactly once, on
// the same worker thread, possibly from inside onRequestHead itself.
class HeadCallbacks {
 public:
  virtual ~HeadCallbacks() = default;
  virtual void resume(HeadDecision decision) = 0;
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

// A whole message (only for filters that need payloads), unmasked.
struct Message {
  Direction direction;
  MessageType type;
  std::string_view payload;
};

struct MessageDecision {
  enum class Action : uint8_t { kContinue, kDrop, kClose };
  Action action = Action::kContinue;
  uint16_t close_code = 0;  // kClose: sent to the peer that sent the message
  std::string reason;

  static MessageDecision next() { return {}; }
  static MessageDecision drop(std::string reason) { return {Action::kDrop, 0, std::move(reason)}; }
  static MessageDecision close(uint16_t code, std::string reason) {
    return {Action::kClose, code, std::move(reason)};
  }
};

// Per request or per WebSocket session.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  virtual HeadDecision onRequestHead(const RequestView& request, HeadCallbacks& callbacks) {
    return HeadDecision::next();
  }
  virtual MessageDecision onFrame(const FrameInfo& frame) { return MessageDecision::next(); }
  // Called once per complete message, only when the Filter needs payloads.
  virtual MessageDecision onMessage(const Message& message) { return MessageDecision::next(); }
};

// Built once per config snapshot; shared read-only by every worker.
class Filter {
 public:
  explicit Filter(std::string name) : name_(std::move(name)) {}
  virtual ~Filter() = default;
  const std::string& name() const { return name_; }
  // True when onMessage needs whole message payloads (messages are then assembled, bounded by
  // max_message_bytes). Otherwise frames stream through without being assembled.
  virtual bool needsPayload() const { return false; }
  virtual std::unique_ptr<StreamFilter> create() const = 0;

 private:
  std::string name_;
};

using FilterPtr = std::shared_ptr<const Filter>;

// Builds the filter a [[filters]] entry describes. On a bad entry, appends `file:line:col`
// diagnostics and returns null.
FilterPtr buildFilter(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

// conf::FilterValidator: builds the filter and discards it, so `--check` runs the same code.
void validateFilterConfig(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

}  // namespace sluice::filters
