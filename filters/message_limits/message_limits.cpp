#include "filters/message_limits/message_limits.h"

namespace sluice::filters {

namespace {
class LimitsStream : public StreamFilter {
 public:
  explicit LimitsStream(const MessageLimitsFilter& f) : filter_(f) {}
  Status onFrame(const FrameInfo& frame) override {
    if (auto refused = filter_.judge(frame)) {
      callbacks().closeWebSocket(refused->code, refused->reason);
    }
    return Status::kContinue;
  }

 private:
  const MessageLimitsFilter& filter_;  // kept alive by the stream's FilterManager
};
}  // namespace

MessageLimitsFilter::MessageLimitsFilter(std::string name, uint64_t max_message_bytes,
                                         bool allow_text, bool allow_binary)
    : Filter(std::move(name)),
      max_message_bytes_(max_message_bytes),
      allow_text_(allow_text),
      allow_binary_(allow_binary) {}

std::optional<MessageLimitsFilter::Refusal> MessageLimitsFilter::judge(
    const FrameInfo& frame) const {
  if (frame.first) {
    bool allowed = frame.type == MessageType::kText ? allow_text_ : allow_binary_;
    if (!allowed) {
      return Refusal{1003, frame.type == MessageType::kText ? "text messages are not accepted"
                                                            : "binary messages are not accepted"};
    }
  }
  if (max_message_bytes_ > 0 && frame.message_bytes > max_message_bytes_) {
    return Refusal{1009, "message too big"};
  }
  return std::nullopt;
}

std::unique_ptr<StreamFilter> MessageLimitsFilter::create() const {
  return std::make_unique<LimitsStream>(*this);
}

}  // namespace sluice::filters
