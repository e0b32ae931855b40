// The rules filter on the filter API: request rules judged on the head (or with the body when a
// rule reads it), message rules closing, dropping and logging, detect mode, counters, and rule
// file errors reported at their file:line:col through the config's diagnostics.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "filters/filter.h"
#include "filters/rules/rules_filter.h"
#include "tests/unit/support/fakes.h"

namespace sluice::filters::rules {
namespace {

class RulesFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sluice-rules-filter-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `rules` to a file beside a config file and builds the filter from `keys`.
  FilterPtr build(const std::string& rules, const std::string& keys = "",
                  conf::Diagnostics* diagnostics = nullptr) {
    std::ofstream(dir_ / "app.rules.toml") << rules;
    const std::string config = (dir_ / "sluice.toml").string();
    auto table = std::make_shared<toml::table>(
        toml::parse("name = \"r\"\ntype = \"rules\"\nfiles = [\"app.rules.toml\"]\naudit_log = "
                    "\"audit.log\"\n" +
                        keys,
                    config));
    conf::FilterConfig c;
    c.name = "r";
    c.type = "rules";
    c.options = table;
    c.pos = {config, 1, 1};
    conf::Diagnostics local;
    conf::Diagnostics& d = diagnostics != nullptr ? *diagnostics : local;
    FilterPtr f = buildFilter(c, d);
    if (diagnostics == nullptr) {
      EXPECT_TRUE(f) << (d.empty() ? "" : d[0].format());
    }
    return f;
  }

