// Fuzzes the response parser (what sluice reads from a backend), fed whole and in input-chosen
// slices: both must agree on the head, the framing sluice decides, the body, and whether the
// response is complete, refused or cut short; the framing decided must be one sluice can write
// (a Content-Length that matches the body delivered, chunked, close-delimited or none).

#include <cstddef>
#include <cstdint>
#include <string>

#include "proxy/http/response_parser.h"

namespace {

using sluice::http::BodyFraming;
using sluice::http::Framing;
using sluice::http::ResponseHead;
using sluice::http::ResponseParser;

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

struct Recorder : ResponseParser::Handler {
  std::string log;
  BodyFraming framing;
  uint64_t body = 0;
  bool head_seen = false;
  void onInformational(const ResponseHead& h) override {
    log += "1xx " + std::to_string(h.status) + "\n";
  }
  bool onUpgrade(const ResponseHead& h) override {
    log += "101\n";
    return h.find("upgrade") != nullptr;
  }
  bool onHead(const ResponseHead& h, BodyFraming f) override {
    check(!head_seen);
    head_seen = true;
    framing = f;
    log += std::to_string(h.status) + " " + std::to_string(static_cast<int>(f.kind)) + " " +
           std::to_string(f.length) + "\n";
    for (const auto& x : h.headers) {
      log += x.name + ":" + x.value + "\n";
    }
    return true;
  }
  void onBody(const char* data, size_t len) override {
    body += len;
    log.append(data, len);
  }
};

struct Run {
  Recorder rec;
  ResponseParser parser{&rec};
  ResponseParser::Status status = ResponseParser::Status::kNeedMore;
};

void feed(Run& r, const uint8_t* data, size_t len, bool head, bool upgrade) {
  r.parser.reset(head, upgrade);
  ResponseParser::Result res = r.parser.execute(reinterpret_cast<const char*>(data), len);
  r.status = res.status;
  check(res.consumed <= len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  const bool head = (data[0] & 1) != 0;
  const bool upgrade = (data[0] & 2) != 0;
  const size_t split = data[1];
  data += 2;
  size -= 2;
  Run whole;
  feed(whole, data, size, head, upgrade);
  Run parts;
  parts.parser.reset(head, upgrade);
  size_t cut = split < size ? split : size;
  ResponseParser::Result a = parts.parser.execute(reinterpret_cast<const char*>(data), cut);
  parts.status = a.status;
  if (a.status == ResponseParser::Status::kNeedMore && cut < size) {
    ResponseParser::Result b =
        parts.parser.execute(reinterpret_cast<const char*>(data + cut), size - cut);
    parts.status = b.status;
  }
  check(whole.status == parts.status);
  if (whole.status != ResponseParser::Status::kError) {
    check(whole.rec.log == parts.rec.log);
  }
  if (whole.status == ResponseParser::Status::kComplete && whole.rec.head_seen) {
    const BodyFraming f = whole.rec.framing;
    if (f.kind == Framing::kContentLength) {
      check(whole.rec.body == f.length);
    }
    if (f.kind == Framing::kNone) {
      check(whole.rec.body == 0);
    }
  }
  return 0;
}
