#pragma once

// RFC 6455 framing: a resumable push parser that enforces the protocol for one direction, a
// streaming UTF-8 validator, masking, and frame writers. Pure code: no I/O, no allocation in the
// parser; unit tests and fuzzers drive it directly.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::ws {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

inline bool isControl(uint8_t opcode) {
  return (opcode & 0x8) != 0;
}

// Close codes sluice sends (DESIGN.md).
enum CloseCode : uint16_t {
  kNormal = 1000,
  kGoingAway = 1001,
  kProtocolError = 1002,
  kInvalidPayload = 1007,
  kPolicyViolation = 1008,
  kMessageTooBig = 1009,
  kInternalError = 1011,
  kServiceRestart = 1012,
  kTryAgainLater = 1013,
  kBadGateway = 1014,
};

// True for codes a peer may put in a close frame (RFC 6455 7.4 and the IANA registry).
bool validCloseCode(uint16_t code);

// Streaming UTF-8 validation: feed any slices; a code point may span them. Runs of ASCII are
// skipped 32 bytes a step (SSE2), the rest goes through a small state machine byte by byte.
class Utf8Validator {
 public:
  // Returns false as soon as the input so far cannot be valid UTF-8.
  bool feed(const uint8_t* data, size_t len);
  // The same for bytes still masked (a client's frame), unmasked with `mask` from mask offset
  // `offset` (any value; only its low two bits count). `data` is left as it is: ASCII is checked
  // on the masked bytes, and only what follows the first other byte is unmasked into a copy.
  bool feedMasked(const uint8_t* data, size_t len, const uint8_t mask[4], size_t offset);
  // True when the input so far ends on a code point boundary.
  bool complete() const { return state_ == 0; }
  bool failed() const { return state_ == kReject; }
  void reset() { state_ = 0; }

 private:
  static constexpr uint32_t kReject = 12;
  uint32_t state_ = 0;
};

bool validUtf8(std::string_view s);

// XORs `len` bytes with the 4-byte `mask`, starting at mask offset `offset` (0..3). Returns the
// offset for the next byte. Works 32 bytes a step (SSE2), then a word at a time.
size_t applyMask(uint8_t* data, size_t len, const uint8_t mask[4], size_t offset);

struct FrameHeader {
  bool fin = false;
  uint8_t rsv = 0;  // the three RSV bits, as bits 2..0
  uint8_t opcode = 0;
  bool masked = false;
  uint8_t mask[4] = {0, 0, 0, 0};
  uint64_t length = 0;
  uint8_t header_size = 0;  // bytes on the wire before the payload (2..14)
};

// Protocol errors the parser reports. Each maps to a close code.
enum class FrameError {
  kNone,
  kMaskRequired,   // client frame without mask
  kMaskForbidden,  // server frame with mask
  kReservedBits,   // RSV set without a negotiated extension
  kUnknownOpcode,
  kControlTooLong,     // control frame payload > 125
  kControlFragmented,  // control frame without FIN
  kUnexpectedContinuation,
  kExpectedContinuation,  // new data frame while a fragmented message is open
  kLengthTooLarge,        // 64-bit length with the top bit set
};
const char* frameErrorName(FrameError e);

// Parses the frames of one direction. Feed it bytes; it reports each frame header once complete
// (a header split across reads is spilled into 14 bytes of state), then the payload in slices as
// they arrive, then the frame's end. Protocol rules that depend only on headers are enforced
// here; payload rules (UTF-8, close payload) are the caller's, who sees the payload.
class FrameParser {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // `raw` is the header exactly as on the wire. Return false to stop parsing.
    virtual bool onFrameHeader(const FrameHeader& h, const uint8_t* raw) = 0;
    // Payload bytes as on the wire (still masked for client frames). Return false to stop.
    virtual bool onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                                uint64_t offset) = 0;
    virtual bool onFrameEnd(const FrameHeader& h) = 0;
    // What onWholeFrame() did with a frame.
    enum class Whole : uint8_t {
      kDecline,  // nothing: the parser goes on with onFrameHeader(), onFramePayload(), ...
      kHandled,  // the whole frame, as the three calls would have: parsing goes on after it
      kStop,     // the same, then stop (as if onFramePayload() or onFrameEnd() returned false)
    };
    // A frame whose header and payload are both in the buffer being fed, contiguous from `raw`
    // (its payload at raw + h.header_size), offered whole first: a handler may take the common
    // frame in one call instead of three. The default declines.
    virtual Whole onWholeFrame(const FrameHeader& h, const uint8_t* raw) { return Whole::kDecline; }
  };

  // `from_client`: frames must be masked (else unmasked). `allow_rsv1`: permessage-deflate.
  explicit FrameParser(bool from_client, bool allow_rsv1 = false)
      : from_client_(from_client), allow_rsv1_(allow_rsv1) {}

  // Consumes `len` bytes. Returns the number consumed: less than `len` only when a handler
  // callback returned false or an error occurred (then error() says which).
  size_t feed(const uint8_t* data, size_t len, Handler& handler);
  FrameError error() const { return error_; }
  bool inFragmentedMessage() const { return in_message_; }
  // Opcode of the current (possibly fragmented) data message.
  uint8_t messageOpcode() const { return message_opcode_; }

 private:
  bool parseHeader(const uint8_t* p, size_t avail, size_t* used);
  // The common small data frame's header, decoded and known valid; false for any other.
  bool parseCommonHeader(const uint8_t* p, size_t avail, size_t* used);
  FrameError validate(const FrameHeader& h);

  bool from_client_;
  bool allow_rsv1_;
  bool in_payload_ = false;
  bool in_message_ = false;
  uint8_t message_opcode_ = 0;
  FrameError error_ = FrameError::kNone;
  FrameHeader header_;
  uint64_t payload_done_ = 0;
  uint8_t spill_[14];
  uint8_t spill_len_ = 0;
};

// Appends a frame header. `mask` null = unmasked.
void writeFrameHeader(std::string* out, bool fin, uint8_t opcode, uint64_t length,
                      const uint8_t* mask, uint8_t rsv = 0);
// Appends a whole close frame with `code` and `reason` (truncated to fit 125 bytes).
void writeCloseFrame(std::string* out, uint16_t code, std::string_view reason, const uint8_t* mask);
// Appends a whole control frame (ping/pong) with `payload` (<= 125 bytes).
void writeControlFrame(std::string* out, uint8_t opcode, std::string_view payload,
                       const uint8_t* mask);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
std::string acceptKey(std::string_view key);
// True when `key` is base64 of exactly 16 bytes.
bool validClientKey(std::string_view key);

}  // namespace sluice::ws
