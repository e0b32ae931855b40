// Differential fuzzing of the WebSocket codec's vectorized paths: Utf8Validator::feed() and
// feedMasked() over input-chosen slices of up to 300 bytes (long enough for the 16 and 32 byte
// steps) must agree, after every slice, with the same validator fed one byte at a time (which
// never takes those steps); applyMask() must equal a byte-by-byte XOR.
//
// Input: four mask bytes, one seed byte, then the text.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "proxy/ws/codec.h"

namespace {

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) {
    return 0;
  }
  const uint8_t* mask = data;
  uint32_t rng = data[4] * 2654435761u + 1;
  const uint8_t* text = data + 5;
  const size_t n = size - 5;
  const size_t start = data[4] & 3;  // the mask offset of the text's first byte

  std::vector<uint8_t> masked(text, text + n);
  size_t phase = sluice::ws::applyMask(masked.data(), n, mask, start);
  check(phase == ((start + n) & 3));
  for (size_t i = 0; i < n; ++i) {
    check(masked[i] == (text[i] ^ mask[(start + i) & 3]));
  }

  sluice::ws::Utf8Validator one;
  sluice::ws::Utf8Validator plain;
  sluice::ws::Utf8Validator unmasking;
  size_t pos = 0;
  while (pos < n) {
    rng = rng * 1103515245u + 12345u;
    size_t len = 1 + (rng >> 16) % 300;
    if (len > n - pos) {
      len = n - pos;
    }
    bool want = true;
    for (size_t i = 0; i < len; ++i) {
      want = one.feed(text + pos + i, 1);
    }
    check(plain.feed(text + pos, len) == want);
    check(unmasking.feedMasked(masked.data() + pos, len, mask, start + pos) == want);
    check(plain.complete() == one.complete() && unmasking.complete() == one.complete());
    check(plain.failed() == one.failed() && unmasking.failed() == one.failed());
    pos += len;
  }
  // feedMasked() leaves its input alone.
  std::vector<uint8_t> again(text, text + n);
  sluice::ws::applyMask(again.data(), n, mask, start);
  check(again == masked);
  return 0;
}
