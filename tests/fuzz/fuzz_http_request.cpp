// Fuzzes HTTP/1.1 request handling: llhttp (strict) plus sluice's own head checks, fed in
// input-chosen slices with pipelining (pause and resume after every request).

#include <cstddef>
#include <cstdint>
#include <string>

#include "proxy/http/request_parser.h"

namespace {

using sluice::http::RequestParser;

class Handler : public RequestParser::Handler {
 public:
  RequestParser::HeadAction onHead() override {
    const auto& h = parser->head();
    if (h.method.empty() || h.major != 1) {
      __builtin_trap();  // validated heads only
    }
    return (h.url.size() & 3) == 3 ? RequestParser::HeadAction::kPause
                                   : RequestParser::HeadAction::kContinue;
  }
  bool onBody(const char*, size_t len) override {
    body += len;
    return true;
  }
  void onMessageComplete() override {}
  RequestParser* parser = nullptr;
  size_t body = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  size_t step = 1 + data[0];
  uint64_t max_head = 64 + static_cast<uint64_t>(data[1]) * 64;
  std::string input(reinterpret_cast<const char*>(data + 2), size - 2);
  Handler h;
  RequestParser p(&h, max_head);
  h.parser = &p;
  std::string pending;
  size_t pos = 0;
  for (int guard = 0; guard < 100000 && (pos < input.size() || !pending.empty()); ++guard) {
    if (pending.empty()) {
      size_t n = std::min(step, input.size() - pos);
      pending = input.substr(pos, n);
      pos += n;
    }
    RequestParser::Result r = p.execute(pending.data(), pending.size());
    if (r.consumed > pending.size()) {
      __builtin_trap();
    }
    if (r.status == RequestParser::Status::kPaused) {
      pending.erase(0, r.consumed);
      p.resume();
      continue;
    }
    if (r.status != RequestParser::Status::kNeedMore) {
      if (r.status == RequestParser::Status::kError &&
          (r.error_status < 400 || r.error_status > 505)) {
        __builtin_trap();
      }
      break;
    }
    pending.clear();
  }
  return 0;
}
