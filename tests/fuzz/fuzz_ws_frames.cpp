// Fuzzes the WebSocket frame parser in both directions, split at input-chosen points, with the
// payload checks the relay does (unmasking, UTF-8 across fragments, close payloads).

#include <cstddef>
#include <cstdint>
#include <string>

#include "proxy/ws/codec.h"

namespace {

using namespace sluice::ws;

class Checker : public FrameParser::Handler {
 public:
  bool onFrameHeader(const FrameHeader& h, const uint8_t* raw) override {
    if (h.header_size < 2 || h.header_size > 14 || raw == nullptr) {
      __builtin_trap();
    }
    control_.clear();
    if (h.opcode == kText) {
      utf8_.reset();
    }
    return true;
  }
  bool onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                      uint64_t offset) override {
    std::string plain(reinterpret_cast<const char*>(data), len);
    auto* u = reinterpret_cast<uint8_t*>(plain.data());
    if (h.masked) {
      applyMask(u, len, h.mask, static_cast<size_t>(offset & 3));
    }
    if (isControl(h.opcode)) {
      control_ += plain;
      if (control_.size() > 125) {
        __builtin_trap();  // the parser must have refused this header
      }
    } else {
      utf8_.feed(u, len);
    }
    return true;
  }
  bool onFrameEnd(const FrameHeader& h) override {
    if (h.opcode == kClose && control_.size() >= 2) {
      auto code = static_cast<uint16_t>(static_cast<uint8_t>(control_[0]) << 8 |
                                        static_cast<uint8_t>(control_[1]));
      (void)validCloseCode(code);
      (void)validUtf8(std::string_view(control_).substr(2));
    }
    return true;
  }

 private:
  Utf8Validator utf8_;
  std::string control_;
};

void run(const uint8_t* data, size_t size, bool from_client, size_t split) {
  FrameParser parser(from_client, (split & 1) != 0);
  Checker checker;
  split = size == 0 ? 0 : split % (size + 1);
  size_t a = parser.feed(data, split, checker);
  if (a > split) {
    __builtin_trap();
  }
  if (parser.error() == FrameError::kNone) {
    size_t b = parser.feed(data + split, size - split, checker);
    if (b > size - split) {
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  size_t split = data[0];
  run(data + 1, size - 1, true, split);
  run(data + 1, size - 1, false, split * 7);
  return 0;
}
