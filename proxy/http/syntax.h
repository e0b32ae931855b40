#pragma once

// The byte-level grammar of an HTTP/1.1 request (RFC 9112 2.2, 3, 5, 7.1): request line,
// field lines, chunk lines and the CRLF after chunk data. llhttp decides the framing; this
// scanner refuses everything the grammar does not allow, before llhttp (or anything after it)
// sees the bytes. llhttp's loose mode accepts an empty header name, a bare CR ending a head,
// tabs in the request-target and more: a backend behind sluice must never see those.
// Pure code over byte slices, resumable at any byte.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::http {

namespace chars {
enum : uint8_t {
  kTchar = 1,    // token characters (RFC 9110 5.6.2)
  kVchar = 2,    // visible ASCII, 0x21-0x7E
  kObsText = 4,  // 0x80-0xFF
  kHexDig = 8,
  kQdText = 16,      // quoted-string text without the backslash (RFC 9110 5.6.4)
  kFieldVchar = 32,  // a byte of a field value: VCHAR, obs-text, SP or HTAB (RFC 9110 5.5)
};

constexpr std::array<uint8_t, 256> buildTable() {
  std::array<uint8_t, 256> t{};
  for (int c = 0x21; c <= 0x7E; ++c) {
    t[c] |= kVchar;
    if (c != '"' && c != '\\') {
      t[c] |= kQdText;
    }
  }
  for (int c = 0x80; c <= 0xFF; ++c) {
    t[c] |= kObsText | kQdText;
  }
  t[' '] |= kQdText;
  t['\t'] |= kQdText;
  for (int c = 0; c < 256; ++c) {
    if ((t[c] & (kVchar | kObsText)) != 0 || c == ' ' || c == '\t') {
      t[c] |= kFieldVchar;
    }
  }
  for (int c = '0'; c <= '9'; ++c) {
    t[c] |= kTchar | kHexDig;
  }
  for (int c = 'a'; c <= 'z'; ++c) {
    t[c] |= kTchar;
    t[c - 'a' + 'A'] |= kTchar;
  }
  for (int c = 'a'; c <= 'f'; ++c) {
    t[c] |= kHexDig;
    t[c - 'a' + 'A'] |= kHexDig;
  }
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) {
    t[static_cast<uint8_t>(c)] |= kTchar;
  }
  return t;
}
inline constexpr std::array<uint8_t, 256> kTable = buildTable();
}  // namespace chars

inline bool isTchar(unsigned char c) {
  return (chars::kTable[c] & chars::kTchar) != 0;
}
inline bool isVchar(unsigned char c) {
  return (chars::kTable[c] & chars::kVchar) != 0;
}
inline bool isHexDigit(unsigned char c) {
  return (chars::kTable[c] & chars::kHexDig) != 0;
}
// A byte of a field value: VCHAR, obs-text, SP or HTAB (RFC 9110 5.5).
inline bool isFieldValueChar(unsigned char c) {
  return (chars::kTable[c] & chars::kFieldVchar) != 0;  // one lookup: values are most of a head
}

class MessageSyntax {
 public:
  // A chunk line (size and extensions, without the CRLF) longer than this is refused:
  // extensions are not forwarded, so there is no reason to read kilobytes of them.
  static constexpr size_t kMaxChunkLineBytes = 4096;

  enum class Region : uint8_t {
    kHead,          // optional empty lines, request line, field lines, the empty line
    kChunkLine,     // chunk-size [chunk-ext] CRLF
    kChunkDataEnd,  // the CRLF after a chunk's data
    kTrailers,      // field lines and the empty line after the last chunk
  };

  struct Scan {
    size_t used;        // bytes that belong to the region (up to and including its last byte)
    bool done;          // the region ended at data[used - 1]
    const char* error;  // null, or why data[used] breaks the grammar
  };

  MessageSyntax() { begin(Region::kHead); }

  void begin(Region region);
  Scan scan(const char* data, size_t len);
  // The size of the chunk line just scanned.
  uint64_t chunkSize() const { return chunk_size_; }

 private:
  enum State : uint8_t {
    kRequestStart,
    kLeadingLf,
    kMethod,
    kTargetStart,
    kTarget,
    kVersion,
    kRequestLineLf,
    kFieldStart,
    kFieldName,
    kFieldValue,
    kFieldLf,
    kEndLf,
    kSizeStart,
    kSize,
    kSizeWs,  // BWS after the size, a value or a name: only ";" or "=" may follow
    kExtNameStart,
    kExtName,
    kExtValueStart,
    kExtToken,
    kExtQuoted,
    kExtQuotedPair,
    kExtAfterQuoted,
    kChunkLf,
    kDataCr,
    kDataLf,
    kDone,
  };

  State state_ = kRequestStart;
  bool after_name_ = false;  // kSizeWs: after an extension name, where "=" may follow
  uint8_t version_pos_ = 0;  // bytes of "HTTP/x.y" seen
  size_t line_bytes_ = 0;    // bytes of the current chunk line
  uint64_t chunk_size_ = 0;
};

}  // namespace sluice::http
