#pragma once

// permessage-deflate (RFC 7692): the negotiation as pure functions over Sec-WebSocket-Extensions
// values, and the per-message codec (raw deflate, the 00 00 ff ff tail, context takeover) with
// hard bounds on what inflating may cost. No I/O; unit tests and the fuzzer drive it directly.
//
// Memory (zlib 1.2.13, measured by counting zlib's allocations, which `memoryBytes()` reports):
//
//   inflate: 7,160 bytes of state + a window of 2^window_bits bytes, allocated at the first
//            output:  window 9: 7.5 KiB   10: 8 KiB   12: 11 KiB   15: 39 KiB
//   deflate: 2^(window_bits + 2) + 2^(mem_level + 9) bytes + about 5.8 KiB of state:
//                         mem_level 1    mem_level 4    mem_level 8    mem_level 9
//            window 9         8.8 KiB       15.8 KiB        136 KiB        264 KiB
//            window 10       10.8 KiB       17.8 KiB        138 KiB        266 KiB
//            window 12       22.8 KiB       29.8 KiB        150 KiB        278 KiB
//            window 15        135 KiB        142 KiB        262 KiB        390 KiB
//
// A connection with context takeover keeps that state for its whole life: a dedicated deflater
// at window 15 / mem_level 8 is 262 KiB per connection, 160 times the 1.65 KiB an idle WebSocket
// costs sluice otherwise. Without context takeover the state matters only while a message is
// being (de)compressed, so the defaults are shared-nothing: sluice asks for no context takeover
// in both directions, an Inflater frees its state at the end of every message, and a Deflater
// either frees its state after every message or (whole messages only) is shared by every
// connection of a worker. An idle compressed WebSocket then costs the two objects alone (56 and
// 40 bytes).
//
// Window 8: zlib refuses raw deflate with an 8-bit window since 1.2.9 (deflateInit2 returns
// Z_STREAM_ERROR; earlier versions silently used 9, which a strict 8-bit inflater may reject), so
// sluice never agrees to compress with window 8. A client offer with server_max_window_bits=8 is
// declined (RFC 7692 7.1.2.1 lets the server answer only "the same or smaller value", so 9 is not
// a legal answer), and sluice never asks a peer for an 8-bit window either. A backend may still
// answer client_max_window_bits=8 to sluice's offer (its right); sluice then sends that backend
// uncompressed messages, which RFC 7692 allows for any message (see canDeflate()). Inflaters use
// at least a 9-bit window: a bigger window than the peer's costs 256 bytes and accepts streams
// from old zlib peers that were asked for 8 and used 9.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/message.h"

namespace sluice::http {
class ZStream;
}

namespace sluice::ws {

inline constexpr uint8_t kMinWindowBits = 8;
inline constexpr uint8_t kMaxWindowBits = 15;
// The smallest window zlib compresses raw deflate with.
inline constexpr uint8_t kMinDeflateWindowBits = 9;

// The parameters of one permessage-deflate element of a Sec-WebSocket-Extensions header, as
// written (RFC 7692 7.1): a client's offer or a server's answer.
struct DeflateParams {
  bool server_no_context_takeover = false;
  bool client_no_context_takeover = false;
  uint8_t server_max_window_bits = 0;   // 8..15; 0: absent
  bool client_max_window_bits = false;  // the parameter is present (an offer may give no value)
  uint8_t client_max_window_bits_value = 0;  // 8..15; 0: no value

  bool operator==(const DeflateParams&) const = default;
};

// "permessage-deflate; server_no_context_takeover; client_max_window_bits=10".
std::string formatDeflateParams(const DeflateParams& params);
// Several elements, comma-separated, in order (the offers sent to a backend).
std::string formatDeflateOffers(std::span<const DeflateParams> offers);

// The permessage-deflate offers of a request's Sec-WebSocket-Extensions lines (each line a
// comma-separated list; quoted-string values allowed), in the client's order of preference.
// An offer that breaks RFC 7692 (an unknown or repeated parameter, a window outside 8..15 or
// with leading zeros, a value on a parameter that takes none, a syntax error) is declined:
// left out, as the RFC tells a server to do, never an error for the whole request. Other
// extensions are ignored.
std::vector<DeflateParams> parseDeflateOffers(std::span<const std::string_view> values);
// The same over every Sec-WebSocket-Extensions line of `headers`.
std::vector<DeflateParams> parseDeflateOffers(const std::vector<http::Header>& headers);

// How the messages of one direction are compressed: by the sender's deflater, and read by the
// receiver's inflater.
struct DeflateDirection {
  uint8_t window_bits = kMaxWindowBits;  // the sender's LZ77 window, 8..15
  bool no_context_takeover = false;      // the sender starts every message afresh

