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
  const std::vector<Header> none;
  const ConnectionOptions no(none);
  EXPECT_TRUE(isHopByHop("Connection", no));
  EXPECT_TRUE(isHopByHop("keep-alive", no));
  EXPECT_TRUE(isHopByHop("TE", no));
  EXPECT_TRUE(isHopByHop("Trailer", no));
  EXPECT_TRUE(isHopByHop("Transfer-Encoding", no));
  EXPECT_TRUE(isHopByHop("Upgrade", no));
  EXPECT_TRUE(isHopByHop("Proxy-Authorization", no));
  EXPECT_FALSE(isHopByHop("Content-Type", no));
  const std::vector<Header> one = {{"Connection", "close, x-secret"}};
  EXPECT_TRUE(isHopByHop("X-Secret", ConnectionOptions(one)));
  const std::vector<Header> close = {{"Connection", "close"}};
  EXPECT_FALSE(isHopByHop("X-Secret", ConnectionOptions(close)));
}

TEST(HopByHop, EveryConnectionLineCounts) {
  // The second, sixth (past the inline lines) and a lower-case line all nominate.
  std::vector<Header> lines = {
      {"Connection", "keep-alive"}, {"X-A", "1"}, {"connection", "x-second"}};
  EXPECT_TRUE(ConnectionOptions(lines).has("X-Second"));
  EXPECT_FALSE(ConnectionOptions(lines).has("X-A"));
  for (int i = 0; i < 5; ++i) {
    lines.push_back({"Connection", "x-filler-" + std::to_string(i)});
  }
  lines.push_back({"CONNECTION", "x-last"});
  const ConnectionOptions many(lines);
  EXPECT_TRUE(many.has("x-second"));
  EXPECT_TRUE(many.has("x-filler-4"));
  EXPECT_TRUE(many.has("X-Last"));
  EXPECT_FALSE(many.has("x-a"));
  EXPECT_TRUE(headersHaveToken(lines, "connection", "x-last"));
  EXPECT_FALSE(headersHaveToken(lines, "connection", "upgrade"));
}

