// The response parser: the framing sluice decides for a backend's answer, and which bytes belong
// to it.

#include "proxy/http/response_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice::http {
namespace {

struct Recorder : ResponseParser::Handler {
  void onInformational(const ResponseHead&) override {}
  bool onUpgrade(const ResponseHead&) override { return false; }
  bool onHead(const ResponseHead& h, BodyFraming f) override {
    status = h.status;
    framing = f;
    return true;
  }
  void onBody(const char* data, size_t len) override { body.append(data, len); }

  uint16_t status = 0;
  BodyFraming framing;
  std::string body;
};

struct Parsed {
  ResponseParser::Result result;
  Recorder rec;
};

Parsed parse(const std::string& bytes, bool head_request = false) {
  Parsed p;
  ResponseParser parser(&p.rec);
  parser.reset(head_request, false);
  p.result = parser.execute(bytes.data(), bytes.size());
  return p;
}

TEST(ResponseParser, ContentLengthBody) {
  Parsed p = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHelloNEXT");
  EXPECT_EQ(p.result.status, ResponseParser::Status::kComplete);
  EXPECT_EQ(p.rec.framing.kind, Framing::kContentLength);
  EXPECT_EQ(p.rec.framing.length, 5u);
  EXPECT_EQ(p.rec.body, "Hello");
  EXPECT_EQ(p.result.consumed, 43u);  // "NEXT" is not this response's
}

// A 204 or 304 has no body whatever it declares (RFC 9110 6.4.1), nor has the answer to a HEAD:
// the bytes after the head are not delivered as its body (the fuzzer found a 204 with a
// Content-Length whose "body" reached the handler while the framing said none).
TEST(ResponseParser, NoBodyAfter204And304OrForHeadWhateverTheHeadDeclares) {
  for (const char* status : {"204 No Content", "304 Not Modified"}) {
    for (const char* version : {"HTTP/1.0", "HTTP/1.1"}) {
      const std::string head =
          std::string(version) + " " + status + "\r\nContent-Length: 4\r\n\r\n";
      Parsed p = parse(head + "Hello");
      EXPECT_EQ(p.result.status, ResponseParser::Status::kComplete) << head;
      EXPECT_EQ(p.rec.framing.kind, Framing::kNone) << head;
      EXPECT_EQ(p.rec.body, "") << head;
      EXPECT_EQ(p.result.consumed, head.size()) << head;
    }
  }
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
  Parsed p = parse(head + "Hello", true);
  EXPECT_EQ(p.result.status, ResponseParser::Status::kComplete);
  EXPECT_EQ(p.rec.framing.kind, Framing::kNone);
  EXPECT_EQ(p.rec.body, "");
  EXPECT_EQ(p.result.consumed, head.size());
}

}  // namespace
}  // namespace sluice::http