  bool operator==(const DeflateDirection&) const = default;
};

// True when sluice can compress this direction's messages (window 9 or more). When false,
// sluice sends its messages in that direction uncompressed (RSV1 clear).
inline bool canDeflate(const DeflateDirection& d) {
  return d.window_bits >= kMinDeflateWindowBits;
}

// What one leg agreed on. On the client leg sluice is the server: it deflates server_to_client
// and inflates client_to_server. On the backend leg sluice is the client: the other way round.
struct DeflateNegotiated {
  DeflateDirection server_to_client;  // the server_* parameters
  DeflateDirection client_to_server;  // the client_* parameters

  bool operator==(const DeflateNegotiated&) const = default;
};

// What sluice wants, from its own point of view, so that one config serves both legs (sluice is
// the server toward the client and the client toward the backend). Windows are 9..15 (values
// outside are clamped). The defaults keep an idle WebSocket small (see the table above): full
// windows, but no context takeover either way, so no zlib state outlives a message.
struct DeflateConfig {
  bool enabled = true;
  // sluice's compressor: toward the client server_max_window_bits / server_no_context_takeover,
  // toward a backend client_max_window_bits / client_no_context_takeover.
  uint8_t deflate_window_bits = kMaxWindowBits;
  bool deflate_no_context_takeover = true;
  // What sluice asks of the peer's compressor, which bounds sluice's inflater: toward the client
  // client_max_window_bits / client_no_context_takeover, toward a backend server_*.
  uint8_t inflate_window_bits = kMaxWindowBits;
  bool inflate_no_context_takeover = true;
};

// sluice's answer to a client.
struct DeflateAnswer {
  DeflateParams response;  // send "Sec-WebSocket-Extensions: " + formatDeflateParams(response)
  DeflateNegotiated negotiated;
  size_t offer = 0;  // the index of the offer accepted
};

// Answers a client's offers with the first one (in the client's order) sluice can accept, asking
// only what RFC 7692 lets a server ask: sluice's window no bigger than the client allowed, a
// client window only when the client offered client_max_window_bits, no context takeover for
// either side whenever the config wants it. An offer of server_max_window_bits=8 is declined (see
// the top of this file). nullopt: no compression (no Sec-WebSocket-Extensions in the 101).
std::optional<DeflateAnswer> answerDeflateOffers(std::span<const DeflateParams> offers,
                                                 const DeflateConfig& config);

// The offer sluice sends to a backend when it compresses toward it (terminate_both). In
// passthrough mode the client's own offers go to the backend instead (formatDeflateOffers of
// parseDeflateOffers), so that the backend's answer suits the client too.
DeflateParams backendDeflateOffer(const DeflateConfig& config);

// The check of a backend's 101 against the offers sluice sent it.
struct BackendDeflateAnswer {
  const char* error = nullptr;  // set: the answer is invalid (answer the client 502); why
  bool accepted = false;        // the backend agreed to permessage-deflate
  size_t offer = 0;             // which offer it accepted (the first its answer suits)
  DeflateParams response;       // as answered; passthrough relays formatDeflateParams(response)
  DeflateNegotiated negotiated;
};

// An answer is invalid when it names an extension or a parameter that was never offered (any
// extension but permessage-deflate, permessage-deflate twice, client_max_window_bits not offered),
// breaks the syntax or RFC 7692's values (a repeated or unknown parameter, a window outside 8..15,
// client_max_window_bits without a value), or fails an offer's demand (server_max_window_bits
// missing or larger than offered, server_no_context_takeover offered and not answered). No
// Sec-WebSocket-Extensions line at all: no compression, no error.
BackendDeflateAnswer checkBackendDeflateAnswer(std::span<const std::string_view> values,
                                               std::span<const DeflateParams> offers);
BackendDeflateAnswer checkBackendDeflateAnswer(const std::vector<http::Header>& headers,
                                               std::span<const DeflateParams> offers);

// Inflates the messages of one direction, a message at a time, fed the compressed payload in
// pieces as frames and reads deliver it (unmasked). Output is appended to a caller's string and
// never grows past `max_message_bytes` per message: zlib writes into a 16 KiB stack buffer, and
// only what fits under the bound is appended, so a decompression bomb costs the bound and no
// more. Without context takeover the zlib state is freed at the end of every message, so an idle
// connection holds none. zlib checks a distance against the window only when it reaches back
// past the current 16 KiB output buffer, so a stream using a larger window than negotiated fails
// (kCorrupt) only from there on: lenient, and no memory beyond the negotiated window is held.
class Inflater {
 public:
  enum class Status {
    kOk,
    kTooBig,    // more than max_message_bytes (close 1009)
    kRatio,     // inflated more than max_ratio times its compressed size (close 1009)
    kCorrupt,   // not a valid deflate stream, or a window larger than negotiated (close 1007)
    kNoMemory,  // zlib could not allocate its state (close 1011)
  };

