#pragma once

// One FilterManager per request or WebSocket session: it owns the stream's filter instances (and,
// through a shared_ptr each, the Filters they were made by, so a reload can never free a filter
// under a live instance), drives every phase for HTTP and WebSocket alike, counts decisions, and
// turns the filters' callbacks into requests to its owner (an HTTP exchange before the 101, the
// WebSocket relay after it).
//
// A phase call returns what the owner does next. When a filter stops, the owner waits; the
// filter's later resume() continues the phase from the next filter, and when it completes the
// manager tells the owner through FilterOwner::onPhaseResumed() (or onMessageVerdict()).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "filters/filter.h"
#include "proxy/metrics.h"

namespace sluice {

// What the filters of a stream may ask of the stream itself.
class FilterOwner {
 public:
  enum class Phase : uint8_t { kRequestHead, kResponseHead };

  virtual ~FilterOwner() = default;
  // HTTP, before the response started: answer locally (and close the connection after it when
  // asked). The filter phases are over.
  virtual void filterLocalReply(uint16_t status, std::string_view reason, std::string_view headers,
                                bool close_connection) = 0;
  // WebSocket: end the session, `code` toward the side that sent `from` (the other side gets
  // 1001); `from` is the client's direction outside a message phase.
  virtual void filterCloseWebSocket(filters::Direction from, uint16_t code,
                                    std::string_view reason) = 0;
  // The filters' combined wish for one direction changed (true: stop reading).
  virtual void filterReadDisable(filters::Direction direction, bool disable) = 0;
  // A stopped phase went on and every filter has passed.
  virtual void onPhaseResumed(Phase phase) = 0;
  // A stopped message got its verdict (after every filter: kForward means send it on).
  virtual void onMessageVerdict(filters::Direction direction,
                                const filters::MessageVerdict& verdict) = 0;
};

class FilterManager {
 public:
  // What a phase call tells its caller.
  enum class Result : uint8_t {
    kContinue,  // every filter passed: go on
    kStopped,   // a filter is waiting: the owner hears back through onPhaseResumed/onMessageVerdict
    kEnded,     // a filter answered or closed (the owner was told), or dropped the message
  };

  // `filters`: the route's chain in order; `slots`: each one's decision counters (or empty);
  // `states`: each one's per-worker state (or null). `body_limit` bounds a buffered body.
  FilterManager(FilterOwner& owner, filters::Dispatcher& dispatcher,
                std::vector<filters::ConstFilterPtr> filters,
                std::vector<metrics::FilterSlot*> slots,
                std::vector<std::shared_ptr<filters::WorkerState>> states, uint64_t body_limit);
  ~FilterManager();
  FilterManager(const FilterManager&) = delete;
  FilterManager& operator=(const FilterManager&) = delete;

  filters::StreamInfo& info() { return info_; }
  // The stream's attributes (StreamCallbacks::setAttribute), shared by its filters.
  void setAttribute(std::string_view name, std::string_view value);
  std::optional<std::string_view> attribute(std::string_view name) const;
  // After a 101 the WebSocket relay takes the filters over.
  void setOwner(FilterOwner& owner) { owner_ = &owner; }
  // The union of the filters' phases (Filter::Phase bits).
  uint8_t phases() const { return phases_; }
  bool has(filters::Filter::Phase p) const { return (phases_ & p) != 0; }

  // HTTP. `head` must stay valid until the head phase is over.
  Result requestHead(filters::RequestHead& head, bool has_body);
  // True while a filter waits for the whole body (kStopAndBuffer): the owner reads the body and
  // passes it here, and does not send the head upstream yet.
  bool buffering() const { return buffering_ >= 0; }
  // A piece of the request body. While buffering it is kept (kStopped until the phase resumes;
  // 413 beyond the limit); otherwise it goes through the body filters (kContinue to forward it).
  Result requestBody(std::string_view data, bool end);
  // After onPhaseResumed(kRequestHead): the body kept while buffering, and whether it was whole.
  std::string takeBufferedBody(bool* complete);
  size_t bufferedBytes() const { return body_.capacity(); }
  Result responseHead(filters::ResponseHead& head);

  // WebSocket.
  enum class MessageResult : uint8_t { kForward, kStopped, kDrop, kClosed };
  MessageResult frame(const filters::FrameInfo& frame);
  MessageResult message(filters::Message& message);

  // Ends the stream for the filters: onDestroy() on each, at most once; their read-disables are
  // released. Called by the destructor too.
  void destroy();

  // What the filters put into the access-log entry (StreamCallbacks::setLogField): the auth
  // decisions (empty when none), and the request-target to show instead of the real one (null
  // when no filter replaced it).
  std::string_view logAuth() const { return log_auth_; }
  const std::string* logPath() const { return log_path_set_ ? &log_path_ : nullptr; }

 private:
  struct Slot;
  friend struct Slot;
  enum class Phase : uint8_t { kNone, kRequestHead, kRequestBody, kResponseHead };
  struct Waiting {  // a message stopped in one direction
    int filter = -1;
    filters::Message* message = nullptr;
  };

  Result runHead(size_t from);
  Result runResponse(size_t from);
  MessageResult runMessage(filters::Direction d, size_t from);
  // One filter call: counts, handles a resume() made inside it.
  filters::Status call(Slot& slot, filters::Status status);
  void count(Slot& slot, metrics::FilterDecision decision);
  void resume(Slot& slot);
  void finishBuffering(size_t filter);
  void localReply(Slot& slot, uint16_t status, std::string_view reason, std::string_view headers,
                  bool close_connection);
  void closeWebSocket(Slot& slot, filters::Direction from, uint16_t code, std::string_view reason);
  filters::Direction closeDirection(const Slot& slot) const;
  void drop(Slot& slot, std::string_view reason);
  void resumeMessage(Slot& slot, filters::Direction d, const filters::MessageVerdict& v);
  void readDisable(Slot& slot, filters::Direction d, bool disable);
  void setLogField(filters::LogField field, std::string_view value);

  FilterOwner* owner_;
  filters::Dispatcher& dispatcher_;
  filters::StreamInfo info_;
  std::vector<std::unique_ptr<Slot>> slots_;
  uint8_t phases_ = 0;
  uint64_t body_limit_;
  Phase phase_ = Phase::kNone;
  int stopped_ = -1;    // the filter the current HTTP phase waits for
  int buffering_ = -1;  // the filter waiting for the whole body
  bool ended_ = false;  // a filter answered, or closed the session
  bool destroyed_ = false;
  filters::RequestHead* request_ = nullptr;
  filters::ResponseHead* response_ = nullptr;
  std::string body_;  // kept while buffering
  bool body_complete_ = false;
  // Inside a message phase call: which direction is judged, and whether it was dropped.
  filters::Direction judging_ = filters::Direction::kDownstreamToUpstream;
  bool dropped_ = false;
  Waiting waiting_[2];
  // Few per stream (a verified token's claims): a vector beats a map.
  std::vector<std::pair<std::string, std::string>> attributes_;
  uint16_t read_disabled_[2] = {0, 0};  // all filters' pauses per direction
  std::string log_auth_;
  std::string log_path_;
  bool log_path_set_ = false;
};

}  // namespace sluice
