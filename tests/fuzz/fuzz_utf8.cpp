// Differential fuzzing of the WebSocket UTF-8 validator: Utf8Validator fed in input-chosen
// slices and validUtf8() must agree with a plain byte-by-byte decoder written from RFC 3629
// (no overlong forms, no surrogates, nothing above U+10FFFF), and the streaming validator must
// fail exactly when the bytes so far can no longer begin a valid text.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/ws/codec.h"

namespace {

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

// True when s[0..n) is valid UTF-8 (complete == true), or could still become valid with more
// bytes (complete == false).
bool reference(const uint8_t* s, size_t n, bool complete) {
  size_t i = 0;
  while (i < n) {
    uint8_t b = s[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (b >= 0xC0 && b <= 0xDF) {
      len = 2;
      cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      cp = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF7) {
      len = 4;
      cp = b & 0x07;
    } else {
      return false;  // a continuation byte first, or 0xF8..0xFF
    }
    size_t have = 1;
    for (; have < len && i + have < n; ++have) {
      uint8_t c = s[i + have];
      if ((c & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (c & 0x3F);
    }
    // The code points this sequence can still become: missing bytes are 0x80..0xBF.
    uint32_t lo = cp;
    uint32_t hi = cp;
    for (size_t k = have; k < len; ++k) {
      lo = lo << 6;
      hi = (hi << 6) | 0x3F;
    }
    if (have < len && complete) {
      return false;
    }
    uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    uint32_t max = len == 2 ? 0x7FF : len == 3 ? 0xFFFF : 0x10FFFF;
    // Intersect [lo, hi] with [min, max] minus the surrogates D800..DFFF.
    uint32_t a = lo > min ? lo : min;
    uint32_t z = hi < max ? hi : max;
    bool possible = false;
    if (a <= z) {
      possible = a < 0xD800 || a > 0xDFFF || z > 0xDFFF;
    }
    if (!possible) {
      return false;
    }
    i += have;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  uint32_t rng = data[0] * 2654435761u + 1;
  const uint8_t* text = data + 1;
  size_t n = size - 1;
  bool valid = reference(text, n, true);
  check(sluice::ws::validUtf8(std::string_view(reinterpret_cast<const char*>(text), n)) == valid);

  // The shortest prefix that can no longer become valid (n + 1: none). Prefixes only get worse,
  // so a binary search over the plain reference finds it.
  size_t lo = 0;
  size_t hi = n + 1;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (reference(text, mid, false)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  const size_t first_bad = lo;

  sluice::ws::Utf8Validator v;
  size_t pos = 0;
  bool ok = true;
  while (pos < n) {
    rng = rng * 1103515245u + 12345u;
    size_t len = 1 + (rng >> 16) % 17;
    if (len > n - pos) {
      len = n - pos;
    }
    ok = v.feed(text + pos, len);
    pos += len;
    bool could_be = pos < first_bad;
    check(ok == could_be);
    check(v.failed() == !could_be);
    if (!ok) {
      break;
    }
  }
  check((ok && v.complete()) == valid);
  return 0;
}
