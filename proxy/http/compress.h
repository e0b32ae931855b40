#pragma once

// HTTP response compression: Accept-Encoding negotiation, which responses to compress, the
// header edits, and streaming gzip (zlib) and brotli encoders. Pure code over heads and byte
// strings: no I/O, unit-tested directly.
//
// Memory per response being compressed (zlib 1.2.13, brotli 1.0.9, counted through the
// libraries' allocation hooks; memoryBytes() reports it):
//
//   gzip:   2^(window_bits + 2) + 2^(mem_level + 9) bytes + ~6 KiB, whatever the level: window 15
//           / mem_level 8 (the default) 262 KiB, mem_level 9 390 KiB, window 12 / mem_level 6
//           54 KiB.
//   brotli: grows with quality and window (lgwin), and with the body up to a limit; for a 20 KB
//           and a 2 MB body, written in 16 KiB pieces (the encoder slices bigger writes: quality
//           0-1 would otherwise take memory in proportion to one write):
//                   lgwin 16        lgwin 18        lgwin 20        lgwin 22
//           q 1     184 KiB         184 KiB         184 KiB         184 KiB
//           q 2     0.6-0.9 MiB     1.0-1.4 MiB     2.5-2.9 MiB     8.5-8.9 MiB
//           q 4     1.0-1.8 MiB     1.4-3.3 MiB     2.9-9.4 MiB     8.9-15 MiB
//           q 5     1.0-1.8 MiB     1.9-3.8 MiB     3.4-9.4 MiB     9.4-15 MiB
//           q 6     1.0-1.7 MiB     2.9-4.8 MiB     4.4-10 MiB      10-16 MiB
//           q 9     1.7-2.5 MiB     33-37 MiB       35-42 MiB       41-48 MiB
//           Quality 9 and up are for precompressed files, not a proxy.
//
// The defaults, from text (jQuery, HTML docs): gzip level 5 (level 6 costs up to twice the CPU
// for 1-2% of size); brotli quality 5 with a 16-bit window: 5-10% smaller than gzip 5 at about
// its CPU cost, 1.0-1.8 MiB while a response streams (quality 4 was no smaller than gzip 5; a
// bigger window gains 1-2% for twice the memory). An operator short of memory picks brotli
// quality 1 (184 KiB, a little bigger than gzip 1) or leaves brotli out of `codings`.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/message.h"

namespace sluice::http {

enum class Coding : uint8_t { kIdentity, kGzip, kBrotli };

// "identity", "gzip", "br": the Content-Encoding token.
const char* codingToken(Coding coding);

// The coding for a response, from the request's Accept-Encoding lines (every line counts) and the
// codings the route allows in its order of preference: the allowed coding with the highest
// q-value above 0 (an explicit entry, else `*`), ties going to the route's order. "x-gzip" counts
// as gzip (RFC 9110 12.5.3). No Accept-Encoding line, an empty one, or nothing acceptable:
// kIdentity. (A client that refuses identity too, `identity;q=0` or `*;q=0`, still gets identity:
// sending what it may be able to read beats a 406.) Malformed elements are ignored.
Coding chooseCoding(const std::vector<Header>& request_headers, std::span<const Coding> allowed);

// What a route compresses. Built once from config; read per response.
struct CompressPolicy {
  std::vector<Coding> codings = {Coding::kBrotli, Coding::kGzip};  // preference order
  // Media types to compress: "type/subtype" exactly, or "type/*" (case-insensitive; parameters
  // such as charset do not matter).
  std::vector<std::string> types = defaultTypes();
  // Types never compressed even when `types` matches them: an event stream must reach the client
  // event by event, not when a compressor's buffer fills.
  std::vector<std::string> exclude_types = {"text/event-stream"};
  // A body whose Content-Length is below this is sent as is (compression would barely gain).
  uint64_t min_length = 256;

  static std::vector<std::string> defaultTypes();
};

// Why a response is not compressed (kNone: it may be).
enum class Skip : uint8_t {
  kNone,
  kMethod,       // HEAD: no body
  kStatus,       // 1xx, 204, 206, 304: no body, or a part of one
  kRange,        // Content-Range: ranges address the identity bytes
  kEncoded,      // already Content-Encoded
  kNoTransform,  // Cache-Control: no-transform (request or response)
  kType,         // no Content-Type, or not a compressible one
  kSmall,        // Content-Length below min_length
};
const char* skipName(Skip skip);

// Whether the response to `request` may be compressed under `policy`, whatever the client
// accepts. When it may (kNone) but chooseCoding() says identity, call addVaryAcceptEncoding():
// the representation still depends on Accept-Encoding, and caches must know.
Skip compressionSkip(const RequestHead& request, const ResponseHead& response,
                     const CompressPolicy& policy);

// True when the media type of a Content-Type value matches one of `patterns`.
bool typeMatches(std::string_view content_type, std::span<const std::string> patterns);

// Rewrites the head of a response whose body sluice encodes with `coding` (not kIdentity):
// Content-Encoding added, Content-Length dropped (the body goes chunked), Vary: Accept-Encoding
// added or extended, a strong ETag made weak (W/: the bytes differ from the backend's), and
// Accept-Ranges dropped (ranges would address the identity bytes).
void encodeResponseHead(ResponseHead* response, Coding coding);

// Adds Accept-Encoding to the response's Vary (extending the first Vary line, or adding one),
// unless it is there already or Vary is "*".
void addVaryAcceptEncoding(ResponseHead* response);

struct EncoderOptions {
  int gzip_level = 5;             // 1..9
  uint8_t gzip_window_bits = 15;  // 9..15
  uint8_t gzip_mem_level = 8;     // 1..9
  int brotli_quality = 5;         // 0..11
  int brotli_window_bits = 16;    // lgwin, 10..24
};

// A streaming compressor for one response body. Output is appended to the caller's string as
// the encoder produces it (an encoder may keep input back until flush() or finish()). Every call
// returns false when the encoder failed (out of memory, or used after finish()): the response
// cannot be completed and its connection must close.
class Encoder {
 public:
  virtual ~Encoder() = default;
  // Compresses `data`.
  virtual bool write(std::string_view data, std::string* out) = 0;
  // Puts out everything written so far, so that the client can decode it now (a streamed
  // response that waits for more from the backend).
  virtual bool flush(std::string* out) = 0;
  // Ends the stream (gzip's trailer, brotli's last block). Nothing may be written after.
  virtual bool finish(std::string* out) = 0;
  // Bytes the encoder's library holds now.
  virtual size_t memoryBytes() const = 0;
  virtual Coding coding() const = 0;
};

// A new encoder for `coding`; null for kIdentity or when the library cannot allocate its state.
std::unique_ptr<Encoder> makeEncoder(Coding coding, const EncoderOptions& options);

}  // namespace sluice::http
