#include <gtest/gtest.h>

#include "filters/filter.h"
#include "filters/message_limits/message_limits.h"
#include "filters/origin/origin.h"

namespace sluice::filters {
namespace {

conf::FilterConfig filterConfig(const std::string& toml) {
  auto table = std::make_shared<toml::table>(
      toml::parse(std::string_view(toml), std::string_view("test.toml")));
  conf::FilterConfig c;
  c.name = table->get("name")->as_string()->get();
  c.type = table->get("type")->as_string()->get();
  c.options = table;
  c.pos = {"test.toml", 1, 1};
  return c;
}

class FakeRequest : public RequestView {
 public:
  std::string_view method() const override { return "GET"; }
  std::string_view path() const override { return "/ws"; }
  std::string_view host() const override { return "app.example.com"; }
  std::optional<std::string_view> header(std::string_view name) const override {
    if (name == "origin" && origin) {
      return *origin;
    }
    return std::nullopt;
  }
  std::string_view clientIp() const override { return "127.0.0.1"; }
  bool webSocketUpgrade() const override { return upgrade; }
  std::optional<std::string> origin;
  bool upgrade = true;
};

class NoCallbacks : public HeadCallbacks {
 public:
  void resume(HeadDecision) override { FAIL() << "origin never pauses"; }
};

HeadDecision judge(const FilterPtr& f, std::optional<std::string> origin, bool upgrade = true) {
  FakeRequest r;
  r.origin = std::move(origin);
  r.upgrade = upgrade;
  NoCallbacks cb;
  return f->create()->onRequestHead(r, cb);
}

TEST(OriginFilter, ExactAndWildcard) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(filterConfig(R"(
name = "o"
type = "origin"
allow = ["https://app.example.com", "https://*.example.org", "http://localhost:8080"]
)"),
                            d);
  ASSERT_TRUE(f) << (d.empty() ? "" : d[0].message);
  using A = HeadDecision::Action;
  EXPECT_EQ(judge(f, "https://app.example.com").action, A::kContinue);
  EXPECT_EQ(judge(f, "HTTPS://App.Example.com:443").action, A::kContinue);
  EXPECT_EQ(judge(f, "https://a.example.org").action, A::kContinue);
  EXPECT_EQ(judge(f, "https://a.b.example.org").action, A::kContinue);
  EXPECT_EQ(judge(f, "http://localhost:8080").action, A::kContinue);
  // Not allowed: other scheme, bare domain for a wildcard, look-alike suffix, other port.
  for (const char* bad : {"http://app.example.com", "https://example.org",
                          "https://evilexample.org", "https://example.org.evil.com",
                          "http://localhost:9090", "null", "https://app.example.com.evil"}) {
    HeadDecision dec = judge(f, bad);
    EXPECT_EQ(dec.action, A::kReject) << bad;
    EXPECT_EQ(dec.status, 403) << bad;
  }
  EXPECT_EQ(judge(f, std::nullopt).action, A::kReject);
  // Plain HTTP requests are not the origin filter's business.
  EXPECT_EQ(judge(f, "https://evil.com", false).action, A::kContinue);
}

TEST(OriginFilter, AllowMissing) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(filterConfig(R"(
name = "o"
type = "origin"
allow = ["https://app.example.com"]
allow_missing = true
)"),
                            d);
  ASSERT_TRUE(f);
  EXPECT_EQ(judge(f, std::nullopt).action, HeadDecision::Action::kContinue);
  EXPECT_EQ(judge(f, "https://evil.com").action, HeadDecision::Action::kReject);
}

TEST(OriginFilter, BadConfigNamesTheKey) {
  conf::Diagnostics d;
  EXPECT_FALSE(buildFilter(
      filterConfig("name = \"o\"\ntype = \"origin\"\nallow = [\"app.example.com\"]\n"), d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].pos.line, 3u);
  EXPECT_NE(d[0].message.find("not an origin"), std::string::npos);
  d.clear();
  EXPECT_FALSE(
      buildFilter(filterConfig("name = \"o\"\ntype = \"origin\"\nalow = [\"https://a\"]\n"), d));
  ASSERT_FALSE(d.empty());
  EXPECT_NE(d[0].message.find("unknown key 'alow'"), std::string::npos);
  d.clear();
  EXPECT_FALSE(buildFilter(filterConfig("name = \"o\"\ntype = \"orign\"\n"), d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_NE(d[0].message.find("unknown filter type 'orign'"), std::string::npos);
  EXPECT_EQ(d[0].pos.line, 2u);
}

FrameInfo frame(MessageType type, bool first, uint64_t message_bytes) {
  return {Direction::kDownstreamToUpstream, type, first, true, message_bytes, message_bytes};
}

TEST(MessageLimitsFilter, SizeAndTypes) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(filterConfig(R"(
name = "m"
type = "message_limits"
max_message_bytes = "1KiB"
allow_types = ["text"]
)"),
                            d);
  ASSERT_TRUE(f) << (d.empty() ? "" : d[0].message);
  EXPECT_FALSE(f->needsPayload());  // judged on headers: messages keep streaming
  auto s = f->create();
  using A = MessageDecision::Action;
  EXPECT_EQ(s->onFrame(frame(MessageType::kText, true, 1024)).action, A::kContinue);
  MessageDecision big = s->onFrame(frame(MessageType::kText, false, 1025));
  EXPECT_EQ(big.action, A::kClose);
  EXPECT_EQ(big.close_code, 1009);
  MessageDecision bin = s->onFrame(frame(MessageType::kBinary, true, 3));
  EXPECT_EQ(bin.action, A::kClose);
  EXPECT_EQ(bin.close_code, 1003);
}

TEST(MessageLimitsFilter, BadTypesAndSizes) {
  conf::Diagnostics d;
  EXPECT_FALSE(buildFilter(
      filterConfig("name = \"m\"\ntype = \"message_limits\"\nallow_types = [\"txt\"]\n"), d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_NE(d[0].message.find("unknown message type 'txt'"), std::string::npos);
  d.clear();
  EXPECT_FALSE(buildFilter(
      filterConfig("name = \"m\"\ntype = \"message_limits\"\nmax_message_bytes = \"12 parsecs\"\n"),
      d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].pos.line, 3u);
}

}  // namespace
}  // namespace sluice::filters
