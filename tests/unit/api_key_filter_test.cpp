// The `api_key` filter: keys from a header or a query parameter, the key's name forwarded,
// refusals, and the config's errors.

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "filters/api_key/api_key_filter.h"
#include "tests/unit/support/fakes.h"

namespace sluice::filters::api_key {
namespace {

class KeysFile {
 public:
  explicit KeysFile(const std::string& text) {
    path_ =
        (std::filesystem::temp_directory_path() /
         ("sluice-api-key-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++)))
            .string();
    std::ofstream(path_) << text;
  }
  ~KeysFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::string path_;
};

std::string keysText() {
  return "# test keys\n\nbilling: " + KeyStore::hashHex("key-for-billing") +
         "\nreports-v2: " + KeyStore::hashHex("key-for-reports") + "\n";
}

FilterPtr build(const std::string& toml, conf::Diagnostics& d) {
  std::string text = "name = \"keys\"\ntype = \"api_key\"\n" + toml;
  auto table = std::make_shared<toml::table>(
      toml::parse(std::string_view(text), std::string_view("/etc/sluice/test.toml")));
  conf::FilterConfig c;
  c.name = "keys";
  c.type = "api_key";
  c.options = table;
  c.pos = {"/etc/sluice/test.toml", 1, 1};
  return buildFilter(c, d);
}

FilterPtr build(const std::string& toml) {
  conf::Diagnostics d;
  FilterPtr f = build(toml, d);
  EXPECT_TRUE(f) << (d.empty() ? "" : d[0].message);
  return f;
}

struct Pass {
  testing::FakeCallbacks cb;
  RequestHead head;
  Status status;
  Pass(const FilterPtr& f, std::vector<Header> headers, std::string url = "/api") {
    head.method = "GET";
    head.url = std::move(url);
    head.headers = std::move(headers);
    auto s = f->create();
    s->setCallbacks(cb);
    status = s->onRequestHead(head);
  }
  std::string header(std::string_view name) const {
    return std::string(head.get(name).value_or("<none>"));
  }
};

TEST(ApiKeyFilter, KnownKeyPassesWithItsName) {
  KeysFile keys(keysText());
  FilterPtr f = build("keys_file = \"" + keys.path() + "\"");
  Pass r(f, {{"X-API-Key", "key-for-reports"}, {"X-API-Key-Name", "billing"}});
  EXPECT_EQ(r.status, Status::kContinue);
  EXPECT_EQ(r.cb.reply_status, 0);
  EXPECT_EQ(r.head.count("X-API-Key-Name"), 1u);
  EXPECT_EQ(r.header("X-API-Key-Name"), "reports-v2");
  EXPECT_EQ(r.header("X-API-Key"), "key-for-reports");  // strip_key is off
  EXPECT_EQ(r.cb.log_auth, "keys:allow:reports-v2");
}

TEST(ApiKeyFilter, RefusalsAnswer401) {
  KeysFile keys(keysText());
  FilterPtr f = build("keys_file = \"" + keys.path() + "\"");
  {
    Pass r(f, {{"X-API-Key-Name", "billing"}});
    EXPECT_EQ(r.status, Status::kStop);
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.reply_headers, "WWW-Authenticate: ApiKey\r\n");
    EXPECT_EQ(r.cb.log_auth, "keys:deny:missing_key");
  }
  {
    Pass r(f, {{"X-API-Key", "key-for-billin"}});
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.log_auth, "keys:deny:unknown_key");
    EXPECT_EQ(r.cb.reply_reason.find("key-for"), std::string::npos);  // never echoed
  }
  {
    Pass r(f, {{"X-API-Key", "key-for-billing"}, {"x-api-key", "key-for-reports"}});
    EXPECT_EQ(r.cb.log_auth, "keys:deny:malformed");
  }
}

TEST(ApiKeyFilter, QueryKeyIsRedactedInTheLogAndStripped) {
  KeysFile keys(keysText());
  FilterPtr f = build("keys_file = \"" + keys.path() +
                      "\"\nkey_from = \"query:api_key\"\nforward_name_header = \"X-Client\"\n"
                      "strip_key = true");
  Pass r(f, {}, "/api?a=1&api_key=key-for-billing&b=2");
  EXPECT_EQ(r.status, Status::kContinue);
  EXPECT_EQ(r.header("X-Client"), "billing");
  EXPECT_EQ(r.header("X-API-Key-Name"), "<none>");
  EXPECT_EQ(r.head.url, "/api?a=1&b=2");
  EXPECT_EQ(r.cb.log_path, "/api?a=1&api_key=REDACTED&b=2");
}

TEST(ApiKeyFilter, HeaderStrippedAndNameNotForwardedWhenOff) {
  KeysFile keys(keysText());
  FilterPtr f = build("keys_file = \"" + keys.path() +
                      "\"\nkey_from = \"header:Authorization\"\nforward_name_header = \"\"\n"
                      "strip_key = true");
  Pass r(f, {{"Authorization", "Bearer key-for-billing"}});
  EXPECT_EQ(r.status, Status::kContinue);
  EXPECT_EQ(r.header("Authorization"), "<none>");
  EXPECT_EQ(r.header("X-API-Key-Name"), "<none>");
}

TEST(ApiKeyFilter, ConfigErrors) {
  auto messages = [](const std::string& toml) {
    conf::Diagnostics d;
    EXPECT_EQ(build(toml, d), nullptr);
    std::string out;
    for (const auto& e : d) {
      out += e.message + "\n";
    }
    return out;
  };
  EXPECT_NE(messages("").find("needs 'keys_file'"), std::string::npos);
  EXPECT_NE(messages("keys_file = \"/nonexistent/keys\"").find("cannot read"), std::string::npos);
  KeysFile bad("ok: " + KeyStore::hashHex("x") + "\nbad line\nok: " + KeyStore::hashHex("y") +
               "\n");
  std::string m = messages("keys_file = \"" + bad.path() + "\"");
  EXPECT_NE(m.find(bad.path() + ":2:"), std::string::npos) << m;
  EXPECT_NE(m.find(bad.path() + ":3:"), std::string::npos) << m;
  KeysFile keys(keysText());
  EXPECT_NE(messages("keys_file = \"" + keys.path() + "\"\nkey_from = \"cookie:k\"")
                .find("\"header:NAME\" or \"query:NAME\""),
            std::string::npos);
}

}  // namespace
}  // namespace sluice::filters::api_key
