#include "proxy/ws/codec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <memory>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <openssl/evp.h>
#include <openssl/sha.h>

namespace sluice::ws {

bool validCloseCode(uint16_t code) {
  if (code >= 1000 && code <= 1003) {
    return true;
  }
  if (code >= 1007 && code <= 1014) {
    return true;
  }
  return code >= 3000 && code <= 4999;
}

// ---- UTF-8 ---------------------------------------------------------------------------------
// State: bits 0-1 = continuation bytes still expected; bits 8-15 / 16-23 = the allowed range of
// the next continuation byte (narrower than 80..BF right after E0, ED, F0 and F4, which is what
// rules out overlong forms, surrogates and code points above U+10FFFF).

namespace {
constexpr uint32_t pack(uint32_t need, uint32_t lo, uint32_t hi) {
  return need | lo << 8 | hi << 16;
}

constexpr uint64_t kHighBits = 0x8080808080808080ull;

// The index of the first byte of p[0..len) with its top bit set (len when none): 32 bytes a step
// with SSE2 (part of x86-64, so no run-time check), then words, then bytes. Text is mostly ASCII,
// and this is where a validated message spends its time.
size_t asciiPrefix(const uint8_t* p, size_t len) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 32 <= len; i += 32) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 16));
    if (_mm_movemask_epi8(_mm_or_si128(a, b)) != 0) {
      break;  // the 16-byte step below finds the byte
    }
  }
  for (; i + 16 <= len; i += 16) {
    int bits = _mm_movemask_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
    if (bits != 0) {
      return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(bits)));
    }
  }
#endif
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if ((w & kHighBits) != 0) {
      break;
    }
  }
  while (i < len && p[i] < 0x80) {
    ++i;
  }
  return i;
}

// The four mask bytes as they fall on data starting at mask offset `offset`, as a 32-bit word
// in memory order: a rotation of the mask read as a word.
uint32_t rotatedMask(const uint8_t mask[4], size_t offset) {
  uint32_t m32;
  memcpy(&m32, mask, 4);
  unsigned shift = 8 * static_cast<unsigned>(offset & 3);
  if (shift == 0) {
    return m32;
  }
  if constexpr (std::endian::native == std::endian::little) {
    return m32 >> shift | m32 << (32 - shift);
  } else {
    return m32 << shift | m32 >> (32 - shift);
  }
}

// How many leading bytes of p[0..len) are known to be ASCII once unmasked with `mask` from mask
// offset `offset`: a multiple of 8, or len when all are. Reads only.
size_t maskedAsciiPrefix(const uint8_t* p, size_t len, const uint8_t mask[4], size_t offset) {
  size_t i = 0;
  uint32_t m32 = rotatedMask(mask, offset);
  uint64_t m64 = m32 | static_cast<uint64_t>(m32) << 32;
#if defined(__SSE2__)
  __m128i m = _mm_set1_epi32(static_cast<int>(m32));
  for (; i + 32 <= len; i += 32) {
    __m128i a = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)), m);
    __m128i b = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 16)), m);
    if (_mm_movemask_epi8(_mm_or_si128(a, b)) != 0) {
      break;
    }
  }
  for (; i + 16 <= len; i += 16) {
    __m128i a = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)), m);
    if (_mm_movemask_epi8(a) != 0) {
      return i;
    }
  }
#endif
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if (((w ^ m64) & kHighBits) != 0) {
      return i;
    }
  }
  for (size_t j = i; j < len; ++j) {
    if (((p[j] ^ mask[(offset + j) & 3]) & 0x80) != 0) {
      return i;
    }
  }
  return len;
}
}  // namespace

bool Utf8Validator::feed(const uint8_t* data, size_t len) {
  if (state_ == kReject) {
    return false;
  }
  uint32_t st = state_;
  size_t i = 0;
  while (i < len) {
    if (st == 0) {
      i += asciiPrefix(data + i, len - i);
      if (i >= len) {
        break;
      }
      uint8_t b = data[i++];
      if (b >= 0xC2 && b <= 0xDF) {
        st = pack(1, 0x80, 0xBF);
      } else if (b == 0xE0) {
        st = pack(2, 0xA0, 0xBF);
      } else if (b == 0xED) {
        st = pack(2, 0x80, 0x9F);
      } else if (b >= 0xE1 && b <= 0xEF) {
        st = pack(2, 0x80, 0xBF);
      } else if (b == 0xF0) {
        st = pack(3, 0x90, 0xBF);
      } else if (b >= 0xF1 && b <= 0xF3) {
        st = pack(3, 0x80, 0xBF);
      } else if (b == 0xF4) {
        st = pack(3, 0x80, 0x8F);
      } else {
        state_ = kReject;
        return false;
      }
    } else {
      uint8_t b = data[i++];
      uint32_t lo = (st >> 8) & 0xFF;
      uint32_t hi = (st >> 16) & 0xFF;
      if (b < lo || b > hi) {
        state_ = kReject;
        return false;
      }
      uint32_t need = (st & 3) - 1;
      st = need == 0 ? 0 : pack(need, 0x80, 0xBF);
    }
  }
  state_ = st;
  return true;
}

