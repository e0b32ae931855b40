#include "proxy/router.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

conf::RouteConfig route(std::string host, std::string prefix, size_t listener = 0) {
  conf::RouteConfig r;
  r.host = std::move(host);
  r.path_prefix = std::move(prefix);
  r.listener_index = listener;
  return r;
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.listeners.resize(2);
    config_.routes = {
        route("*", "/"),                    // 0
        route("*", "/api"),                 // 1
        route("example.com", "/"),          // 2
        route("example.com", "/static/"),   // 3
        route("*.example.com", "/"),        // 4
        route("*.api.example.com", "/v1"),  // 5
        route("other.org", "/only"),        // 6
        route("*", "/", 1),                 // 7: second listener
    };
  }
  conf::Config config_;
};

TEST_F(RouterTest, ExactHostWinsOverWildcards) {
  Router r(config_);
  EXPECT_EQ(r.match(0, "example.com", "/"), 2);
  EXPECT_EQ(r.match(0, "EXAMPLE.com:8080", "/x"), 2);
  EXPECT_EQ(r.match(0, "example.com.", "/x"), 2);
}

TEST_F(RouterTest, LongestPathPrefixWithinHost) {
  Router r(config_);
  EXPECT_EQ(r.match(0, "example.com", "/static/app.js"), 3);
  EXPECT_EQ(r.match(0, "example.com", "/static"), 2);
  EXPECT_EQ(r.match(0, "example.com", "/static/x?y=1"), 3);
  EXPECT_EQ(r.match(0, "unknown.net", "/api/users"), 1);
  EXPECT_EQ(r.match(0, "unknown.net", "/"), 0);
}

TEST_F(RouterTest, LongestSuffixWins) {
  Router r(config_);
  EXPECT_EQ(r.match(0, "a.example.com", "/"), 4);
  EXPECT_EQ(r.match(0, "x.api.example.com", "/v1/q"), 5);
  // The longest suffix is chosen first; its routes do not fall back to a shorter suffix.
  EXPECT_EQ(r.match(0, "x.api.example.com", "/v2"), -1);
}

TEST_F(RouterTest, SuffixDoesNotMatchBareDomain) {
  config_.routes = {route("*.example.com", "/")};
  Router r(config_);
  EXPECT_EQ(r.match(0, "example.com", "/"), -1);
  EXPECT_EQ(r.match(0, "badexample.com", "/"), -1);
  EXPECT_EQ(r.match(0, "a.example.com", "/"), 0);
}

TEST_F(RouterTest, HostWithoutMatchingPrefixIs404) {
  Router r(config_);
  // other.org is an exact host, so the '*' routes are not consulted.
  EXPECT_EQ(r.match(0, "other.org", "/"), -1);
  EXPECT_EQ(r.match(0, "other.org", "/only/x"), 6);
}

TEST_F(RouterTest, ListenersAreSeparate) {
  Router r(config_);
  EXPECT_EQ(r.match(1, "example.com", "/static/x"), 7);
  EXPECT_EQ(r.match(2, "example.com", "/"), -1);
}

TEST(RouterNormalize, Hosts) {
  EXPECT_EQ(Router::normalizeHost("Example.COM:8080"), "example.com");
  EXPECT_EQ(Router::normalizeHost("[::1]:8443"), "::1");
  EXPECT_EQ(Router::normalizeHost("[::1]"), "::1");
  EXPECT_EQ(Router::normalizeHost("host."), "host");
  EXPECT_EQ(Router::normalizeHost(""), "");
}

}  // namespace
}  // namespace sluice
