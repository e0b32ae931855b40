// Fuzzes the PROXY protocol parser: the input fed whole and in input-chosen slices must give
// the same outcome, and a header never claims more bytes than it was given or than its version
// allows.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "proxy/net/proxy_protocol.h"

namespace {

using sluice::net::ProxyProtocolParser;
using Status = ProxyProtocolParser::Status;

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

struct Outcome {
  Status status = Status::kNeedMore;
  size_t consumed = 0;
  sluice::net::ProxyHeader header;
};

Outcome run(const std::string& input, size_t step, size_t max_v2) {
  ProxyProtocolParser p(max_v2);
  Outcome o;
  for (size_t pos = 0; pos < input.size();) {
    size_t n = step == 0 ? input.size() - pos : std::min(step, input.size() - pos);
    std::string piece = input.substr(pos, n);  // exact size, so ASan sees overreads
    ProxyProtocolParser::Result r = p.feed(piece.data(), piece.size());
    check(r.consumed <= n);
    o.consumed += r.consumed;
    o.status = r.status;
    if (r.status == Status::kError) {
      check(r.error != nullptr && r.error[0] != '\0');
      break;
    }
    if (r.status == Status::kDone) {
      break;
    }
    check(r.consumed == n);
    pos += n;
  }
  o.header = p.header();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  size_t step = 1 + data[0] % 32;
  size_t max_v2 = 16 + static_cast<size_t>(data[1]) * 8;
  std::string input(reinterpret_cast<const char*>(data + 2), size - 2);
  Outcome whole = run(input, 0, max_v2);
  Outcome split = run(input, step, max_v2);
  check(whole.status == split.status);
  if (whole.status != Status::kDone) {
    return 0;
  }
  const sluice::net::ProxyHeader& h = whole.header;
  check(whole.consumed == split.consumed && whole.consumed == h.length);
  check(split.header.family == h.family && split.header.local == h.local);
  check(memcmp(&split.header.source, &h.source, sizeof(h.source)) == 0);
  if (h.version == 1) {
    check(h.length <= ProxyProtocolParser::kMaxV1Bytes && input.compare(0, 6, "PROXY ") == 0);
    check(input[h.length - 1] == '\n' && input[h.length - 2] == '\r');
  } else {
    check(h.version == 2 && h.length >= 16 && h.length <= max_v2);
  }
  check(h.family == AF_UNSPEC || h.source.ss_family == h.family);
  return 0;
}
