// Differential fuzzing of request parsing over read boundaries: the same bytes fed whole and in
// input-chosen slices must give the same requests (heads, bodies, completions) and must be
// refused or accepted alike. Only the status of a refusal may differ: which check fires first
// (a syntax error or the head size limit, say) can depend on where a read ends.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "proxy/http/request_parser.h"

namespace {

using sluice::http::RequestParser;

void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

class Recorder : public RequestParser::Handler {
 public:
  RequestParser::HeadAction onHead() override {
    const auto& h = parser->head();
    std::string s = h.method + " " + h.url + "\n";
    for (const auto& header : h.headers) {
      s += header.name + ": " + header.value + "\n";
    }
    log.push_back(std::move(s));
    return RequestParser::HeadAction::kContinue;
  }
  bool onBody(const char* data, size_t len) override {
    body.append(data, len);
    return true;
  }
  void onMessageComplete() override {
    log.push_back("body " + body);
    body.clear();
  }
  RequestParser* parser = nullptr;
  std::vector<std::string> log;
  std::string body;
};

struct Outcome {
  std::vector<std::string> log;
  std::string body;  // of a request not complete (yet)
  RequestParser::Status status = RequestParser::Status::kNeedMore;
};

Outcome run(const std::string& input, size_t step, uint64_t max_head) {
  Recorder rec;
  RequestParser p(&rec, max_head);
  rec.parser = &p;
  Outcome o;
  std::string pending;
  size_t pos = 0;
  for (int guard = 0; guard < 100000 && (pos < input.size() || !pending.empty()); ++guard) {
    if (pending.empty()) {
      size_t n = std::min(step, input.size() - pos);
      pending = input.substr(pos, n);
      pos += n;
    }
    RequestParser::Result r = p.execute(pending.data(), pending.size());
    if (r.status == RequestParser::Status::kPaused) {
      pending.erase(0, r.consumed);
      p.resume();
      continue;
    }
    if (r.status != RequestParser::Status::kNeedMore) {
      o.status = r.status;
      break;
    }
    pending.clear();
  }
  o.log = std::move(rec.log);
  o.body = std::move(rec.body);
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  size_t step = 1 + data[0] % 64;
  uint64_t max_head = 64 + static_cast<uint64_t>(data[1]) * 64;
  std::string input(reinterpret_cast<const char*>(data + 2), size - 2);
  Outcome whole = run(input, input.size() + 1, max_head);
  Outcome split = run(input, step, max_head);
  check(whole.status == split.status);
  check(whole.log == split.log);
  check(whole.body == split.body);
  return 0;
}
