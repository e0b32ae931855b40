#include "proxy/http/path.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace sluice::http {
namespace {

std::string norm(std::string_view path, PathPolicy policy = {}) {
  std::string out;
  const char* reason = "";
  uint16_t status = normalizePath(path, policy, &out, &reason);
  return status == 0 ? out : "ERR " + std::to_string(status) + " " + reason;
}

bool refused(std::string_view path, PathPolicy policy = {}) {
  return norm(path, policy).rfind("ERR 400", 0) == 0;
}

TEST(PathNormalize, DotSegmentsAsRfc3986Resolves) {
  // RFC 3986 5.4.1 and 5.4.2 against the base "http://a/b/c/d;p?q": each reference merged
  // with the base path (5.2.3), then remove_dot_segments.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/b/c/g", "/b/c/g"},
      {"/b/c/./g", "/b/c/g"},
      {"/b/c/g/", "/b/c/g/"},
      {"/g", "/g"},
      {"/b/c/d;p", "/b/c/d;p"},
      {"/b/c/.", "/b/c/"},
      {"/b/c/./", "/b/c/"},
      {"/b/c/..", "/b/"},
      {"/b/c/../", "/b/"},
      {"/b/c/../g", "/b/g"},
      {"/b/c/../..", "/"},
      {"/b/c/../../", "/"},
      {"/b/c/../../g", "/g"},
      // 5.4.2, the abnormal examples: ".." above the root is dropped.
      {"/b/c/../../../g", "/g"},
      {"/b/c/../../../../g", "/g"},
      {"/./g", "/g"},
      {"/../g", "/g"},
      {"/b/c/g.", "/b/c/g."},
      {"/b/c/.g", "/b/c/.g"},
      {"/b/c/g..", "/b/c/g.."},
      {"/b/c/..g", "/b/c/..g"},
      {"/b/c/./../g", "/b/g"},
      {"/b/c/./g/.", "/b/c/g/"},
      {"/b/c/g/./h", "/b/c/g/h"},
      {"/b/c/g/../h", "/b/c/h"},
      {"/b/c/g;x=1/./y", "/b/c/g;x=1/y"},
      {"/b/c/g;x=1/../y", "/b/c/y"},
      // 5.2.4's own example.
      {"/a/b/c/./../../g", "/a/g"},
      {"/", "/"},
      {"/.", "/"},
      {"/..", "/"},
  };
  for (const auto& [in, want] : cases) {
    EXPECT_EQ(norm(in), want) << in;
  }
}

TEST(PathNormalize, EncodedDotsAndUnreservedCharacters) {
  EXPECT_EQ(norm("/ws/echo/../../nows/x"), "/nows/x");
  EXPECT_EQ(norm("/a/%2e%2e/b"), "/b");
  EXPECT_EQ(norm("/%2e%2e/%2e%2e/etc"), "/etc");
  EXPECT_EQ(norm("/a/.%2E/b"), "/b");
  EXPECT_EQ(norm("/a/%2e/b"), "/a/b");
  EXPECT_EQ(norm("/%41%62%7e%2D%5f%30"), "/Ab~-_0");
  // Other escapes stay, in upper case; "%25" is never decoded (no double decoding).
  EXPECT_EQ(norm("/a%3fb%20c%25%2e%2e"), "/a%3Fb%20c%25..");
  EXPECT_EQ(norm("/%252e%252e/x"), "/%252e%252e/x");
  EXPECT_EQ(norm("/a%00b"), "/a%00b");
  // Characters RFC 3986 does not allow raw are left as sent.
  EXPECT_EQ(norm("/a|b{c}\"<>^`"), "/a|b{c}\"<>^`");
  EXPECT_TRUE(refused("/a%2"));
  EXPECT_TRUE(refused("/a%zz"));
  EXPECT_TRUE(refused("/a%"));
  EXPECT_TRUE(refused("/a b"));
  EXPECT_TRUE(refused("/a\tb"));
  EXPECT_TRUE(refused("/caf\xc3\xa9"));
  EXPECT_TRUE(refused("a/b"));
  EXPECT_TRUE(refused(""));
}

TEST(PathNormalize, MergeSlashes) {
  PathPolicy merge;
  merge.merge_slashes = true;
  EXPECT_EQ(norm("//a///b//", merge), "/a/b/");
  EXPECT_EQ(norm("//", merge), "/");
  EXPECT_EQ(norm("/a//../b", merge), "/b");
  // Without merging, an empty segment is a segment: ".." removes it.
  EXPECT_EQ(norm("//a///b//"), "//a///b//");
  EXPECT_EQ(norm("/a//../b"), "/a/b");
}

TEST(PathNormalize, EncodedSlashPolicy) {
  PathPolicy p;
  p.encoded_slash = SlashAction::kReject;
  EXPECT_TRUE(refused("/a%2Fb", p));
  EXPECT_TRUE(refused("/a%2fb", p));
  EXPECT_EQ(norm("/a/b", p), "/a/b");
  p.encoded_slash = SlashAction::kKeep;
  EXPECT_EQ(norm("/a%2fb", p), "/a%2Fb");
  EXPECT_EQ(norm("/a/..%2f..%2fetc", p), "/a/..%2F..%2Fetc");  // one segment, not dots
  p.encoded_slash = SlashAction::kDecode;
  EXPECT_EQ(norm("/a%2fb", p), "/a/b");
  EXPECT_EQ(norm("/a/..%2f..%2fetc", p), "/etc");
  p.merge_slashes = true;
  EXPECT_EQ(norm("/a%2F%2Fb", p), "/a/b");
}