bool Utf8Validator::feedMasked(const uint8_t* data, size_t len, const uint8_t mask[4],
                               size_t offset) {
  if (state_ == kReject) {
    return false;
  }
  size_t i = state_ == 0 ? maskedAsciiPrefix(data, len, mask, offset) : 0;
  uint8_t chunk[2048];
  while (i < len) {
    size_t n = std::min(sizeof chunk, len - i);
    memcpy(chunk, data + i, n);
    applyMask(chunk, n, mask, offset + i);
    if (!feed(chunk, n)) {
      return false;
    }
    i += n;
  }
  return true;
}

bool validUtf8(std::string_view s) {
  Utf8Validator v;
  return v.feed(reinterpret_cast<const uint8_t*>(s.data()), s.size()) && v.complete();
}

// ---- masking -------------------------------------------------------------------------------

size_t applyMask(uint8_t* data, size_t len, const uint8_t mask[4], size_t offset) {
  size_t i = 0;
  offset &= 3;
  // The mask turned to the phase of data[0]; every step below is a multiple of 4 bytes long, so
  // the phase stays put.
  uint32_t m32 = rotatedMask(mask, offset);
  uint64_t m64 = m32 | static_cast<uint64_t>(m32) << 32;
#if defined(__SSE2__)
  __m128i m = _mm_set1_epi32(static_cast<int>(m32));
  for (; i + 32 <= len; i += 32) {
    auto* a = reinterpret_cast<__m128i*>(data + i);
    auto* b = reinterpret_cast<__m128i*>(data + i + 16);
    _mm_storeu_si128(a, _mm_xor_si128(_mm_loadu_si128(a), m));
    _mm_storeu_si128(b, _mm_xor_si128(_mm_loadu_si128(b), m));
  }
  if (i + 16 <= len) {
    auto* a = reinterpret_cast<__m128i*>(data + i);
    _mm_storeu_si128(a, _mm_xor_si128(_mm_loadu_si128(a), m));
    i += 16;
  }
#endif
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, data + i, 8);
    w ^= m64;
    memcpy(data + i, &w, 8);
  }
  for (; i < len; ++i) {
    data[i] ^= mask[(offset + i) & 3];
  }
  return (offset + len) & 3;
}

// ---- frame parser --------------------------------------------------------------------------

const char* frameErrorName(FrameError e) {
  switch (e) {
    case FrameError::kNone:
      return "none";
    case FrameError::kMaskRequired:
      return "client frame is not masked";
    case FrameError::kMaskForbidden:
      return "server frame is masked";
    case FrameError::kReservedBits:
      return "reserved bits set";
    case FrameError::kUnknownOpcode:
      return "unknown opcode";
    case FrameError::kControlTooLong:
      return "control frame longer than 125 bytes";
    case FrameError::kControlFragmented:
      return "fragmented control frame";
    case FrameError::kUnexpectedContinuation:
      return "continuation frame outside a fragmented message";
    case FrameError::kExpectedContinuation:
      return "new message inside a fragmented message";
    case FrameError::kLengthTooLarge:
      return "frame length too large";
  }
  return "?";
}

bool FrameParser::parseHeader(const uint8_t* p, size_t avail, size_t* used) {
  if (avail < 2) {
    return false;
  }
  FrameHeader& h = header_;
  h.fin = (p[0] & 0x80) != 0;
  h.rsv = static_cast<uint8_t>((p[0] >> 4) & 0x7);
  h.opcode = p[0] & 0x0F;
  h.masked = (p[1] & 0x80) != 0;
  uint8_t len7 = p[1] & 0x7F;
  size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (h.masked ? 4 : 0);
  if (avail < need) {
    return false;
  }
  size_t i = 2;
  if (len7 == 126) {
    h.length = static_cast<uint64_t>(p[2]) << 8 | p[3];
    i = 4;
  } else if (len7 == 127) {
    h.length = 0;
    for (int k = 0; k < 8; ++k) {
      h.length = h.length << 8 | p[2 + k];
    }
    i = 10;
  } else {
    h.length = len7;
  }
  if (h.masked) {
    memcpy(h.mask, p + i, 4);
    i += 4;
  } else {
    memset(h.mask, 0, 4);
  }
  h.header_size = static_cast<uint8_t>(i);
  *used = i;
  return true;
}

