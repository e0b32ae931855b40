#include "proxy/http/request_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice::http {
namespace {

// Drives a RequestParser like the connection does: pauses after each request and resumes.
class Recorder : public RequestParser::Handler {
 public:
  RequestParser::HeadAction onHead() override {
    heads.push_back(parser->head());
    return RequestParser::HeadAction::kContinue;
  }
  bool onBody(const char* data, size_t len) override {
    bodies.back().append(data, len);
    return true;
  }
  void onMessageBegin() override { bodies.emplace_back(); }
  void onMessageComplete() override { ++completed; }

  RequestParser* parser = nullptr;
  std::vector<RequestHead> heads;
  std::vector<std::string> bodies;
  int completed = 0;
};

struct Outcome {
  RequestParser::Status status;
  uint16_t error_status = 0;
  std::string reason;
};

// Feeds `input` in pieces of `step` bytes (0 = all at once), resuming after every request.
Outcome feed(RequestParser& p, const std::string& input, size_t step = 0) {
  std::string pending;
  size_t pos = 0;
  RequestParser::Result r{RequestParser::Status::kNeedMore, 0, 0, ""};
  while (pos < input.size() || !pending.empty()) {
    if (pending.empty()) {
      size_t n = step == 0 ? input.size() - pos : std::min(step, input.size() - pos);
      pending = input.substr(pos, n);
      pos += n;
    }
    r = p.execute(pending.data(), pending.size());
    if (r.status == RequestParser::Status::kPaused) {
      pending.erase(0, r.consumed);
      p.resume();
      continue;
    }
    if (r.status != RequestParser::Status::kNeedMore) {
      return {r.status, r.error_status, r.error_reason};
    }
    pending.clear();
  }
  return {RequestParser::Status::kNeedMore, 0, ""};
}

class RequestParserTest : public ::testing::Test {
 protected:
  Outcome run(const std::string& input, size_t step = 0, uint64_t max_head = 32 * 1024) {
    rec_ = std::make_unique<Recorder>();
    parser_ = std::make_unique<RequestParser>(rec_.get(), max_head);
    rec_->parser = parser_.get();
    return feed(*parser_, input, step);
  }
  std::unique_ptr<Recorder> rec_;
  std::unique_ptr<RequestParser> parser_;
};

TEST_F(RequestParserTest, PipelinedRequestsAtEverySplit) {
  std::string input = "GET /a HTTP/1.1\r\nHost: x\r\nX-Long: " + std::string(300, 'v') +
                      "\r\n\r\n"
                      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                      "PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                      "chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
  for (size_t step = 1; step <= input.size(); step += (step < 40 ? 1 : 37)) {
    Outcome o = run(input, step);
    ASSERT_EQ(o.status, RequestParser::Status::kNeedMore) << "step " << step << ": " << o.reason;
    ASSERT_EQ(rec_->completed, 3) << step;
    EXPECT_EQ(rec_->heads[0].url, "/a");
    EXPECT_EQ(rec_->heads[0].headers[1].value, std::string(300, 'v'));
    EXPECT_EQ(rec_->heads[1].method, "POST");
    EXPECT_EQ(rec_->bodies[1], "hello");
    EXPECT_EQ(rec_->bodies[2], "abcde");
  }
}

struct Vector {
  const char* name;
  std::string request;
  uint16_t status;
  bool in_body = false;  // the error is in the body: the head was fine and was handed out
};

TEST_F(RequestParserTest, SmugglingAndMalformedRequestsAreRejected) {
  const std::vector<Vector> vectors = {
      {"two Content-Length values",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
      {"duplicate equal Content-Length",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
      {"Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
       400},
      {"Content-Length with Transfer-Encoding",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       400},
      {"chunked not final",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
      {"identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400},
      {"two Transfer-Encoding headers",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       400},
      {"invalid chunk size",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, true},
      {"chunk data without CRLF (smuggling)",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\nGET "
       "/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
       400, true},
      {"chunk data with bare LF",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400,
       true},
      {"gzip, chunked",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
      {"obs-fold with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400},
      {"obs-fold after empty value", "GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n c\r\n\r\n", 400},
      {"bare LF in header", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400},
      {"bare CR in header", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
      {"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
      {"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       400},
      {"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
      {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},
      {"control character in value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n"),
       400},
  };
  for (const Vector& v : vectors) {
    for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) {
      Outcome o = run(v.request, step);
      EXPECT_EQ(o.status, RequestParser::Status::kError) << v.name << " step " << step;
      EXPECT_EQ(o.error_status, v.status) << v.name << " step " << step << ": " << o.reason;
      EXPECT_EQ(rec_->heads.size(), v.in_body ? 1u : 0u)
          << v.name << ": a rejected head must not reach the handler";
    }
  }
}

TEST_F(RequestParserTest, LegalVariantsAreAccepted) {
  for (const char* ok : {
           "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-B: b\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: a\r\nX-Empty: \r\n\r\n",
           "GET / HTTP/1.1\r\nHost: a\r\nX-Spaces:   padded   \r\n\r\n",
           "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
           "Chunked\r\n\r\n1;name=v\r\nx\r\n0\r\nTrailer: t\r\n\r\n",
       }) {
    for (size_t step : {size_t{0}, size_t{1}, size_t{3}}) {
      Outcome o = run(ok, step);
      EXPECT_EQ(o.status, RequestParser::Status::kNeedMore)
          << ok << " step " << step << ": " << o.reason;
      EXPECT_EQ(rec_->completed, 1) << ok;
    }
  }
}

TEST_F(RequestParserTest, HeadSizeLimit) {
  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(2000, 'a') + "\r\n\r\n";
  EXPECT_EQ(run(big, 0, 1024).error_status, 431);
  EXPECT_EQ(run(big, 100, 1024).error_status, 431);
  std::string long_url = "GET /" + std::string(2000, 'u') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  EXPECT_EQ(run(long_url, 0, 1024).error_status, 431);
  EXPECT_EQ(run(big, 0, 4096).status, RequestParser::Status::kNeedMore);
}

TEST_F(RequestParserTest, KeepAliveAndFraming) {
  run("GET / HTTP/1.0\r\n\r\n");
  EXPECT_FALSE(parser_->keepAlive());
  run("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_TRUE(parser_->keepAlive());
  run("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  EXPECT_FALSE(parser_->keepAlive());
  run("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
  EXPECT_TRUE(parser_->hasContentLength());
  EXPECT_FALSE(parser_->hasBody());
}

TEST_F(RequestParserTest, HandlerCanPauseAfterHead) {
  struct Pauser : Recorder {
    RequestParser::HeadAction onHead() override {
      Recorder::onHead();
      return RequestParser::HeadAction::kPause;
    }
  } rec;
  RequestParser p(&rec, 1024);
  rec.parser = &p;
  std::string in = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
  RequestParser::Result r = p.execute(in.data(), in.size());
  ASSERT_EQ(r.status, RequestParser::Status::kPaused);
  EXPECT_EQ(in.substr(r.consumed), "abc");  // the body is left for after the resume
  EXPECT_TRUE(rec.bodies.back().empty());
  p.resume();
  r = p.execute(in.data() + r.consumed, 3);
  EXPECT_EQ(r.status, RequestParser::Status::kPaused);  // paused after the complete request
  EXPECT_EQ(rec.bodies.back(), "abc");
  EXPECT_EQ(rec.completed, 1);
}

}  // namespace
}  // namespace sluice::http
