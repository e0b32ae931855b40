#include "filters/testing/test_filter.h"

#include <algorithm>

#include "filters/options.h"

namespace sluice::filters {

namespace {

class TestStream : public StreamFilter {
 public:
  explicit TestStream(const TestFilter& f) : f_(f), s_(f.settings()) {}
  ~TestStream() override { f_.destructed.inc(worker()); }

  Status onRequestHead(RequestHead& head) override {
    f_.made.inc(worker());
    if (!s_.reject_path.empty() && head.url.starts_with(s_.reject_path)) {
      callbacks().sendLocalReply(451, "rejected by the test filter");
      return Status::kStop;
    }
    if (!s_.request_header_name.empty()) {
      head.add(s_.request_header_name, s_.request_header_value);
    }
    if (s_.buffer_body) {
      head_ = &head;
      return Status::kStopAndBuffer;
    }
    if (s_.pause_head.count() > 0) {
      later(s_.pause_head, [this] { callbacks().resume(); });
      return Status::kStop;
    }
    return Status::kContinue;
  }

  Status onRequestBody(std::string_view data, bool end) override {
    if (head_ != nullptr && end) {
      head_->set("X-Body-Bytes", std::to_string(data.size()));
      head_ = nullptr;
    }
    return Status::kContinue;
  }

  Status onResponseHead(ResponseHead& head) override {
    if (!s_.response_header_name.empty()) {
      head.set(s_.response_header_name, s_.response_header_value);
    }
    if (s_.pause_response.count() > 0) {
      later(s_.pause_response, [this] { callbacks().resume(); });
      return Status::kStop;
    }
    return Status::kContinue;
  }

  Status onMessage(Message& m) override {
    std::string_view p = m.payload();
    if (!s_.close_containing.empty() && p.find(s_.close_containing) != std::string_view::npos) {
      callbacks().closeWebSocket(1008, "closed by the test filter");
      return Status::kStop;
    }
    if (!s_.drop_containing.empty() && p.find(s_.drop_containing) != std::string_view::npos) {
      callbacks().dropMessage("dropped by the test filter");
      return Status::kStop;
    }
    if (m.type() == MessageType::kText && s_.rewrite == "upper") {
      std::string& out = m.mutablePayload();
      std::transform(out.begin(), out.end(), out.begin(),
                     [](char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; });
    } else if (m.type() == MessageType::kText && s_.rewrite.starts_with("prefix:")) {
      m.mutablePayload().insert(0, s_.rewrite.substr(7));
    }
    if (s_.pause_message.count() > 0) {
      Direction d = m.direction();
      later(s_.pause_message,
            [this, d] { callbacks().resumeMessage(d, MessageVerdict::forward()); });
      return Status::kStop;
    }
    return Status::kContinue;
  }

  void onDestroy() override {
    f_.destroyed.inc(worker());
    timers_.clear();  // pending resumes are cancelled
  }

 private:
  unsigned worker() { return callbacks().dispatcher().workerId(); }
  template <typename F>
  void later(conf::Duration after, F f) {
    timers_.push_back(callbacks().dispatcher().createTimer(f));
    timers_.back()->arm(after);
  }

  const TestFilter& f_;  // kept alive by the stream's FilterManager
  const TestFilter::Settings& s_;
  RequestHead* head_ = nullptr;
  std::vector<std::unique_ptr<Timer>> timers_;
};

bool splitHeader(const std::string& line, std::string* name, std::string* value) {
  size_t colon = line.find(':');
  if (colon == std::string::npos || colon == 0) {
    return false;
  }
  *name = line.substr(0, colon);
  *value = line.substr(colon + 1);
  value->erase(0, value->find_first_not_of(' '));
  return true;
}

}  // namespace

TestFilter::TestFilter(std::string name, Settings settings)
    : Filter(std::move(name)), settings_(std::move(settings)) {}

uint8_t TestFilter::phases() const {
  return kRequestHead | kRequestBody | kResponseHead | kMessage;
}

std::unique_ptr<StreamFilter> TestFilter::create() const {
  return std::make_unique<TestStream>(*this);
}

void TestFilter::bindStats(Stats& stats) {
  Labels l{{"filter", name()}};
  made = stats.counter("sluice_filter_test_streams_total", "Streams the test filter judged.", l);
  destroyed = stats.counter("sluice_filter_test_destroy_calls_total",
                            "onDestroy calls on the test filter's instances.", l);
  destructed = stats.counter("sluice_filter_test_destructor_runs_total",
                             "Test filter instances destroyed.", l);
}

FilterPtr TestFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  Settings s;
  s.pause_head = o.duration("pause_head").value_or(conf::Duration{0});
  s.pause_response = o.duration("pause_response").value_or(conf::Duration{0});
  s.pause_message = o.duration("pause_message").value_or(conf::Duration{0});
  s.buffer_body = o.boolean("buffer_body").value_or(false);
  s.reject_path = o.string("reject_path").value_or("");
  s.rewrite = o.string("rewrite").value_or("");
  s.drop_containing = o.string("drop_containing").value_or("");
  s.close_containing = o.string("close_containing").value_or("");
  if (auto h = o.string("request_header");
      h && !splitHeader(*h, &s.request_header_name, &s.request_header_value)) {
    o.error("request_header", "'request_header' must be \"Name: value\"");
  }
  if (auto h = o.string("response_header");
      h && !splitHeader(*h, &s.response_header_name, &s.response_header_value)) {
    o.error("response_header", "'response_header' must be \"Name: value\"");
  }
  if (!s.rewrite.empty() && s.rewrite != "upper" && !s.rewrite.starts_with("prefix:")) {
    o.error("rewrite", "'rewrite' must be \"upper\" or \"prefix:TEXT\"");
  }
  o.finish();
  if (!o.ok()) {
    return nullptr;
  }
  return std::make_shared<TestFilter>(config.name, std::move(s));
}

}  // namespace sluice::filters