  std::string audit() {
    std::ifstream in(dir_ / "audit.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::filesystem::path dir_;
};

const char* kRules = R"(
[[rules]]
id = "no-admin"
target = "path"
pattern = '^/admin(/|$)'
action = "deny"
status = 404

[[rules]]
id = "old-client"
target = "header:X-Client-Version"
pattern = '^0\.'
action = "log"

[[rules]]
id = "admin-message"
target = "json:/type"
pattern = '^admin$'
action = "close"
close_code = 4403

[[rules]]
id = "no-links"
target = "message"
transforms = ["lowercase"]
pattern = 'https?://'
action = "drop"

[[rules]]
id = "long-text"
target = "json:/text"
max_length = 30
action = "log"
)";

RequestHead head(std::string url) {
  RequestHead h;
  h.method = "GET";
  h.url = std::move(url);
  h.add("Host", "app.example.com");
  return h;
}

TEST_F(RulesFilterTest, RequestRulesOnTheHead) {
  FilterPtr f = build(kRules);
  testing::RecordingStats stats;
  f->bindStats(stats);
  EXPECT_EQ(f->phases(), Filter::kRequestHead | Filter::kMessage);  // no body rule: no buffering
  testing::FakeCallbacks cb;
  cb.info_.request_id = "req-9";
  auto s = f->create();
  s->setCallbacks(cb);
  RequestHead h = head("/admin/users?x=1");
  EXPECT_EQ(s->onRequestHead(h), Status::kStop);
  EXPECT_EQ(cb.reply_status, 404);
  EXPECT_NE(cb.reply_reason.find("no-admin"), std::string::npos);

  testing::FakeCallbacks cb2;
  auto s2 = f->create();
  s2->setCallbacks(cb2);
  RequestHead h2 = head("/app");
  h2.add("X-Client-Version", "0.9.1");
  EXPECT_EQ(s2->onRequestHead(h2), Status::kContinue);  // logged only
  EXPECT_EQ(cb2.reply_status, 0);
  EXPECT_EQ(stats.value("sluice_rules_matches_total,filter=r,rule=no-admin,action=deny"), 1u);
  EXPECT_EQ(stats.value("sluice_rules_matches_total,filter=r,rule=old-client,action=log"), 1u);
  const std::string a = audit();
  EXPECT_NE(a.find(R"("request_id":"req-9")"), std::string::npos) << a;
  EXPECT_NE(a.find(R"("rules":[{"id":"no-admin","action":"deny"}])"), std::string::npos) << a;
  EXPECT_NE(a.find(R"("id":"old-client")"), std::string::npos) << a;
}

TEST_F(RulesFilterTest, BodyRulesWaitForTheBody) {
  FilterPtr f = build(R"(
[[rules]]
id = "pgp"
target = "body"
pattern = 'BEGIN PGP'
action = "deny"
)");
  EXPECT_EQ(f->phases(), Filter::kRequestHead | Filter::kRequestBody);
  testing::FakeCallbacks cb;
  auto s = f->create();
  s->setCallbacks(cb);
  RequestHead h = head("/upload");
  h.method = "POST";
  ASSERT_EQ(s->onRequestHead(h), Status::kStopAndBuffer);
  EXPECT_EQ(s->onRequestBody("-----BEGIN PGP MESSAGE-----", true), Status::kStop);
  EXPECT_EQ(cb.reply_status, 403);
  // The end announced again (a bodiless request) finds nothing left to judge.
  EXPECT_EQ(s->onRequestBody({}, true), Status::kContinue);
}

TEST_F(RulesFilterTest, MessageRulesCloseDropAndLog) {
  FilterPtr f = build(kRules);
  testing::RecordingStats stats;
  f->bindStats(stats);
  auto judge = [&](std::string payload, testing::FakeCallbacks& cb) {
    auto s = f->create();
    s->setCallbacks(cb);
    Message m(Direction::kDownstreamToUpstream, MessageType::kText, &payload);
    return s->onMessage(m);
  };
  testing::FakeCallbacks a;
  EXPECT_EQ(judge(R"({"type":"chat","text":"hi"})", a), Status::kContinue);
  EXPECT_EQ(a.close_code, 0);
  testing::FakeCallbacks b;
  EXPECT_EQ(judge(R"({"type":"admin","cmd":"wipe"})", b), Status::kStop);
  EXPECT_EQ(b.close_code, 4403);
  testing::FakeCallbacks c;
  EXPECT_EQ(judge(R"({"type":"chat","text":"see HTTPS://evil.example"})", c), Status::kStop);
  EXPECT_FALSE(c.drop_reason.empty());
  EXPECT_EQ(c.close_code, 0);
  testing::FakeCallbacks d;
  EXPECT_EQ(judge(R"({"type":"chat","text":"a rather long message, over thirty bytes long"})", d),
            Status::kContinue);
  EXPECT_EQ(stats.value("sluice_rules_matches_total,filter=r,rule=long-text,action=log"), 1u);
  EXPECT_EQ(stats.value("sluice_rules_matches_total,filter=r,rule=admin-message,action=close"), 1u);
  // Backend messages: the rules say client (the default direction).
  testing::FakeCallbacks e;
  auto s = f->create();
  s->setCallbacks(e);
  std::string payload = R"({"type":"admin"})";
  Message m(Direction::kUpstreamToDownstream, MessageType::kText, &payload);
  EXPECT_EQ(s->onMessage(m), Status::kContinue);
  EXPECT_EQ(e.close_code, 0);
}

TEST_F(RulesFilterTest, DetectModeRefusesNothing) {
  FilterPtr f = build(kRules, "mode = \"detect\"");
  testing::RecordingStats stats;
  f->bindStats(stats);
  testing::FakeCallbacks cb;
  auto s = f->create();
  s->setCallbacks(cb);
  RequestHead h = head("/admin");
  EXPECT_EQ(s->onRequestHead(h), Status::kContinue);
  std::string payload = R"({"type":"admin"})";
  Message m(Direction::kDownstreamToUpstream, MessageType::kText, &payload);
  EXPECT_EQ(s->onMessage(m), Status::kContinue);
  EXPECT_EQ(cb.reply_status, 0);
  EXPECT_EQ(cb.close_code, 0);
  EXPECT_EQ(stats.value("sluice_rules_matches_total,filter=r,rule=no-admin,action=log"), 1u);
  EXPECT_EQ(stats.value("sluice_rules_matches_total,filter=r,rule=admin-message,action=log"), 1u);
}

TEST_F(RulesFilterTest, RuleFileErrorsAtTheirPosition) {
  conf::Diagnostics d;
  FilterPtr f = build(R"(
[[rules]]
id = "bad"
target = "message"
pattern = '(unclosed'
action = "close"
)",
                      "", &d);
  EXPECT_FALSE(f);
  ASSERT_FALSE(d.empty());
  EXPECT_NE(d[0].format().find("app.rules.toml:5:11"), std::string::npos) << d[0].format();
  EXPECT_NE(d[0].format().find("bad pattern"), std::string::npos) << d[0].format();

  conf::Diagnostics d2;
  EXPECT_FALSE(build(kRules, "mode = \"enforce\"", &d2));
  ASSERT_FALSE(d2.empty());
  EXPECT_NE(d2[0].format().find("sluice.toml"), std::string::npos) << d2[0].format();
}

}  // namespace
}  // namespace sluice::filters::rules
