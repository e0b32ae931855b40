#include <gtest/gtest.h>

#include "filters/filter.h"
#include "filters/message_limits/message_limits.h"
#include "filters/origin/origin.h"
#include "tests/unit/support/fakes.h"
#include "tests/unit/support/filter_config.h"

namespace sluice::filters {
namespace {

// What the origin filter did with a request: 0 when it let it pass, else the status it answered.
uint16_t judge(const FilterPtr& f, std::optional<std::string> origin, bool upgrade = true) {
  testing::FakeCallbacks cb;
  cb.info_.websocket = upgrade;
  RequestHead head;
  head.method = "GET";
  head.url = "/ws";
  head.add("Host", "app.example.com");
  if (origin) {
    head.add("Origin", *origin);
  }
  auto s = f->create();
  s->setCallbacks(cb);
  Status st = s->onRequestHead(head);
  EXPECT_EQ(st == Status::kContinue, cb.reply_status == 0);
  return cb.reply_status;
}

TEST(OriginFilter, ExactAndWildcard) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(testing::filterConfig(R"(
name = "o"
type = "origin"
allow = ["https://app.example.com", "https://*.example.org", "http://localhost:8080"]
)"),
                            d);
  ASSERT_TRUE(f) << (d.empty() ? "" : d[0].message);
  EXPECT_EQ(judge(f, "https://app.example.com"), 0);
  EXPECT_EQ(judge(f, "HTTPS://App.Example.com:443"), 0);
  EXPECT_EQ(judge(f, "https://a.example.org"), 0);
  EXPECT_EQ(judge(f, "https://a.b.example.org"), 0);
  EXPECT_EQ(judge(f, "http://localhost:8080"), 0);
  // Not allowed: other scheme, bare domain for a wildcard, look-alike suffix, other port.
  for (const char* bad : {"http://app.example.com", "https://example.org",
                          "https://evilexample.org", "https://example.org.evil.com",
                          "http://localhost:9090", "null", "https://app.example.com.evil"}) {
    EXPECT_EQ(judge(f, bad), 403) << bad;
  }
  EXPECT_EQ(judge(f, std::nullopt), 403);
  // Plain HTTP requests are not the origin filter's business.
  EXPECT_EQ(judge(f, "https://evil.com", false), 0);
}

TEST(OriginFilter, AllowMissing) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(testing::filterConfig(R"(
name = "o"
type = "origin"
allow = ["https://app.example.com"]
allow_missing = true
)"),
                            d);
  ASSERT_TRUE(f);
  EXPECT_EQ(judge(f, std::nullopt), 0);
  EXPECT_EQ(judge(f, "https://evil.com"), 403);
}

TEST(OriginFilter, BadConfigNamesTheKey) {
  conf::Diagnostics d;
  EXPECT_FALSE(buildFilter(
      testing::filterConfig("name = \"o\"\ntype = \"origin\"\nallow = [\"app.example.com\"]\n"),
      d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].pos.line, 3u);
  EXPECT_NE(d[0].message.find("not an origin"), std::string::npos);
  d.clear();
  EXPECT_FALSE(buildFilter(
      testing::filterConfig("name = \"o\"\ntype = \"origin\"\nalow = [\"https://a\"]\n"), d));
  ASSERT_FALSE(d.empty());
  EXPECT_NE(d[0].message.find("unknown key 'alow'"), std::string::npos);
  d.clear();
  EXPECT_FALSE(buildFilter(testing::filterConfig("name = \"o\"\ntype = \"orign\"\n"), d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_NE(d[0].message.find("unknown filter type 'orign'"), std::string::npos);
  EXPECT_EQ(d[0].pos.line, 2u);
}

FrameInfo frame(MessageType type, bool first, uint64_t message_bytes) {
  return {Direction::kDownstreamToUpstream, type, first, true, message_bytes, message_bytes};
}

TEST(MessageLimitsFilter, SizeAndTypes) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(testing::filterConfig(R"(
name = "m"
type = "message_limits"
max_message_bytes = "1KiB"
allow_types = ["text"]
)"),
                            d);
  ASSERT_TRUE(f) << (d.empty() ? "" : d[0].message);
  EXPECT_EQ(f->phases(), Filter::kFrame);  // judged on headers: messages keep streaming
  testing::FakeCallbacks cb;
  auto s = f->create();
  s->setCallbacks(cb);
  s->onFrame(frame(MessageType::kText, true, 1024));
  EXPECT_EQ(cb.close_code, 0);
  s->onFrame(frame(MessageType::kText, false, 1025));
  EXPECT_EQ(cb.close_code, 1009);
  cb.close_code = 0;
  s->onFrame(frame(MessageType::kBinary, true, 3));
  EXPECT_EQ(cb.close_code, 1003);
}

TEST(MessageLimitsFilter, BadTypesAndSizes) {
  conf::Diagnostics d;
  EXPECT_FALSE(buildFilter(
      testing::filterConfig("name = \"m\"\ntype = \"message_limits\"\nallow_types = [\"txt\"]\n"),
      d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_NE(d[0].message.find("unknown message type 'txt'"), std::string::npos);
  d.clear();
  EXPECT_FALSE(buildFilter(
      testing::filterConfig(
          "name = \"m\"\ntype = \"message_limits\"\nmax_message_bytes = \"12 parsecs\"\n"),
      d));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].pos.line, 3u);
}

}  // namespace
}  // namespace sluice::filters
