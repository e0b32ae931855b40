#include "proxy/filter_manager.h"

#include "proxy/log.h"

namespace sluice {

using filters::Direction;
using filters::Filter;
using filters::MessageVerdict;
using filters::Status;

namespace {
size_t dirIndex(Direction d) {
  return d == Direction::kDownstreamToUpstream ? 0 : 1;
}
}  // namespace

// One filter instance with the callbacks it was handed.
struct FilterManager::Slot : filters::StreamCallbacks {
  FilterManager* fm = nullptr;
  size_t index = 0;
  filters::ConstFilterPtr filter;
  std::unique_ptr<filters::StreamFilter> stream;
  metrics::FilterSlot* counters = nullptr;
  std::shared_ptr<filters::WorkerState> state;
  uint8_t phases = 0;
  bool in_call = false;
  bool resumed_in_call = false;
  uint16_t read_disabled[2] = {0, 0};
  // A verdict given from inside onMessage (resumeMessage on the message being judged).
  bool verdict_in_call = false;
  MessageVerdict verdict;

  const filters::StreamInfo& info() const override { return fm->info_; }
  filters::Dispatcher& dispatcher() override { return fm->dispatcher_; }
  filters::WorkerState* workerState() override { return state.get(); }
  void resume() override { fm->resume(*this); }
  void sendLocalReply(uint16_t status, std::string_view reason, std::string_view headers,
                      bool close_connection) override {
    fm->localReply(*this, status, reason, headers, close_connection);
  }
  void closeWebSocket(uint16_t code, std::string_view reason) override {
    fm->closeWebSocket(*this, fm->closeDirection(*this), code, reason);
  }
  void dropMessage(std::string_view reason) override { fm->drop(*this, reason); }
  void resumeMessage(Direction direction, MessageVerdict v) override {
    fm->resumeMessage(*this, direction, v);
  }
  void readDisable(Direction direction, bool disable) override {
    fm->readDisable(*this, direction, disable);
  }
  void setLogField(filters::LogField field, std::string_view value) override {
    fm->setLogField(field, value);
  }
  void setAttribute(std::string_view name, std::string_view value) override {
    fm->setAttribute(name, value);
  }
  std::optional<std::string_view> attribute(std::string_view name) const override {
    return fm->attribute(name);
  }
};

FilterManager::FilterManager(FilterOwner& owner, filters::Dispatcher& dispatcher,
                             std::vector<filters::ConstFilterPtr> chain,
                             std::vector<metrics::FilterSlot*> slots,
                             std::vector<std::shared_ptr<filters::WorkerState>> states,
                             uint64_t body_limit)
    : owner_(&owner), dispatcher_(dispatcher), body_limit_(body_limit) {
  slots_.reserve(chain.size());
  for (size_t i = 0; i < chain.size(); ++i) {
    auto s = std::make_unique<Slot>();
    s->fm = this;
    s->index = i;
    s->phases = chain[i]->phases();
    s->stream = chain[i]->create();
    s->stream->setCallbacks(*s);
    s->filter = std::move(chain[i]);
    s->counters = i < slots.size() ? slots[i] : nullptr;
    s->state = i < states.size() ? std::move(states[i]) : nullptr;
    phases_ |= s->phases;
    slots_.push_back(std::move(s));
  }
}

FilterManager::~FilterManager() {
  destroy();
}

void FilterManager::destroy() {
  if (destroyed_) {
    return;
  }
  destroyed_ = true;
  for (auto& s : slots_) {
    s->stream->onDestroy();
  }
  for (size_t d = 0; d < 2; ++d) {
    if (read_disabled_[d] > 0) {
      read_disabled_[d] = 0;
      owner_->filterReadDisable(
          d == 0 ? Direction::kDownstreamToUpstream : Direction::kUpstreamToDownstream, false);
    }
  }
}

void FilterManager::setAttribute(std::string_view name, std::string_view value) {
  for (auto& [n, v] : attributes_) {
    if (n == name) {
      v = value;
      return;
    }
  }
  attributes_.emplace_back(name, value);
}

std::optional<std::string_view> FilterManager::attribute(std::string_view name) const {
  for (const auto& [n, v] : attributes_) {
    if (n == name) {
      return std::string_view(v);
    }
  }
  return std::nullopt;
}

void FilterManager::count(Slot& slot, metrics::FilterDecision decision) {
  if (slot.counters != nullptr) {
    slot.counters->decisions[decision].inc();
  }
}

// ---- HTTP ----------------------------------------------------------------------------------

FilterManager::Result FilterManager::requestHead(filters::RequestHead& head, bool has_body) {
  request_ = &head;
  body_complete_ = !has_body;
  return runHead(0);
}

FilterManager::Result FilterManager::runHead(size_t from) {
  phase_ = Phase::kRequestHead;
  for (size_t i = from; i < slots_.size(); ++i) {
    Slot& s = *slots_[i];
    if ((s.phases & Filter::kRequestHead) == 0) {
      continue;
    }
    s.in_call = true;
    s.resumed_in_call = false;
    Status st = s.stream->onRequestHead(*request_);
    s.in_call = false;
    if (ended_ || destroyed_) {
      return Result::kEnded;
    }
    if (s.resumed_in_call) {
      st = Status::kContinue;
    }
    if (st == Status::kStop) {
      stopped_ = static_cast<int>(i);
      return Result::kStopped;
    }
    if (st == Status::kStopAndBuffer) {
      stopped_ = buffering_ = static_cast<int>(i);
      if (body_complete_) {
        return requestBody({}, true);  // no body: the filter gets an empty one at once
      }
      return Result::kStopped;
    }
    count(s, metrics::kDecisionContinue);
  }
  phase_ = Phase::kNone;
  stopped_ = -1;
  return Result::kContinue;
}

FilterManager::Result FilterManager::requestBody(std::string_view data, bool end) {
  if (ended_ || destroyed_) {
    return Result::kEnded;
  }
  size_t upto = buffering_ >= 0 ? static_cast<size_t>(buffering_) : slots_.size();
  // Filters before the buffering one (all, when none buffers) see the body as it streams.
  if ((phases_ & Filter::kRequestBody) != 0) {
    for (size_t i = 0; i < upto; ++i) {
      Slot& s = *slots_[i];
      if ((s.phases & Filter::kRequestBody) == 0) {
        continue;
      }
      s.in_call = true;
      s.stream->onRequestBody(data, end);
      s.in_call = false;
      if (ended_ || destroyed_) {
        return Result::kEnded;
      }
    }
  }
  if (buffering_ < 0) {
    return Result::kContinue;
  }
  Slot& s = *slots_[static_cast<size_t>(buffering_)];
  if (body_.size() + data.size() > body_limit_) {
    localReply(s, 413, "request body larger than the filter's buffer (max_body_bytes)", {}, false);
    return Result::kEnded;
  }
  body_.append(data);
  if (!end) {
    return Result::kStopped;
  }
  body_complete_ = true;
  s.in_call = true;
  s.resumed_in_call = false;
  Status st = s.stream->onRequestBody(body_, true);
  s.in_call = false;
  if (ended_ || destroyed_) {
    return Result::kEnded;
  }
  if (st == Status::kStop && !s.resumed_in_call) {
    return Result::kStopped;  // a verdict to come (resume())
  }
  finishBuffering(s.index);
  return runHead(s.index + 1);
}

void FilterManager::finishBuffering(size_t filter) {
  buffering_ = -1;
  count(*slots_[filter], metrics::kDecisionContinue);
}

std::string FilterManager::takeBufferedBody(bool* complete) {
  *complete = body_complete_;
  std::string body = std::move(body_);
  std::string().swap(body_);
  return body;
}

FilterManager::Result FilterManager::responseHead(filters::ResponseHead& head) {
  if (ended_ || destroyed_) {
    return Result::kEnded;
  }
  response_ = &head;
  return runResponse(0);
}

FilterManager::Result FilterManager::runResponse(size_t from) {
  phase_ = Phase::kResponseHead;
  for (size_t i = from; i < slots_.size(); ++i) {
    Slot& s = *slots_[i];
    if ((s.phases & Filter::kResponseHead) == 0) {
      continue;
    }
    s.in_call = true;
    s.resumed_in_call = false;
    Status st = s.stream->onResponseHead(*response_);
    s.in_call = false;
    if (ended_ || destroyed_) {
      return Result::kEnded;
    }
    if (st != Status::kContinue && !s.resumed_in_call) {
      stopped_ = static_cast<int>(i);
      return Result::kStopped;
    }
  }
  phase_ = Phase::kNone;
  stopped_ = -1;
  return Result::kContinue;
}

void FilterManager::resume(Slot& slot) {
  if (destroyed_ || ended_) {
    return;
  }
  if (slot.in_call) {
    slot.resumed_in_call = true;
    return;
  }
  if (stopped_ != static_cast<int>(slot.index)) {
    return;  // not waiting for this filter (a late or repeated resume)
  }
  stopped_ = -1;
  Result r = Result::kContinue;
  FilterOwner::Phase done = FilterOwner::Phase::kRequestHead;
  if (phase_ == Phase::kRequestHead) {
    if (buffering_ == static_cast<int>(slot.index)) {
      finishBuffering(slot.index);  // decided before (or after) the whole body came
    } else {
      count(slot, metrics::kDecisionContinue);
    }
    r = runHead(slot.index + 1);
  } else if (phase_ == Phase::kResponseHead) {
    r = runResponse(slot.index + 1);
    done = FilterOwner::Phase::kResponseHead;
  } else {
    return;
  }
  if (r == Result::kContinue) {
    owner_->onPhaseResumed(done);
  }
}

void FilterManager::localReply(Slot& slot, uint16_t status, std::string_view reason,
                               std::string_view headers, bool close_connection) {
  if (destroyed_ || ended_) {
    return;
  }
  ended_ = true;
  count(slot, metrics::kDecisionReject);
  LOG_DEBUG("filter '%s' answered %u: %.*s", slot.filter->name().c_str(),
            static_cast<unsigned>(status), static_cast<int>(reason.size()), reason.data());
  owner_->filterLocalReply(status, reason, headers, close_connection);
}

// ---- WebSocket -----------------------------------------------------------------------------

FilterManager::MessageResult FilterManager::frame(const filters::FrameInfo& frame) {
  if (ended_ || destroyed_) {
    return MessageResult::kClosed;
  }
  judging_ = frame.direction;
  for (auto& sp : slots_) {
    Slot& s = *sp;
    if ((s.phases & Filter::kFrame) == 0) {
      continue;
    }
    dropped_ = false;
    s.in_call = true;
    s.stream->onFrame(frame);
    s.in_call = false;
    if (ended_ || destroyed_) {
      return MessageResult::kClosed;
    }
    if (dropped_) {
      return MessageResult::kDrop;
    }
  }
  return MessageResult::kForward;
}

FilterManager::MessageResult FilterManager::message(filters::Message& message) {
  if (ended_ || destroyed_) {
    return MessageResult::kClosed;
  }
  waiting_[dirIndex(message.direction())].message = &message;
  return runMessage(message.direction(), 0);
}

FilterManager::MessageResult FilterManager::runMessage(Direction d, size_t from) {
  Waiting& w = waiting_[dirIndex(d)];
  for (size_t i = from; i < slots_.size(); ++i) {
    Slot& s = *slots_[i];
    if ((s.phases & Filter::kMessage) == 0) {
      continue;
    }
    judging_ = d;
    dropped_ = false;
    s.in_call = true;
    s.verdict_in_call = false;
    Status st = s.stream->onMessage(*w.message);
    s.in_call = false;
    if (ended_ || destroyed_) {
      return MessageResult::kClosed;
    }
    if (s.verdict_in_call) {
      if (s.verdict.kind == MessageVerdict::Kind::kDrop) {
        drop(s, s.verdict.reason);
      } else if (s.verdict.kind == MessageVerdict::Kind::kClose) {
        closeWebSocket(s, d, s.verdict.close_code, s.verdict.reason);
        return MessageResult::kClosed;
      }
      st = Status::kContinue;
    }
    if (dropped_) {
      return MessageResult::kDrop;
    }
    if (st != Status::kContinue) {
      w.filter = static_cast<int>(i);
      return MessageResult::kStopped;
    }
  }
  w = Waiting{};
  return MessageResult::kForward;
}

void FilterManager::resumeMessage(Slot& slot, Direction d, const MessageVerdict& v) {
  if (destroyed_ || ended_) {
    return;
  }
  if (slot.in_call && judging_ == d) {
    slot.verdict_in_call = true;
    slot.verdict = v;
    return;
  }
  Waiting& w = waiting_[dirIndex(d)];
  if (w.filter != static_cast<int>(slot.index)) {
    return;  // no message of that direction waits for this filter
  }
  size_t next = slot.index + 1;
  w.filter = -1;
  MessageResult r = MessageResult::kForward;
  if (v.kind == MessageVerdict::Kind::kDrop) {
    dropped_ = false;
    drop(slot, v.reason);
    r = MessageResult::kDrop;
  } else if (v.kind == MessageVerdict::Kind::kClose) {
    closeWebSocket(slot, d, v.close_code, v.reason);
    return;
  } else {
    r = runMessage(d, next);
  }
  if (r == MessageResult::kStopped || r == MessageResult::kClosed) {
    return;
  }
  w = Waiting{};
  owner_->onMessageVerdict(
      d, r == MessageResult::kDrop ? MessageVerdict::drop("dropped by a filter") : v);
}

void FilterManager::closeWebSocket(Slot& slot, Direction from, uint16_t code,
                                   std::string_view reason) {
  if (destroyed_ || ended_) {
    return;
  }
  ended_ = true;
  count(slot, metrics::kDecisionClose);
  LOG_DEBUG("filter '%s' closes the WebSocket with %u: %.*s", slot.filter->name().c_str(),
            static_cast<unsigned>(code), static_cast<int>(reason.size()), reason.data());
  owner_->filterCloseWebSocket(from, code, reason);
}

// A close asked for through the callbacks: toward the sender of the message being judged, or of
// a message waiting for this filter, or else toward the client.
Direction FilterManager::closeDirection(const Slot& slot) const {
  if (slot.in_call) {
    return judging_;
  }
  if (waiting_[1].filter == static_cast<int>(slot.index)) {
    return Direction::kUpstreamToDownstream;
  }
  return Direction::kDownstreamToUpstream;
}

void FilterManager::drop(Slot& slot, std::string_view reason) {
  if (destroyed_ || ended_ || dropped_) {
    return;
  }
  dropped_ = true;
  count(slot, metrics::kDecisionDrop);
  LOG_DEBUG("filter '%s' dropped a message: %.*s", slot.filter->name().c_str(),
            static_cast<int>(reason.size()), reason.data());
}

void FilterManager::readDisable(Slot& slot, Direction d, bool disable) {
  if (destroyed_) {
    return;
  }
  size_t i = dirIndex(d);
  if (disable) {
    ++slot.read_disabled[i];
    if (read_disabled_[i]++ == 0) {
      owner_->filterReadDisable(d, true);
    }
  } else if (slot.read_disabled[i] > 0) {
    --slot.read_disabled[i];
    if (--read_disabled_[i] == 0) {
      owner_->filterReadDisable(d, false);
    }
  }
}

// ---- the access log ------------------------------------------------------------------------

void FilterManager::setLogField(filters::LogField field, std::string_view value) {
  if (field == filters::LogField::kAuth) {
    // Bounded: a filter's note is a few words; a stream's entry must not grow without end.
    constexpr size_t kMaxAuthField = 512;
    if (log_auth_.size() + value.size() >= kMaxAuthField) {
      return;
    }
    if (!log_auth_.empty()) {
      log_auth_.push_back(' ');
    }
    log_auth_.append(value);
  } else {
    log_path_.assign(value);
    log_path_set_ = true;
  }
}

}  // namespace sluice
