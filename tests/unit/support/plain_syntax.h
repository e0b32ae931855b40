#pragma once

// MessageSyntax::scan as it was written first: one byte per step through the state machine.
// Kept for the tests only, as the reference the faster scanner must agree with byte for byte
// (the same verdicts, at the same positions, at every split of the input).

#include "proxy/http/syntax.h"

namespace sluice::http::reference {

inline bool plainFieldValueChar(unsigned char c) {
  return (chars::kTable[c] & (chars::kVchar | chars::kObsText)) != 0 || c == ' ' || c == '\t';
}

class PlainMessageSyntax {
 public:
  using Scan = MessageSyntax::Scan;

  PlainMessageSyntax() { begin(MessageSyntax::Region::kHead); }
  void begin(MessageSyntax::Region region);
  Scan scan(const char* data, size_t len);
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

inline void PlainMessageSyntax::begin(MessageSyntax::Region region) {
  switch (region) {
    case MessageSyntax::Region::kHead:
      state_ = kRequestStart;
      version_pos_ = 0;
      break;
    case MessageSyntax::Region::kChunkLine:
      state_ = kSizeStart;
      line_bytes_ = 0;
      chunk_size_ = 0;
      break;
    case MessageSyntax::Region::kChunkDataEnd:
      state_ = kDataCr;
      break;
    case MessageSyntax::Region::kTrailers:
      state_ = kFieldStart;
      break;
  }
}

inline MessageSyntax::Scan PlainMessageSyntax::scan(const char* data, size_t len) {
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  size_t i = 0;
  auto fail = [&](const char* why) { return Scan{i, false, why}; };
  const bool chunk_line = state_ >= kSizeStart && state_ <= kChunkLf;
  for (; i < len; ++i) {
    unsigned char c = p[i];
    switch (state_) {
      case kRequestStart:
        // RFC 9112 2.2: empty lines before the request line are ignored (a client may send
        // one after a body), but each must be a real CRLF.
        if (c == '\r') {
          state_ = kLeadingLf;
        } else if (isTchar(c)) {
          state_ = kMethod;
        } else {
          return fail("invalid character in method");
        }
        break;
      case kLeadingLf:
        if (c != '\n') {
          return fail("bare CR before the request line");
        }
        state_ = kRequestStart;
        break;
      case kMethod:
        if (c == ' ') {
          state_ = kTargetStart;
        } else if (!isTchar(c)) {
          return fail("invalid character in method");
        }
        break;
      case kTargetStart:
      case kTarget:
        // Visible ASCII only: no CTL, no tab, no DEL and no obs-text (RFC 3986 has none of
        // them; a raw non-ASCII byte means different things to different parsers).
        while (i < len && isVchar(p[i])) {
          ++i;
          state_ = kTarget;
        }
        if (i == len) {
          return {len, false, nullptr};
        }
        if (p[i] != ' ' || state_ == kTargetStart) {
          return fail("invalid character in request-target");
        }
        state_ = kVersion;
        version_pos_ = 0;
        break;
      case kVersion: {
        static constexpr char kPattern[] = "HTTP/0.0";
        if (version_pos_ == 8) {
          if (c != '\r') {
            return fail("invalid HTTP version");
          }
          state_ = kRequestLineLf;
          break;
        }
        char want = kPattern[version_pos_];
        bool ok = want == '0' ? (c >= '0' && c <= '9') : c == static_cast<unsigned char>(want);
        if (!ok) {
          return fail("invalid HTTP version");
        }
        ++version_pos_;
        break;
      }
      case kRequestLineLf:
      case kFieldLf:
        if (c != '\n') {
          return fail("bare CR in request head");
        }
        state_ = kFieldStart;
        break;
      case kFieldStart:
        if (c == '\r') {
          state_ = kEndLf;
        } else if (isTchar(c)) {
          state_ = kFieldName;
        } else if (c == ' ' || c == '\t') {
          return fail("obsolete line folding in header");
        } else if (c == ':') {
          return fail("empty header name");
        } else if (c == '\n') {
          return fail("bare LF in request head");
        } else {
          return fail("invalid character in header name");
        }
        break;
      case kFieldName:
        if (c == ':') {
          state_ = kFieldValue;
        } else if (c == ' ' || c == '\t') {
          return fail("whitespace in or after header name");
        } else if (!isTchar(c)) {
          return fail("invalid character in header name");
        }
        break;
      case kFieldValue:
        while (i < len && plainFieldValueChar(p[i])) {
          ++i;
        }
        if (i == len) {
          return {len, false, nullptr};
        }
        if (p[i] == '\r') {
          state_ = kFieldLf;
        } else if (p[i] == '\n') {
          return fail("bare LF in request head");
        } else {
          return fail("invalid character in header value");
        }
        break;
      case kEndLf:
        if (c != '\n') {
          return fail("bare CR in request head");
        }
        state_ = kDone;
        return {i + 1, true, nullptr};

      // chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 7.1);
      // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
      case kSizeStart:
      case kSize:
        if (isHexDigit(c)) {
          if (chunk_size_ > (UINT64_MAX >> 4)) {
            return fail("chunk size too large");
          }
          unsigned d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
          chunk_size_ = (chunk_size_ << 4) | d;
          state_ = kSize;
        } else if (state_ == kSize && c == '\r') {
          state_ = kChunkLf;
        } else if (state_ == kSize && c == ';') {
          state_ = kExtNameStart;
        } else if (state_ == kSize && (c == ' ' || c == '\t')) {
          state_ = kSizeWs;
          after_name_ = false;
        } else {
          return fail("invalid chunk size");
        }
        break;
      case kSizeWs:
        if (c == ';') {
          state_ = kExtNameStart;
        } else if (c == '=' && after_name_) {
          state_ = kExtValueStart;
        } else if (c != ' ' && c != '\t') {
          return fail("invalid chunk extension");
        }
        break;
      case kExtNameStart:
        if (isTchar(c)) {
          state_ = kExtName;
        } else if (c != ' ' && c != '\t') {
          return fail("invalid chunk extension");
        }
        break;
      case kExtName:
        if (c == '=') {
          state_ = kExtValueStart;
        } else if (c == ';') {
          state_ = kExtNameStart;
        } else if (c == '\r') {
          state_ = kChunkLf;
        } else if (c == ' ' || c == '\t') {
          state_ = kSizeWs;
          after_name_ = true;
        } else if (!isTchar(c)) {
          return fail("invalid chunk extension");
        }
        break;
      case kExtValueStart:
        if (c == '"') {
          state_ = kExtQuoted;
        } else if (isTchar(c)) {
          state_ = kExtToken;
        } else if (c != ' ' && c != '\t') {
          return fail("invalid chunk extension");
        }
        break;
      case kExtToken:
      case kExtAfterQuoted:
        if (c == ';') {
          state_ = kExtNameStart;
        } else if (c == '\r') {
          state_ = kChunkLf;
        } else if (c == ' ' || c == '\t') {
          state_ = kSizeWs;
          after_name_ = false;
        } else if (state_ == kExtAfterQuoted || !isTchar(c)) {
          return fail("invalid chunk extension");
        }
        break;
      case kExtQuoted:
        if (c == '"') {
          state_ = kExtAfterQuoted;
        } else if (c == '\\') {
          state_ = kExtQuotedPair;
        } else if ((chars::kTable[c] & chars::kQdText) == 0) {
          return fail("invalid chunk extension");
        }
        break;
      case kExtQuotedPair:
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        if (!plainFieldValueChar(c)) {
          return fail("invalid chunk extension");
        }
        state_ = kExtQuoted;
        break;
      case kChunkLf:
        if (c != '\n') {
          return fail("bare CR in chunk line");
        }
        state_ = kDone;
        return {i + 1, true, nullptr};

      case kDataCr:
        if (c != '\r') {
          return fail("chunk data not followed by CRLF");
        }
        state_ = kDataLf;
        break;
      case kDataLf:
        if (c != '\n') {
          return fail("chunk data not followed by CRLF");
        }
        state_ = kDone;
        return {i + 1, true, nullptr};

      case kDone:
        return fail("data after the end of a region");
    }
    // The size and the extensions count; the CRLF does not.
    if (chunk_line && state_ != kChunkLf && ++line_bytes_ > MessageSyntax::kMaxChunkLineBytes) {
      return fail("chunk line too long");
    }
  }
  return {len, false, nullptr};
}

}  // namespace sluice::http::reference