TEST(PathNormalize, BackslashPolicy) {
  PathPolicy p;
  p.backslash = SlashAction::kReject;
  EXPECT_TRUE(refused("/a\\b", p));
  EXPECT_TRUE(refused("/a%5cb", p));
  EXPECT_TRUE(refused("/a%5Cb", p));
  p.backslash = SlashAction::kKeep;
  EXPECT_EQ(norm("/a\\..\\b", p), "/a\\..\\b");
  EXPECT_EQ(norm("/a%5c..%5cb", p), "/a%5C..%5Cb");
  p.backslash = SlashAction::kDecode;
  EXPECT_EQ(norm("/a\\..\\b", p), "/b");
  EXPECT_EQ(norm("/a%5c..%5Cb", p), "/b");
  EXPECT_EQ(norm("/admin\\..\\..\\x", p), "/x");
  // The two policies are independent.
  p.encoded_slash = SlashAction::kReject;
  EXPECT_EQ(norm("/a\\b", p), "/a/b");
  EXPECT_TRUE(refused("/a%2Fb", p));
}

TargetResult target(std::string_view method, std::string_view t, std::string_view host = "a") {
  return normalizeTarget(method, t, host, PathPolicy{});
}

TEST(TargetNormalize, OriginFormSplitsTheQueryUntouched) {
  TargetResult r = target("GET", "/x/../p%7e?q=%2e%2e/../&b=%7e#");
  EXPECT_FALSE(r.ok());  // a fragment is never part of a request-target
  r = target("GET", "/x/../p%7e?q=%2e%2e/../&b=%7e?");
  ASSERT_TRUE(r.ok()) << r.reason;
  EXPECT_EQ(r.target.form, TargetForm::kOrigin);
  EXPECT_EQ(r.target.path, "/p~");
  EXPECT_EQ(r.target.query, "?q=%2e%2e/../&b=%7e?");
  EXPECT_EQ(r.target.host, "a");
  EXPECT_EQ(r.target.original, "/x/../p%7e?q=%2e%2e/../&b=%7e?");
  r = target("GET", "/p?");
  EXPECT_EQ(r.target.query, "?");
  r = target("GET", "/p");
  EXPECT_EQ(r.target.query, "");
}

TEST(TargetNormalize, HostHeader) {
  EXPECT_EQ(target("GET", "/", "Example.COM:8080").target.host, "example.com:8080");
  EXPECT_EQ(target("GET", "/", "[2001:DB8::1]:443").target.host, "[2001:db8::1]:443");
  EXPECT_EQ(target("GET", "/", "a:").target.host, "a");  // an empty port is no port
  EXPECT_EQ(target("GET", "/", "").target.host, "");     // HTTP/1.0 without Host
  for (const char* bad : {"a b", "a:99999", "a:1x", "[::1", "[nope]", "a/b", ":80", "a@b", "a%41",
                          "[::1]x", "a:123456"}) {
    EXPECT_FALSE(target("GET", "/", bad).ok()) << bad;
  }
}

TEST(TargetNormalize, AbsoluteFormReplacesHost) {
  TargetResult r = target("GET", "http://Backend.example:8080/a/./b/../c?x=1", "other");
  ASSERT_TRUE(r.ok()) << r.reason;
  EXPECT_EQ(r.target.form, TargetForm::kAbsolute);
  EXPECT_EQ(r.target.scheme, "http");
  EXPECT_EQ(r.target.host, "backend.example:8080");
  EXPECT_EQ(r.target.path, "/a/c");
  EXPECT_EQ(r.target.query, "?x=1");
  r = target("GET", "HTTPS://[::1]", "");
  ASSERT_TRUE(r.ok()) << r.reason;
  EXPECT_EQ(r.target.scheme, "https");
  EXPECT_EQ(r.target.host, "[::1]");
  EXPECT_EQ(r.target.path, "/");
  r = target("GET", "http://h?q");
  EXPECT_EQ(r.target.path, "/");
  EXPECT_EQ(r.target.query, "?q");
  // A bad Host header does not matter when the target names the host.
  EXPECT_TRUE(target("GET", "http://h/", "bad host").ok());
  for (const char* bad : {"http://", "http:///p", "http://u:p@h/", "ftp://h/", "http:/h/", "h/p",
                          "http//h/", "http://h:x/", "http://h/%zz", "ws://h/"}) {
    EXPECT_FALSE(target("GET", bad).ok()) << bad;
  }
}

TEST(TargetNormalize, AsteriskAndAuthorityForms) {
  TargetResult r = target("OPTIONS", "*");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.target.form, TargetForm::kAsterisk);
  EXPECT_EQ(r.target.path, "*");
  EXPECT_FALSE(target("GET", "*").ok());
  EXPECT_FALSE(target("OPTIONS", "*x").ok());
  r = target("CONNECT", "Example.com:443");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.target.form, TargetForm::kAuthority);
  EXPECT_EQ(r.target.host, "example.com:443");
  EXPECT_TRUE(r.target.path.empty());
  EXPECT_FALSE(target("CONNECT", "example.com").ok());  // the port is required
  EXPECT_FALSE(target("CONNECT", "/").ok());
  EXPECT_FALSE(target("GET", "example.com:443").ok());  // authority-form is for CONNECT only
}

TEST(TargetNormalize, BadTargets) {
  for (const char* bad : {"", " /", "/a b", "/\x01", "/#frag", "/a%2", "?q", "%2F"}) {
    TargetResult r = target("GET", bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status, 400) << bad;
  }
}

}  // namespace
}  // namespace sluice::http
