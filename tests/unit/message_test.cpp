#include "proxy/http/message.h"

#include <gtest/gtest.h>

namespace sluice::http {
namespace {

RequestHead request(std::vector<Header> headers) {
  RequestHead r;
  r.method = "POST";
  r.url = "/upload?x=1";
  r.headers = std::move(headers);
  return r;
}

bool hasLine(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

TEST(HeaderTokens, CommaListsCaseInsensitive) {
  EXPECT_TRUE(headerHasToken("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(headerHasToken(" close ", "close"));
  EXPECT_FALSE(headerHasToken("keep-alive", "alive"));
  EXPECT_FALSE(headerHasToken("", "close"));
}

TEST(HopByHop, FixedAndNamedByConnection) {
  EXPECT_TRUE(isHopByHop("Connection", ""));
  EXPECT_TRUE(isHopByHop("keep-alive", ""));
  EXPECT_TRUE(isHopByHop("TE", ""));
  EXPECT_TRUE(isHopByHop("Trailer", ""));
  EXPECT_TRUE(isHopByHop("Transfer-Encoding", ""));
  EXPECT_TRUE(isHopByHop("Upgrade", ""));
  EXPECT_TRUE(isHopByHop("Proxy-Authorization", ""));
  EXPECT_TRUE(isHopByHop("X-Secret", "close, x-secret"));
  EXPECT_FALSE(isHopByHop("X-Secret", "close"));
  EXPECT_FALSE(isHopByHop("Content-Type", ""));
}

TEST(UpstreamRequest, DropsHopByHopAndAddsForwarding) {
  RequestHead r = request({{"Host", "app.example.com"},
                           {"Connection", "keep-alive, X-Private"},
                           {"X-Private", "1"},
                           {"Keep-Alive", "timeout=5"},
                           {"TE", "trailers"},
                           {"Proxy-Authorization", "Basic x"},
                           {"Upgrade", "h2c"},
                           {"Expect", "100-continue"},
                           {"Content-Length", "5"},
                           {"X-Forwarded-For", "10.0.0.1"},
                           {"X-Forwarded-Proto", "https"},
                           {"Accept", "*/*"}});
  ForwardInfo info;
  info.client_ip = "192.0.2.7";
  info.proto = "http";
  info.request_id = "abc";
  std::string out;
  writeUpstreamRequest(r, info, Framing::kContentLength, &out);
  EXPECT_TRUE(out.starts_with("POST /upload?x=1 HTTP/1.1\r\n"));
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
  for (const char* gone : {"X-Private", "Keep-Alive", "TE:", "Proxy-Authorization", "Upgrade",
                           "Expect", "Connection"}) {
    EXPECT_EQ(out.find(gone), std::string::npos) << gone;
  }
  EXPECT_TRUE(hasLine(out, "Host: app.example.com"));
  EXPECT_TRUE(hasLine(out, "Content-Length: 5"));
  EXPECT_TRUE(hasLine(out, "Accept: */*"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-For: 10.0.0.1, 192.0.2.7"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-Proto: http"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-Host: app.example.com"));
  EXPECT_TRUE(hasLine(out, "X-Request-Id: abc"));
}

TEST(UpstreamRequest, KeepsRequestIdAndRechunks) {
  RequestHead r =
      request({{"Host", "h"}, {"Transfer-Encoding", "chunked"}, {"X-Request-Id", "mine"}});
  ForwardInfo info;
  info.client_ip = "127.0.0.1";
  info.proto = "https";
  info.request_id = "generated";
  std::string out;
  writeUpstreamRequest(r, info, Framing::kChunked, &out);
  EXPECT_TRUE(hasLine(out, "X-Request-Id: mine"));
  EXPECT_EQ(out.find("generated"), std::string::npos);
  EXPECT_TRUE(hasLine(out, "Transfer-Encoding: chunked"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-For: 127.0.0.1"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-Proto: https"));
}

TEST(UpstreamRequest, UpgradeKeepsCanonicalConnection) {
  RequestHead r = request({{"Host", "h"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  ForwardInfo info;
  info.client_ip = "127.0.0.1";
  info.proto = "http";
  info.upgrade = true;
  std::string out;
  writeUpstreamRequest(r, info, Framing::kNone, &out);
  EXPECT_TRUE(hasLine(out, "Connection: Upgrade"));
  EXPECT_TRUE(hasLine(out, "Upgrade: websocket"));
}

TEST(DownstreamResponse, FramingAndConnection) {
  ResponseHead h;
  h.status = 200;
  h.reason = "OK";
  h.headers = {{"Content-Type", "text/plain"},
               {"Transfer-Encoding", "chunked"},
               {"Connection", "keep-alive"},
               {"Keep-Alive", "timeout=5"}};
  std::string out;
  writeDownstreamResponse(h, Framing::kChunked, false, {}, &out);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(hasLine(out, "Transfer-Encoding: chunked"));
  EXPECT_TRUE(hasLine(out, "Connection: close"));
  EXPECT_EQ(out.find("Keep-Alive"), std::string::npos);
  EXPECT_EQ(out.find("keep-alive"), std::string::npos);

  ResponseHead head_resp;
  head_resp.status = 200;
  head_resp.headers = {{"Content-Length", "1234"}};
  out.clear();
  writeDownstreamResponse(head_resp, Framing::kNone, true, {}, &out);
  EXPECT_TRUE(hasLine(out, "Content-Length: 1234"));  // a HEAD answer keeps its length
  EXPECT_EQ(out.find("Connection"), std::string::npos);
}

TEST(LocalResponse, SmallHonestBody) {
  std::string out;
  writeLocalResponse(502, "cannot connect to backend", false, "Retry-After: 1\r\n", false, &out);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
  EXPECT_TRUE(hasLine(out, "Connection: close"));
  EXPECT_TRUE(hasLine(out, "Retry-After: 1"));
  std::string body = "502 Bad Gateway: cannot connect to backend\n";
  EXPECT_TRUE(out.ends_with("\r\n\r\n" + body));
  EXPECT_TRUE(hasLine(out, "Content-Length: " + std::to_string(body.size())));
}

}  // namespace
}  // namespace sluice::http