// Inlined into feed(): it runs for nearly every frame, and as a call it cost a third again.
[[gnu::always_inline]] inline bool FrameParser::parseCommonHeader(const uint8_t* p, size_t avail,
                                                                  size_t* used) {
  // The frame nearly every message is: FIN, no RSV bit, text or binary, a 7-bit length, masked
  // exactly when it must be, outside a fragmented message. Such a header is valid as it is, so
  // it skips parseHeader()'s general decoding and validate(): a good part of a small message's
  // cost. Anything else returns false and goes the general way.
  if (avail < 2 || in_message_) {
    return false;
  }
  uint8_t b0 = p[0];
  uint8_t b1 = p[1];
  bool masked = (b1 & 0x80) != 0;
  size_t size = masked ? 6 : 2;
  if ((b0 != (0x80 | kText) && b0 != (0x80 | kBinary)) || (b1 & 0x7F) >= 126 ||
      masked != from_client_ || avail < size) {
    return false;
  }
  FrameHeader& h = header_;
  h.fin = true;
  h.rsv = 0;
  h.opcode = b0 & 0x0F;
  h.masked = masked;
  h.length = b1 & 0x7F;
  if (masked) {
    memcpy(h.mask, p + 2, 4);
  } else {
    memset(h.mask, 0, 4);
  }
  h.header_size = static_cast<uint8_t>(size);
  *used = size;
  return true;
}

FrameError FrameParser::validate(const FrameHeader& h) {
  if (from_client_ && !h.masked) {
    return FrameError::kMaskRequired;
  }
  if (!from_client_ && h.masked) {
    return FrameError::kMaskForbidden;
  }
  if ((h.length >> 63) != 0) {
    return FrameError::kLengthTooLarge;
  }
  uint8_t allowed_rsv = allow_rsv1_ ? 0x4 : 0;
  if ((h.rsv & ~allowed_rsv) != 0) {
    return FrameError::kReservedBits;
  }
  switch (h.opcode) {
    case kContinuation:
      if (!in_message_) {
        return FrameError::kUnexpectedContinuation;
      }
      if (h.rsv != 0) {
        return FrameError::kReservedBits;  // RSV1 marks only a message's first frame
      }
      break;
    case kText:
    case kBinary:
      if (in_message_) {
        return FrameError::kExpectedContinuation;
      }
      break;
    case kClose:
    case kPing:
    case kPong:
      if (!h.fin) {
        return FrameError::kControlFragmented;
      }
      if (h.length > 125) {
        return FrameError::kControlTooLong;
      }
      if (h.rsv != 0) {
        return FrameError::kReservedBits;
      }
      break;
    default:
      return FrameError::kUnknownOpcode;
  }
  return FrameError::kNone;
}

size_t FrameParser::feed(const uint8_t* data, size_t len, Handler& handler) {
  size_t pos = 0;
  if (error_ != FrameError::kNone) {
    return 0;
  }
  while (pos < len) {
    if (!in_payload_) {
      const uint8_t* raw;
      size_t used = 0;
      bool valid = false;      // known valid without validate()
      bool contiguous = true;  // the header is in `data` (not spilled), the payload after it
      if (spill_len_ == 0) {
        valid = parseCommonHeader(data + pos, len - pos, &used);
        if (!valid && !parseHeader(data + pos, len - pos, &used)) {
          spill_len_ = static_cast<uint8_t>(len - pos);
          memcpy(spill_, data + pos, spill_len_);
          return len;
        }
        raw = data + pos;
        pos += used;
      } else {
        size_t old = spill_len_;
        size_t take = std::min(sizeof spill_ - old, len - pos);
        memcpy(spill_ + old, data + pos, take);
        if (!parseHeader(spill_, old + take, &used)) {
          spill_len_ = static_cast<uint8_t>(old + take);
          return len;
        }
        raw = spill_;
        contiguous = false;
        spill_len_ = 0;
        pos += used - old;
      }
      if (!valid) {
        error_ = validate(header_);
        if (error_ != FrameError::kNone) {
          return pos;
        }
      }
      if (!isControl(header_.opcode)) {
        if (header_.opcode != kContinuation) {
          message_opcode_ = header_.opcode;
        }
        in_message_ = !header_.fin;
      }
      payload_done_ = 0;
      if (contiguous && header_.length <= len - pos) {
        Handler::Whole whole = handler.onWholeFrame(header_, raw);
        if (whole != Handler::Whole::kDecline) {
          pos += static_cast<size_t>(header_.length);
          if (whole == Handler::Whole::kStop) {
            return pos;
          }
          continue;
        }
      }
      if (!handler.onFrameHeader(header_, raw)) {
        in_payload_ = header_.length > 0;
        return pos;
      }
      if (header_.length == 0) {
        if (!handler.onFrameEnd(header_)) {
          return pos;
        }
        continue;
      }
      in_payload_ = true;
    }
    uint64_t left = header_.length - payload_done_;
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, len - pos));
    uint64_t offset = payload_done_;
    payload_done_ += n;
    const uint8_t* chunk = data + pos;
    pos += n;
    bool done = payload_done_ == header_.length;
    if (done) {
      in_payload_ = false;
    }
    if (!handler.onFramePayload(header_, chunk, n, offset)) {
      return pos;
    }
    if (done && !handler.onFrameEnd(header_)) {
      return pos;
    }
  }
  return pos;
}

