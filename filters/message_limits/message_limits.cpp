#include "filters/message_limits/message_limits.h"

namespace sluice::filters {

namespace {
class LimitsStream : public StreamFilter {
 public:
  explicit LimitsStream(const MessageLimitsFilter& f) : filter_(f) {}
  MessageDecision onFrame(const FrameInfo& frame) override { return filter_.judge(frame); }

 private:
  const MessageLimitsFilter& filter_;
};
}  // namespace

MessageLimitsFilter::MessageLimitsFilter(std::string name, uint64_t max_message_bytes,
                                         bool allow_text, bool allow_binary)
    : Filter(std::move(name)),
      max_message_bytes_(max_message_bytes),
      allow_text_(allow_text),
      allow_binary_(allow_binary) {}

MessageDecision MessageLimitsFilter::judge(const FrameInfo& frame) const {
  if (frame.first) {
    bool allowed = frame.type == MessageType::kText ? allow_text_ : allow_binary_;
    if (!allowed) {
      return MessageDecision::close(1003, frame.type == MessageType::kText
                                              ? "text messages are not accepted"
                                              : "binary messages are not accepted");
    }
  }
  if (max_message_bytes_ > 0 && frame.message_bytes > max_message_bytes_) {
    return MessageDecision::close(1009, "message too big");
  }
  return MessageDecision::next();
}

std::unique_ptr<StreamFilter> MessageLimitsFilter::create() const {
  return std::make_unique<LimitsStream>(*this);
}

}  // namespace sluice::filters
