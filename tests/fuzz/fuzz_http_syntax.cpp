// Differential fuzzing of the strict HTTP/1.1 scanner: MessageSyntax::scan(), with its tight
// loops and one-comparison version, must give the same answers (bytes used, region ended, the
// refusal and its position, the chunk size) as the plain byte-at-a-time scanner it replaced,
// over input-chosen regions and slices.
//
// Input: one byte choosing the region (low two bits) and a seed for the slice sizes, then the
// bytes.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "proxy/http/syntax.h"
#include "tests/unit/support/plain_syntax.h"

namespace {

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  using sluice::http::MessageSyntax;
  const auto region = static_cast<MessageSyntax::Region>(data[0] & 3);
  uint32_t rng = data[0] * 2654435761u + 1;
  const char* text = reinterpret_cast<const char*>(data + 1);
  size_t n = size - 1;

  MessageSyntax fast;
  sluice::http::reference::PlainMessageSyntax plain;
  fast.begin(region);
  plain.begin(region);
  size_t pos = 0;
  while (pos < n) {
    rng = rng * 1103515245u + 12345u;
    size_t step = 1 + (rng >> 16) % (n - pos);
    MessageSyntax::Scan a = fast.scan(text + pos, step);
    MessageSyntax::Scan b = plain.scan(text + pos, step);
    check(a.used == b.used && a.done == b.done);
    check((a.error == nullptr) == (b.error == nullptr));
    if (a.error != nullptr) {
      check(std::strcmp(a.error, b.error) == 0);
      return 0;
    }
    if (a.done) {
      check(fast.chunkSize() == plain.chunkSize());
      fast.begin(region);  // the next region of the same kind: the next chunk line, say
      plain.begin(region);
    }
    pos += a.used;
  }
  return 0;
}
