#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "filters/rules/rules.h"

namespace sluice::filters::rules {
namespace {

std::shared_ptr<const RuleSet> load(const std::string& toml) {
  RulesLoadResult r = RuleSet::loadString(toml, "rules.toml");
  std::string all;
  for (const conf::Diagnostic& d : r.diagnostics) {
    all += d.format() + "\n";
  }
  EXPECT_TRUE(r.rules) << all;
  return r.rules;
}

std::vector<std::string> errors(const std::string& toml) {
  RulesLoadResult r = RuleSet::loadString(toml, "rules.toml");
  EXPECT_FALSE(r.rules);
  std::vector<std::string> out;
  for (const conf::Diagnostic& d : r.diagnostics) {
    out.push_back(d.format());
  }
  return out;
}

std::vector<std::string> ids(const RulesVerdict& v) {
  std::vector<std::string> out;
  for (const Rule* r : v.matched) {
    out.push_back(r->id);
  }
  return out;
}

using Ids = std::vector<std::string>;

TEST(Rules, RequestTargets) {
  auto set = load(R"(
[[rules]]
id = "m"
target = "method"
pattern = '^(TRACE|TRACK)$'
action = "deny"
status = 405

[[rules]]
id = "p"
target = "path"
pattern = '^/admin(/|$)'
action = "deny"

[[rules]]
id = "q"
target = "query"
pattern = 'debug=1'
action = "log"

[[rules]]
id = "h"
target = "header:X-Api-Version"
pattern = '^0\.'
action = "deny"
status = 410

[[rules]]
id = "b"
target = "body"
pattern = 'BEGIN PGP'
action = "deny"
)");
  ASSERT_TRUE(set);
  EXPECT_TRUE(set->hasRequestRules());
  EXPECT_FALSE(set->hasMessageRules(kFromClient));
  const Header headers[] = {{"Host", "a"}, {"x-api-version", "0.9"}};
  RequestInput r{"GET", "/admin/users", "debug=1&x=2", headers, "hello"};
  RulesVerdict v = set->evaluateRequest(r);
  EXPECT_EQ(ids(v), (Ids{"p", "q", "h"}));
  EXPECT_EQ(v.action(), Action::kDeny);
  EXPECT_EQ(v.strongest->id, "p");  // the first of the strongest
  r = {"TRACE", "/", "", {}, "-----BEGIN PGP MESSAGE-----"};
  v = set->evaluateRequest(r);
  EXPECT_EQ(ids(v), (Ids{"m", "b"}));
  EXPECT_EQ(v.strongest->status, 405);
  r = {"GET", "/administrator", "", headers, ""};
  v = set->evaluateRequest(r);
  EXPECT_EQ(ids(v), (Ids{"h"}));
  EXPECT_EQ(v.strongest->status, 410);
  r = {"GET", "/", "", {}, ""};
  EXPECT_FALSE(set->evaluateRequest(r).any());
  EXPECT_EQ(set->evaluateRequest(r).action(), Action::kNone);
}

TEST(Rules, MessageDirectionsAndActions) {
  auto set = load(R"(
[[rules]]
id = "c"
target = "message"
pattern = '(?i)drop\s+table'
action = "close"
close_code = 4001

[[rules]]
id = "b"
target = "message"
direction = "backend"
pattern = 'secret'
action = "drop"

[[rules]]
id = "both"
target = "message"
direction = "both"
pattern = 'spam'
action = "log"
)");
  ASSERT_TRUE(set);
  EXPECT_FALSE(set->hasRequestRules());
  EXPECT_TRUE(set->hasMessageRules(kFromBackend));
  RulesVerdict v = set->evaluateMessage("please DROP  TABLE x; spam secret", kFromClient, true);
  EXPECT_EQ(ids(v), (Ids{"c", "both"}));
  EXPECT_EQ(v.action(), Action::kClose);
  EXPECT_EQ(v.strongest->close_code, 4001);
  v = set->evaluateMessage("please DROP  TABLE x; spam secret", kFromBackend, true);
  EXPECT_EQ(ids(v), (Ids{"b", "both"}));
  EXPECT_EQ(v.action(), Action::kDrop);
  EXPECT_FALSE(set->evaluateMessage("hello", kFromClient, true).any());
  // Binary messages are scanned as bytes too.
  EXPECT_EQ(ids(set->evaluateMessage(std::string("\x00spam\xff", 6), kFromClient, false)),
            (Ids{"both"}));
}

TEST(Rules, Transforms) {
  std::string out;
  const Transform url[] = {Transform::kUrlDecode};
  applyTransforms(url, "a%20b+c%2Fd%zz%4", out);
  EXPECT_EQ(out, "a b c/d%zz%4");
  const Transform lower[] = {Transform::kLowercase};
  applyTransforms(lower, "SeLeCT É", out);
  EXPECT_EQ(out, "select É");
  const Transform html[] = {Transform::kHtmlEntityDecode};
  applyTransforms(html, "&lt;script&gt;&#97;&#x6C;ert&amp;&quot;&apos&nbsp;&bogus; &#xD800;", out);
  EXPECT_EQ(out, "<script>alert&\"' &bogus; \xEF\xBF\xBD");
  const Transform ws[] = {Transform::kCompressWhitespace, Transform::kTrim};
  applyTransforms(ws, "  a \t\n b  ", out);
  EXPECT_EQ(out, "a b");
  const Transform rm[] = {Transform::kRemoveWhitespace};
  applyTransforms(rm, " u n i o n ", out);
  EXPECT_EQ(out, "union");

  // Chained in the order written: decode, then lowercase.
  auto set = load(R"(
[[rules]]
id = "x"
target = "query"
transforms = ["url_decode", "html_entity_decode", "lowercase"]
pattern = '<script'
action = "deny"

[[rules]]
id = "raw"
target = "query"
pattern = '<script'
action = "log"
)");
  ASSERT_TRUE(set);
  EXPECT_EQ(set->groupCount(), 2u);
  RequestInput r{"GET", "/", "q=%26lt%3BSCRIPT", {}, ""};
  EXPECT_EQ(ids(set->evaluateRequest(r)), (Ids{"x"}));
  r.query = "q=<script";
  EXPECT_EQ(ids(set->evaluateRequest(r)), (Ids{"x", "raw"}));
}

TEST(Rules, MaxLength) {
  auto set = load(R"(
[[rules]]
id = "long-path"
target = "path"
max_length = 8
action = "deny"
status = 414

[[rules]]
id = "long-name"
target = "json:/user/name"
max_length = 5
action = "drop"

[[rules]]
id = "trimmed"
target = "message"
transforms = ["trim"]
max_length = 3
action = "log"
)");
  ASSERT_TRUE(set);
  RequestInput r{"GET", "/12345678", "", {}, ""};
  EXPECT_TRUE(set->evaluateRequest(r).any());
  r.path = "/1234567";
  EXPECT_FALSE(set->evaluateRequest(r).any());
  EXPECT_EQ(ids(set->evaluateMessage(R"({"user":{"name":"Bartholomew"}})", kFromClient, true)),
            (Ids{"long-name", "trimmed"}));
  EXPECT_FALSE(set->evaluateMessage("  ab  ", kFromClient, true).any());
}

TEST(Rules, JsonPointers) {
  auto set = load(R"(
[[rules]]
id = "cmd"
target = "json:/cmd"
pattern = '^(rm|shutdown)$'
action = "close"

[[rules]]
id = "second-tag"
target = "json:/tags/1"
pattern = 'admin'
action = "drop"

[[rules]]
id = "escaped"
target = "json:/a~1b/c~0d"
pattern = 'x'
action = "log"

[[rules]]
id = "number"
target = "json:/n"
pattern = '^4\d$'
action = "log"

[[rules]]
id = "object"
target = "json:/o"
pattern = '"k":true'
action = "log"

[[rules]]
id = "whole"
target = "json:"
max_length = 1000
action = "log"
)");
  ASSERT_TRUE(set);
  EXPECT_EQ(ids(set->evaluateMessage(R"({"cmd":"rm","tags":["user","admin"]})", kFromClient, true)),
            (Ids{"cmd", "second-tag"}));
  EXPECT_EQ(
      ids(set->evaluateMessage(R"({"a/b":{"c~d":"x"},"n":42,"o":{"k":true}})", kFromClient, true)),
      (Ids{"escaped", "number", "object"}));
  // Misses: wrong type on the way, an index out of range, a key that is not there.
  EXPECT_FALSE(set->evaluateMessage(R"({"cmd":["rm"],"tags":["admin"]})", kFromClient, true).any());
  EXPECT_FALSE(set->evaluateMessage(R"(["rm"])", kFromClient, true).any());
  // Not JSON, binary, or nested past the limit: json: rules match nothing.
  EXPECT_FALSE(set->evaluateMessage(R"({"cmd":"rm")", kFromClient, true).any());
  EXPECT_FALSE(set->evaluateMessage("cmd=rm", kFromClient, true).any());
  EXPECT_FALSE(set->evaluateMessage(R"({"cmd":"rm"})", kFromClient, false).any());
  const std::string deep = std::string(300, '[') + std::string(300, ']');
  EXPECT_FALSE(set->evaluateMessage(R"({"cmd":"rm","d":)" + deep + "}", kFromClient, true).any());
  // A direction no rule has.
  EXPECT_FALSE(set->evaluateMessage(R"({"cmd":"rm"})", kFromBackend, true).any());
}

TEST(Rules, ManyRulesInOneSet) {
  std::string toml;
  for (int i = 0; i < 200; ++i) {
    toml += "[[rules]]\nid = " + std::to_string(i) + "\ntarget = \"message\"\npattern = 'word" +
            std::to_string(i) + "\\b'\naction = \"log\"\n";
  }
  auto set = load(toml);
  ASSERT_TRUE(set);
  EXPECT_EQ(set->groupCount(), 1u);
  EXPECT_EQ(ids(set->evaluateMessage("x word17 word199 word2", kFromClient, true)),
            (Ids{"2", "17", "199"}));
}

TEST(Rules, AllErrorsWithPositions) {
  std::vector<std::string> e = errors(R"([[rules]]
id = "a"
target = "message"
pattern = 'x('
action = "close"

[[rules]]
id = "a"
target = "json:a/b"
pattern = 'y'
action = "drop"
colour = "red"

[[rules]]
id = "c"
target = "headr:X"
transforms = ["lowercase", "url_decod"]
action = "deny"

[[rules]]
id = "d"
target = "path"
pattern = 'p'
max_length = 3
action = "close"
direction = "client"
)");
  std::string all;
  for (const std::string& s : e) {
    all += s + "\n";
  }
  auto has = [&](const std::string& what) { return all.find(what) != std::string::npos; };
  EXPECT_TRUE(has("rules.toml:4:11: error: bad pattern: missing ): x(")) << all;
  EXPECT_TRUE(has("rules.toml:8:6: error: duplicate rule id \"a\" (first at rules.toml:1:1)"))
      << all;
  EXPECT_TRUE(has("rules.toml:9:10: error: bad JSON pointer \"a/b\"")) << all;
  EXPECT_TRUE(has("rules.toml:12:1: error: unknown key 'colour'")) << all;
  EXPECT_TRUE(has("rules.toml:16:10: error: unknown target \"headr:X\"")) << all;
  EXPECT_TRUE(has("rules.toml:17:28: error: unknown transform \"url_decod\"")) << all;
  EXPECT_TRUE(has("did you mean 'url_decode'?")) << all;
  EXPECT_TRUE(has("rules.toml:14:1: error: [[rules]] needs 'pattern' or 'max_length'")) << all;
  EXPECT_TRUE(has("rules.toml:24:14: error: a rule has either 'pattern' or 'max_length'")) << all;
  EXPECT_TRUE(has("rules.toml:25:10: error: a request rule denies")) << all;
  EXPECT_TRUE(has("rules.toml:26:13: error: 'direction' applies to message and json")) << all;
  EXPECT_EQ(e.size(), 10u) << all;

  e = errors("[[rules]\nid = 1");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_TRUE(e[0].starts_with("rules.toml:1:")) << e[0];
  EXPECT_NE(e[0].find("TOML syntax"), std::string::npos) << e[0];

  e = errors("[[rules]]\ntarget = \"body\"\n");
  ASSERT_EQ(e.size(), 3u);  // id, action, and pattern or max_length
}

TEST(Rules, LoadsFilesInOrder) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string a = (dir / "sluice_rules_a.toml").string();
  const std::string b = (dir / "sluice_rules_b.toml").string();
  std::ofstream(a) << "[[rules]]\nid = 1\ntarget = \"message\"\npattern = 'a'\naction = \"log\"\n";
  std::ofstream(b) << "[[rules]]\nid = 1\ntarget = \"message\"\npattern = 'b'\naction = \"log\"\n";
  RulesLoadResult r = RuleSet::load({a, b, (dir / "sluice_rules_missing.toml").string()});
  EXPECT_FALSE(r.rules);
  ASSERT_EQ(r.diagnostics.size(), 2u);
  EXPECT_EQ(r.diagnostics[0].pos.file, b);  // the duplicate id, in the second file
  EXPECT_NE(r.diagnostics[0].message.find(a + ":1:1"), std::string::npos);
  EXPECT_NE(r.diagnostics[1].message.find("cannot read"), std::string::npos);
  std::filesystem::remove(a);
  std::filesystem::remove(b);
}

// Messages per second of a 50-rule set on one core (run in an optimised build; see the report):
// 30 patterns on the raw message, 10 on a decoded and lowercased copy, 10 on JSON fields.
TEST(RulesBench, DISABLED_FiftyRules) {
  std::string toml;
  const char* words[] = {"union", "select", "drop",    "insert", "delete",
                         "exec",  "script", "onerror", "eval",   "passwd"};
  for (int i = 0; i < 30; ++i) {
    toml += "[[rules]]\nid = \"raw" + std::to_string(i) + "\"\ntarget = \"message\"\npattern = '" +
            words[i % 10] + "\\s*" + std::to_string(i) + "[a-z]{2,}'\naction = \"close\"\n";
  }
  for (int i = 0; i < 10; ++i) {
    toml += "[[rules]]\nid = \"dec" + std::to_string(i) +
            "\"\ntarget = \"message\"\ntransforms = [\"url_decode\", \"lowercase\"]\npattern = '" +
            words[i] + "\\s+(all|from|into)\\b'\naction = \"close\"\n";
  }
  for (int i = 0; i < 10; ++i) {
    toml += "[[rules]]\nid = \"json" + std::to_string(i) + "\"\ntarget = \"json:/f" +
            std::to_string(i) + "\"\npattern = '^" + words[i] + "'\naction = \"drop\"\n";
  }
  auto set = load(toml);
  ASSERT_TRUE(set);
  std::string small = R"({"type":"chat","text":"let's meet at 5 o'clock","n":1})";
  small.resize(64, ' ');
  std::string big = R"({"type":"chat","f1":"hello","text":")";
  while (big.size() < 1000) {
    big += "the quick brown fox jumps over the lazy dog ";
  }
  big += "\"}";
  big.resize(1024, ' ');
  for (const std::string* m : {&small, &big}) {
    const int n = 200000;
    size_t hits = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      hits += set->evaluateMessage(*m, kFromClient, true).matched.size();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[rules bench] 50 rules, %zu B message: %.0f messages/s (%.2f us each), %zu hits\n",
                m->size(), n / s, s / n * 1e6, hits);
  }
}

}  // namespace
}  // namespace sluice::filters::rules