  struct Options {
    uint8_t window_bits = kMaxWindowBits;  // the sender's window (8..15; 9 is used for 8)
    bool no_context_takeover = false;      // the sender starts every message afresh
    uint64_t max_message_bytes = 1 << 20;  // the bound on one inflated message
    // 0: off. Else a message inflating to more than max_ratio times its compressed bytes (past
    // the first kRatioGrace inflated bytes, so that small messages are not judged) is refused.
    uint32_t max_ratio = 0;
  };
  static constexpr uint64_t kRatioGrace = uint64_t{64} * 1024;

  // The options for a negotiated direction.
  static Options optionsFor(const DeflateDirection& d, uint64_t max_message_bytes) {
    return Options{d.window_bits, d.no_context_takeover, max_message_bytes, 0};
  }

  explicit Inflater(const Options& options);
  ~Inflater();
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // Inflates the next piece of the current message's compressed payload into `out`. After an
  // error, every call returns that error until reset().
  Status feed(const uint8_t* data, size_t len, std::string* out);
  Status feed(std::string_view data, std::string* out) {
    return feed(reinterpret_cast<const uint8_t*>(data.data()), data.size(), out);
  }
  // The message is complete (its last frame's payload was fed): inflates the 00 00 ff ff tail
  // RFC 7692 removed, checks that the data ended on a block boundary (kCorrupt if not), and gets
  // ready for the next message.
  Status finishMessage(std::string* out);
  // Forgets the current message and the context (a fresh stream at the next feed): after an
  // error, or when the caller drops a message.
  void reset();

  // Inflated bytes of the current message so far.
  uint64_t messageBytes() const { return produced_; }
  // Bytes zlib holds now (0 between messages without context takeover).
  size_t memoryBytes() const;
  const Options& options() const { return options_; }

 private:
  Status run(const uint8_t* data, size_t len, std::string* out);
  Status fail(Status s);

  Options options_;
  std::unique_ptr<http::ZStream> z_;  // only while needed
  uint64_t produced_ = 0;             // inflated bytes of this message
  uint64_t consumed_ = 0;             // compressed bytes of this message
  Status failed_ = Status::kOk;
  bool ended_ = false;  // the message's data held a final block (BFINAL): the rest is ignored
};

// Compresses the messages of one direction: raw deflate, Z_SYNC_FLUSH after every piece, the
// 00 00 ff ff tail of a message's last piece stripped (RFC 7692 7.2.1).
class Deflater {
 public:
  struct Options {
    uint8_t window_bits = kMaxWindowBits;  // 9..15 (clamped)
    uint8_t mem_level = 8;                 // 1..9: the hash table and the block buffer
    int level = 6;                         // zlib's 0..9
    bool no_context_takeover = true;       // start every message afresh
    // Without context takeover: let go of the zlib state after every message (a deflater per
    // connection: idle costs nothing; the reset state goes to a small per-thread set of idle
    // streams that the thread's next message takes, so a message pays a reset, not a new
    // stream) or keep it (one deflater shared by a worker's connections, each call a whole
    // message). Ignored with context takeover, whose state must live on.
    bool release_after_message = true;
    // Messages shorter than this are better sent uncompressed (see shouldCompress()).
    size_t threshold = 256;
  };

  // The options for a negotiated direction, sluice's preferences (level, mem_level, ...) kept.
  static Options optionsFor(const DeflateDirection& d, Options base) {
    base.window_bits = d.window_bits;
    base.no_context_takeover = d.no_context_takeover;
    return base;
  }

  explicit Deflater(const Options& options);
  ~Deflater();
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;

  // True when a message of `size` bytes is worth compressing. A message sent uncompressed (RSV1
  // clear) never touches the compression context, so skipping one is always allowed.
  bool shouldCompress(size_t size) const { return size >= options_.threshold; }

  // Compresses the next piece of the current message and appends the deflate data to `out`.
  // Every piece is flushed (Z_SYNC_FLUSH), so what is appended can be sent at once. `fin`: this
  // is the message's last piece: its 00 00 ff ff tail is stripped (an empty message becomes the
  // single byte 0x00, RFC 7692 7.2.3.6) and, without context takeover, the state is reset or
  // freed. False: zlib could not allocate its state (nothing was appended; send the message
  // uncompressed if nothing of it went out compressed, else close 1011).
  bool compress(std::string_view data, bool fin, std::string* out);

  // Frees the zlib state now; the next compress() starts a fresh stream (context is lost).
  void release();
  int idleKey() const;  // which idle streams fit this deflater
  // Bytes zlib holds now.
  size_t memoryBytes() const;
  const Options& options() const { return options_; }

 private:
  bool ensureStream();

  Options options_;
  std::unique_ptr<http::ZStream> z_;  // only while needed
};

}  // namespace sluice::ws
