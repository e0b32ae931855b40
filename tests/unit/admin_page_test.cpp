#include "proxy/admin_page.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proxy/admin.h"
#include "proxy/log.h"
#include "proxy/metrics.h"

namespace sluice {
namespace {

http::RequestHead upgradeRequest() {
  http::RequestHead r;
  r.method = "GET";
  r.url = "/api/live";
  r.headers = {{"Host", "127.0.0.1:9901"},
               {"Upgrade", "websocket"},
               {"Connection", "keep-alive, Upgrade"},
               {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
               {"Sec-WebSocket-Version", "13"}};
  return r;
}

void setHeader(http::RequestHead* r, std::string_view name, const std::string& value) {
  for (http::Header& h : r->headers) {
    if (http::iequals(h.name, name)) {
      h.value = value;
    }
  }
}

TEST(AdminPageHandshake, AcceptsAValidUpgrade) {
  AdminResponse r = AdminServer::liveHandshake(upgradeRequest(), "");
  EXPECT_EQ(r.status, 101);
  EXPECT_TRUE(r.live);
  // The example of RFC 6455 1.3.
  EXPECT_EQ(r.headers, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
}

TEST(AdminPageHandshake, EchoesTheProtocolAskedFor) {
  AdminResponse r = AdminServer::liveHandshake(upgradeRequest(), kLiveProtocol);
  EXPECT_EQ(r.status, 101);
  EXPECT_NE(r.headers.find("Sec-WebSocket-Protocol: sluice-live\r\n"), std::string::npos);
}

TEST(AdminPageHandshake, RefusesBadRequests) {
  struct Case {
    const char* what;
    std::function<void(http::RequestHead*)> spoil;
    uint16_t status;
  };
  std::vector<Case> cases = {
      {"POST", [](http::RequestHead* r) { r->method = "POST"; }, 400},
      {"HTTP/1.0", [](http::RequestHead* r) { r->minor = 0; }, 400},
      {"no Upgrade", [](http::RequestHead* r) { setHeader(r, "upgrade", "h2c"); }, 400},
      {"no Connection: Upgrade",
       [](http::RequestHead* r) { setHeader(r, "connection", "keep-alive"); }, 400},
      {"short key", [](http::RequestHead* r) { setHeader(r, "sec-websocket-key", "abcd"); }, 400},
      {"two keys",
       [](http::RequestHead* r) {
         r->headers.push_back({"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="});
       },
       400},
      {"version 8", [](http::RequestHead* r) { setHeader(r, "sec-websocket-version", "8"); }, 426},
  };
  for (const Case& c : cases) {
    http::RequestHead req = upgradeRequest();
    c.spoil(&req);
    AdminResponse r = AdminServer::liveHandshake(req, kLiveProtocol);
    EXPECT_EQ(r.status, c.status) << c.what;
    EXPECT_FALSE(r.live) << c.what;
    EXPECT_FALSE(r.body.empty()) << c.what;
  }
}

TEST(AdminPageHandshake, ReadsTheTokenOfferedAsASubprotocol) {
  http::RequestHead req = upgradeRequest();
  EXPECT_EQ(liveOfferedToken(req), "");
  EXPECT_FALSE(liveProtocolOffered(req));
  req.headers.push_back({"Sec-WebSocket-Protocol", "sluice-live, bearer.s3cr3t"});
  EXPECT_EQ(liveOfferedToken(req), "s3cr3t");
  EXPECT_TRUE(liveProtocolOffered(req));
  http::RequestHead other = upgradeRequest();
  other.headers.push_back({"Sec-WebSocket-Protocol", "chat,bearer."});
  other.headers.push_back({"Sec-WebSocket-Protocol", " sluice-live "});
  EXPECT_EQ(liveOfferedToken(other), "");  // "bearer." with nothing after it is no token
  EXPECT_TRUE(liveProtocolOffered(other));
}

TEST(AdminPageAssets, ServesThePageItsScriptAndStyle) {
  const AdminAsset* page = findAdminAsset("/");
  ASSERT_NE(page, nullptr);
  EXPECT_STREQ(page->content_type, "text/html; charset=utf-8");
  std::string html(reinterpret_cast<const char*>(page->data), page->size);
  EXPECT_NE(html.find("<script src=\"/app.js\""), std::string::npos);
  EXPECT_EQ(findAdminAsset("/index.html"), page);
  const AdminAsset* js = findAdminAsset("/app.js");
  ASSERT_NE(js, nullptr);
  EXPECT_STREQ(js->content_type, "text/javascript; charset=utf-8");
  EXPECT_NE(std::string_view(reinterpret_cast<const char*>(js->data), js->size).find("/api/live"),
            std::string_view::npos);
  ASSERT_NE(findAdminAsset("/style.css"), nullptr);
  EXPECT_EQ(findAdminAsset("/nothing.js"), nullptr);
  EXPECT_EQ(findAdminAsset("/api/status"), nullptr);

  AdminResponse r = adminAssetResponse(*js);
  EXPECT_EQ(r.body.size(), js->size);
  EXPECT_NE(r.headers.find("Content-Security-Policy: default-src 'none'"), std::string::npos);
  EXPECT_NE(r.headers.find("X-Frame-Options: DENY"), std::string::npos);
}

TEST(AdminPageStatus, RouteTotalsSumEveryWorker) {
  metrics::Registry registry(2);
  metrics::RouteSlot* slots = registry.route("chat");
  slots[0].requests_by_class[2].inc(3);
  slots[1].requests_by_class[5].inc(2);
  slots[1].ws_open.add(4);
  slots[0].ws_messages[0].inc(10);
  slots[1].ws_messages[1].inc(7);
  slots[0].countClose(1000, 0);
  slots[1].countClose(1000, 1);
  slots[1].countClose(1012, 2);
  metrics::Registry::RouteTotals t = registry.routeTotals("chat");
  EXPECT_EQ(t.requests, 5u);
  EXPECT_EQ(t.websockets, 4);
  EXPECT_EQ(t.messages[0], 10u);
  EXPECT_EQ(t.messages[1], 7u);
  nlohmann::json j = nlohmann::json::parse("{" + routeTotalsJson(t) + "}");
  EXPECT_EQ(j["requests"], 5);
  EXPECT_EQ(j["websockets"], 4);
  EXPECT_EQ(j["messages"]["downstream_to_upstream"], 10);
  EXPECT_EQ(j["messages"]["upstream_to_downstream"], 7);
  EXPECT_EQ(j["closes"], nlohmann::json::parse(R"({"1000":2,"1012":1})"));
  EXPECT_EQ(registry.routeTotals("unknown").requests, 0u);
}

TEST(AdminPageStatus, KeepsTheLastWarningsAndErrors) {
  log::Level before = log::enabled(log::Level::kDebug) ? log::Level::kDebug : log::Level::kInfo;
  log::setLevel(log::Level::kInfo);
  LOG_INFO("admin page test: info is not a problem");
  for (int i = 0; i < 25; ++i) {
    LOG_WARN("admin page test: warning %d with a \"quote\"", i);
  }
  LOG_ERROR("admin page test: the last one");
  log::setLevel(before);
  std::vector<log::Problem> p = log::recentProblems();
  ASSERT_EQ(p.size(), log::kRecentProblems);
  EXPECT_EQ(p.back().message, "admin page test: the last one");
  EXPECT_STREQ(p.back().level, "error");
  EXPECT_EQ(p.front().message, "admin page test: warning 6 with a \"quote\"");
  EXPECT_STREQ(p.front().level, "warn");
  EXPECT_EQ(p.front().time.size(), 24u);  // 2026-12-03T17:12:05.123Z
  EXPECT_EQ(p.front().time.back(), 'Z');
  nlohmann::json j = nlohmann::json::parse("{" + problemsJson(p) + "}");
  ASSERT_EQ(j["last_errors"].size(), log::kRecentProblems);
  EXPECT_EQ(j["last_errors"][0]["message"], "admin page test: warning 6 with a \"quote\"");
}

}  // namespace
}  // namespace sluice