TEST(TransferEncoding, OnlyChunkedAlone) {
  EXPECT_TRUE(onlyChunked({{"Transfer-Encoding", "chunked"}}));
  EXPECT_TRUE(onlyChunked({{"transfer-encoding", " Chunked "}}));
  EXPECT_FALSE(onlyChunked({}));
  EXPECT_FALSE(onlyChunked({{"Transfer-Encoding", "gzip, chunked"}}));
  EXPECT_FALSE(onlyChunked({{"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}}));
  EXPECT_FALSE(onlyChunked({{"Transfer-Encoding", "identity"}}));
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
  info.x_forwarded_for = "192.0.2.7";
  info.x_forwarded_proto = "http";
  info.x_forwarded_host = "app.example.com";
  info.request_id = "abc";
  std::string out;
  writeUpstreamRequest(r, info, {Framing::kContentLength, 5}, &out);
  EXPECT_TRUE(out.starts_with("POST /upload?x=1 HTTP/1.1\r\n"));
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
  for (const char* gone : {"X-Private", "Keep-Alive", "TE:", "Proxy-Authorization", "Upgrade",
                           "Expect", "Connection"}) {
    EXPECT_EQ(out.find(gone), std::string::npos) << gone;
  }
  EXPECT_TRUE(hasLine(out, "Host: app.example.com"));
  EXPECT_TRUE(hasLine(out, "Content-Length: 5"));
  EXPECT_TRUE(hasLine(out, "Accept: */*"));
  // The client's own forwarding headers are replaced, never appended to.
  EXPECT_TRUE(hasLine(out, "X-Forwarded-For: 192.0.2.7"));
  EXPECT_EQ(out.find("10.0.0.1"), std::string::npos);
  EXPECT_EQ(out.find("https"), std::string::npos);
  EXPECT_TRUE(hasLine(out, "X-Forwarded-Proto: http"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-Host: app.example.com"));
  EXPECT_TRUE(hasLine(out, "X-Request-Id: abc"));
}

TEST(UpstreamRequest, KeepsRequestIdAndRechunks) {
  RequestHead r =
      request({{"Host", "h"}, {"Transfer-Encoding", "chunked"}, {"X-Request-Id", "mine"}});
  ForwardInfo info;
  info.x_forwarded_for = "127.0.0.1";
  info.x_forwarded_proto = "https";
  info.request_id = "generated";
  std::string out;
  writeUpstreamRequest(r, info, {Framing::kChunked}, &out);
  EXPECT_TRUE(hasLine(out, "X-Request-Id: mine"));
  EXPECT_EQ(out.find("generated"), std::string::npos);
  EXPECT_TRUE(hasLine(out, "Transfer-Encoding: chunked"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-For: 127.0.0.1"));
  EXPECT_TRUE(hasLine(out, "X-Forwarded-Proto: https"));
}

TEST(UpstreamRequest, ForwardedReplacesTheClients) {
  RequestHead r =
      request({{"Host", "h"}, {"Forwarded", "for=6.6.6.6"}, {"X-Forwarded-Host", "evil"}});
  ForwardInfo info;
  info.x_forwarded_for = "10.0.0.5, 192.0.2.7";
  info.x_forwarded_proto = "https";
  info.forwarded = "for=10.0.0.5, for=192.0.2.7;proto=https";
  std::string out;
  writeUpstreamRequest(r, info, {}, &out);
  EXPECT_TRUE(hasLine(out, "Forwarded: for=10.0.0.5, for=192.0.2.7;proto=https")) << out;
  EXPECT_TRUE(hasLine(out, "X-Forwarded-For: 10.0.0.5, 192.0.2.7")) << out;
  EXPECT_EQ(out.find("6.6.6.6"), std::string::npos) << out;
  EXPECT_EQ(out.find("evil"), std::string::npos) << out;
}

TEST(UpstreamRequest, UpgradeKeepsCanonicalConnection) {
  RequestHead r = request({{"Host", "h"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  ForwardInfo info;
  info.x_forwarded_for = "127.0.0.1";
  info.x_forwarded_proto = "http";
  info.upgrade = true;
  std::string out;
  writeUpstreamRequest(r, info, {}, &out);
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
  writeDownstreamResponse(h, {Framing::kChunked}, false, {}, &out);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(hasLine(out, "Transfer-Encoding: chunked"));
  EXPECT_TRUE(hasLine(out, "Connection: close"));
  EXPECT_EQ(out.find("Keep-Alive"), std::string::npos);
  EXPECT_EQ(out.find("keep-alive"), std::string::npos);

  ResponseHead head_resp;
  head_resp.status = 200;
  head_resp.headers = {{"Content-Length", "1234"}};
  out.clear();
  writeDownstreamResponse(head_resp, {}, true, {}, &out);
  EXPECT_TRUE(hasLine(out, "Content-Length: 1234"));  // a HEAD answer keeps its length
  EXPECT_EQ(out.find("Connection"), std::string::npos);
}

// The framing of what sluice forwards is its own: a Connection line nominating a framing header,
// Host or a handshake header removes nothing, and the received framing lines are never copied.
TEST(UpstreamRequest, ConnectionCannotRemoveFramingOrHost) {
  RequestHead r = request({{"Host", "app"},
                           {"Connection", "keep-alive"},
                           {"Connection", "content-length, host, x-request-id, transfer-encoding"},
                           {"Content-Length", "44"},
                           {"X-Request-Id", "rid"}});
  ForwardInfo info;
  info.x_forwarded_for = "192.0.2.7";
  info.x_forwarded_proto = "http";
  std::string out;
  writeUpstreamRequest(r, info, {Framing::kContentLength, 44}, &out);
  EXPECT_TRUE(hasLine(out, "Content-Length: 44")) << out;
  EXPECT_TRUE(hasLine(out, "Host: app")) << out;
  EXPECT_TRUE(hasLine(out, "X-Request-Id: rid")) << out;
  EXPECT_EQ(out.find("Transfer-Encoding"), std::string::npos) << out;

  // Chunked: the received Content-Length (refused by the parser, but were it there) and
  // Transfer-Encoding lines are not copied; sluice writes its own, once.
  r = request({{"Host", "app"}, {"Transfer-Encoding", "chunked"}, {"Content-Length", "3"}});
  out.clear();
  writeUpstreamRequest(r, info, {Framing::kChunked}, &out);
  EXPECT_EQ(out.find("Content-Length"), std::string::npos) << out;
  EXPECT_EQ(out.find("Transfer-Encoding"), out.rfind("Transfer-Encoding")) << out;
  EXPECT_TRUE(hasLine(out, "Transfer-Encoding: chunked")) << out;

  // A zero-length body keeps its explicit length; no body gets no framing header.
  out.clear();
  writeUpstreamRequest(request({{"Host", "app"}, {"Content-Length", "0"}}), info,
                       {Framing::kContentLength, 0}, &out);
  EXPECT_TRUE(hasLine(out, "Content-Length: 0")) << out;
  out.clear();
  writeUpstreamRequest(request({{"Host", "app"}}), info, {}, &out);
  EXPECT_EQ(out.find("Content-Length"), std::string::npos) << out;
}

TEST(UpstreamRequest, UpgradeKeepsHandshakeHeaders) {
  RequestHead r = request({{"Host", "h"},
                           {"Connection", "Upgrade, Sec-WebSocket-Key, sec-websocket-version"},
                           {"Upgrade", "websocket"},
                           {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                           {"Sec-WebSocket-Version", "13"},
                           {"Sec-WebSocket-Extensions", "permessage-deflate"}});
  ForwardInfo info;
  info.x_forwarded_for = "127.0.0.1";
  info.x_forwarded_proto = "http";
  info.upgrade = true;
  info.strip_ws_extensions = true;
  std::string out;
  writeUpstreamRequest(r, info, {}, &out);
  EXPECT_TRUE(hasLine(out, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")) << out;
  EXPECT_TRUE(hasLine(out, "Sec-WebSocket-Version: 13")) << out;
  EXPECT_EQ(out.find("Sec-WebSocket-Extensions"), std::string::npos) << out;
  EXPECT_TRUE(hasLine(out, "Connection: Upgrade")) << out;
}

TEST(DownstreamResponse, ConnectionCannotRemoveFraming) {
  ResponseHead h;
  h.status = 200;
  h.headers = {{"Connection", "content-length"}, {"Content-Length", "5"}, {"X-A", "1"}};
  std::string out;
  writeDownstreamResponse(h, {Framing::kContentLength, 5}, true, {}, &out);
  EXPECT_TRUE(hasLine(out, "Content-Length: 5")) << out;
  EXPECT_EQ(out.find("Content-Length"), out.rfind("Content-Length")) << out;

  // The length sluice parsed is what it writes, whatever the lines said.
  h.headers = {{"Content-Length", "0005"}};
  out.clear();
  writeDownstreamResponse(h, {Framing::kContentLength, 5}, true, {}, &out);
  EXPECT_TRUE(hasLine(out, "Content-Length: 5")) << out;

  h.headers = {{"Connection", "transfer-encoding"}, {"Transfer-Encoding", "chunked"}};
  out.clear();
  writeDownstreamResponse(h, {Framing::kChunked}, true, {}, &out);
  EXPECT_TRUE(hasLine(out, "Transfer-Encoding: chunked")) << out;

  ResponseHead up;
  up.status = 101;
  up.headers = {{"Connection", "upgrade, sec-websocket-accept"},
                {"Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}};
  out.clear();
  writeDownstreamResponse(up, {}, true, "Upgrade: websocket\r\nConnection: Upgrade\r\n", &out);
  EXPECT_TRUE(hasLine(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) << out;
}

// The heads are written in place into a buffer that may already hold bytes (pipelined replies,
// a request queued behind another): they go after those bytes, and the buffer ends where the
// head ends.
TEST(DownstreamResponse, AppendsAfterWhatTheBufferHolds) {
  ResponseHead h;
  h.status = 431;  // no reason received: the phrase sluice knows, longer than most
  h.headers = {{"Server", std::string(3000, 's')}, {"X-Empty", ""}};
  std::string out = "previous bytes";
  writeDownstreamResponse(h, {Framing::kContentLength, 7}, false, "X-Extra: 1\r\n", &out);
  EXPECT_EQ(out, "previous bytesHTTP/1.1 431 Request Header Fields Too Large\r\nServer: " +
                     std::string(3000, 's') +
                     "\r\nX-Empty: \r\nX-Extra: 1\r\nContent-Length: 7\r\n"
                     "Connection: close\r\n\r\n");

  RequestHead r = request({{"Host", "a"}, {"Connection", "close"}});
  ForwardInfo info;
  info.request_id = "id-1";
  writeUpstreamRequest(r, info, {Framing::kChunked}, &out);
  EXPECT_TRUE(
      out.ends_with("\r\n\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: id-1\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"))
      << out;
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
