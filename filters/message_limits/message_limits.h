#pragma once

// message_limits: caps WebSocket message size (1009 Message Too Big to the sender) and the
// message types a route accepts (1003 Unsupported Data for others). It judges frames by their
// headers alone, so messages keep streaming through without being assembled.

#include <optional>

#include "filters/filter.h"

namespace sluice::filters {

class MessageLimitsFilter : public Filter {
 public:
  MessageLimitsFilter(std::string name, uint64_t max_message_bytes, bool allow_text,
                      bool allow_binary);
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);
  uint8_t phases() const override { return kFrame; }
  std::unique_ptr<StreamFilter> create() const override;

  // Why a frame ends its session: the close code toward its sender and the reason.
  struct Refusal {
    uint16_t code;
    const char* reason;
  };
  std::optional<Refusal> judge(const FrameInfo& frame) const;

 private:
  uint64_t max_message_bytes_;  // 0 = no size limit
  bool allow_text_;
  bool allow_binary_;
};

}  // namespace sluice::filters