// ---- writers -------------------------------------------------------------------------------

void writeFrameHeader(std::string* out, bool fin, uint8_t opcode, uint64_t length,
                      const uint8_t* mask, uint8_t rsv) {
  uint8_t h[14];
  size_t n = 0;
  h[n++] = static_cast<uint8_t>((fin ? 0x80 : 0) | (rsv & 7) << 4 | (opcode & 0x0F));
  uint8_t m = mask != nullptr ? 0x80 : 0;
  if (length < 126) {
    h[n++] = static_cast<uint8_t>(m | length);
  } else if (length <= 0xFFFF) {
    h[n++] = m | 126;
    h[n++] = static_cast<uint8_t>(length >> 8);
    h[n++] = static_cast<uint8_t>(length);
  } else {
    h[n++] = m | 127;
    for (int k = 7; k >= 0; --k) {
      h[n++] = static_cast<uint8_t>(length >> (8 * k));
    }
  }
  if (mask != nullptr) {
    memcpy(h + n, mask, 4);
    n += 4;
  }
  out->append(reinterpret_cast<const char*>(h), n);
}

void writeControlFrame(std::string* out, uint8_t opcode, std::string_view payload,
                       const uint8_t* mask) {
  payload = payload.substr(0, 125);
  writeFrameHeader(out, true, opcode, payload.size(), mask);
  size_t start = out->size();
  out->append(payload);
  if (mask != nullptr) {
    applyMask(reinterpret_cast<uint8_t*>(out->data() + start), payload.size(), mask, 0);
  }
}

void writeCloseFrame(std::string* out, uint16_t code, std::string_view reason,
                     const uint8_t* mask) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  // Truncate the reason to fit, without cutting a UTF-8 sequence in half.
  reason = reason.substr(0, 123);
  while (!reason.empty() && !validUtf8(reason)) {
    reason.remove_suffix(1);
  }
  payload.append(reason);
  writeControlFrame(out, kClose, payload, mask);
}

std::string acceptKey(std::string_view key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  // One fetched SHA-1 and one context per thread: SHA1() fetches the algorithm from the provider
  // and allocates a context on every call, which cost more than the hashing itself.
  static EVP_MD* const sha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  thread_local std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                           &EVP_MD_CTX_free);
  unsigned char digest[SHA_DIGEST_LENGTH];
  unsigned int len = 0;
  if (sha1 == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), sha1, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), key.data(), key.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), kGuid.data(), kGuid.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1 || len != SHA_DIGEST_LENGTH) {
    return {};  // matches no Sec-WebSocket-Accept: the handshake fails
  }
  // Base64 of the 20 bytes by hand: EVP_EncodeBlock's general loop cost a tenth of the SHA-1.
  static constexpr char kBase64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char out[28];
  char* o = out;
  for (size_t i = 0; i < SHA_DIGEST_LENGTH; i += 3) {
    // The last group has two bytes: three characters and one "=".
    uint32_t v = uint32_t{digest[i]} << 16 | uint32_t{digest[i + 1]} << 8 |
                 (i + 2 < SHA_DIGEST_LENGTH ? digest[i + 2] : 0U);
    *o++ = kBase64[v >> 18];
    *o++ = kBase64[(v >> 12) & 63];
    *o++ = kBase64[(v >> 6) & 63];
    *o++ = i + 2 < SHA_DIGEST_LENGTH ? kBase64[v & 63] : '=';
  }
  return std::string(out, sizeof out);
}

bool validClientKey(std::string_view key) {
  if (key.size() != 24 || key[22] != '=' || key[23] != '=') {
    return false;
  }
  // One table lookup per character, where the ranges took up to eight compares.
  static constexpr std::array<bool, 256> kIsBase64 = [] {
    std::array<bool, 256> t{};
    for (char c :
         std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")) {
      t[static_cast<unsigned char>(c)] = true;
    }
    return t;
  }();
  bool ok = true;
  for (size_t i = 0; i < 22; ++i) {
    ok &= kIsBase64[static_cast<unsigned char>(key[i])];
  }
  return ok;
}

}  // namespace sluice::ws
