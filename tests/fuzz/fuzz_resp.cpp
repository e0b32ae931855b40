// Fuzzes the RESP reply parser that reads what a Redis server sends: the input (the first byte
// chooses where it is split) must parse the same whole as in pieces, and the parser must refuse
// what it cannot bound rather than buffer it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "proxy/redis/resp.h"

namespace {

using sluice::filters::RedisReply;
using sluice::redis::ReplyParser;

// A canonical text of a reply, to compare two parses.
void render(const RedisReply& r, std::string* out) {
  out->push_back(static_cast<char>('0' + static_cast<int>(r.type)));
  out->append(std::to_string(r.integer)).append(":").append(std::to_string(r.str.size()));
  out->append(r.str).append("[");
  for (const RedisReply& e : r.elements) {
    render(e, out);
  }
  out->append("]");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  size_t split = data[0] % size;
  const char* in = reinterpret_cast<const char*>(data + 1);
  size_t n = size - 1;
  split = split > n ? n : split;

  ReplyParser whole;
  std::vector<RedisReply> a;
  bool ok_whole = whole.feed(in, n, &a);

  ReplyParser pieces;
  std::vector<RedisReply> b;
  bool ok_pieces = pieces.feed(in, split, &b) && pieces.feed(in + split, n - split, &b);

  if (ok_whole != ok_pieces) {
    __builtin_trap();  // splitting the input must not change whether it is RESP
  }
  if (ok_whole) {
    std::string ra, rb;
    for (const RedisReply& r : a) {
      render(r, &ra);
    }
    for (const RedisReply& r : b) {
      render(r, &rb);
    }
    if (ra != rb || whole.buffered() != pieces.buffered()) {
      __builtin_trap();
    }
  }
  return 0;
}
