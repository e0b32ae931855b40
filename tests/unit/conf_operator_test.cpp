// The operator keys of conf/: defaults, values, and every refusal at its file:line:column.

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "conf/config.h"

namespace sluice::conf {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kBase = R"(
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
listener = "public"
pool = "app"

[[pools]]
name = "app"
backends = [ { address = "127.0.0.1:9001" } ]
)";

LoadResult load(std::string_view extra_top, std::string_view extra_end = {}) {
  std::string text(extra_top);
  text += kBase;
  text += extra_end;
  return loadString(text, "t.toml");
}

std::vector<std::string> errors(std::string_view top, std::string_view end = {}) {
  std::vector<std::string> out;
  for (const Diagnostic& d : load(top, end).diagnostics) {
    out.push_back(d.format());
  }
  return out;
}

TEST(ConfOperator, Defaults) {
  LoadResult r = load("");
  ASSERT_NE(r.config, nullptr);
  const Config& c = *r.config;
  EXPECT_EQ(c.server.drain_delay, 0ms);
  EXPECT_EQ(c.server.error_log, "stderr");
  EXPECT_EQ(c.server.access_log_format, "json");
  EXPECT_EQ(c.server.log_level, "info");
  EXPECT_TRUE(c.server.user.empty());
  EXPECT_TRUE(c.admin.read_token_file.empty());
  const ListenerConfig& l = c.listeners[0];
  EXPECT_TRUE(l.trusted_proxies.empty());
  EXPECT_EQ(l.forwarded_header, "x-forwarded-for");
  EXPECT_TRUE(l.health_path.empty());
  EXPECT_EQ(l.https_port, 443);
  const RouteConfig& route = c.routes[0];
  EXPECT_TRUE(route.access_log);
  EXPECT_FALSE(route.response_timeout.has_value());
  EXPECT_FALSE(route.idle_timeout.has_value());
  EXPECT_TRUE(route.request_headers.empty());
  const PoolConfig& p = c.pools[0];
  EXPECT_FALSE(p.sticky_cookie_secure.has_value());
  EXPECT_EQ(p.sticky_cookie_samesite, "Lax");
  EXPECT_TRUE(p.sticky_cookie_httponly);
}

TEST(ConfOperator, ReadsEveryKey) {
  LoadResult r = loadString(R"([server]
drain_delay = "5s"
access_log_format = "text"
error_log = "/var/log/sluice/error.log"
log_level = "debug"
user = "sluice"
group = "www-data"

[admin]
read_token_file = "/etc/sluice/read.token"

[[listeners]]
name = "public"
listen = "0.0.0.0:8080"
redirect_to_https = true
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
forwarded_header = "forwarded"
health_path = "/healthz"

[[listeners]]
name = "tls"
listen = "0.0.0.0:8443"
tls = { cert = "/c.crt", key = "/c.key" }

[[routes]]
listener = "tls"
pool = "app"
access_log = false
response_timeout = "2s"
idle_timeout = "3s"
[routes.request_headers]
set = { "X-Env" = "prod", "Host" = "internal" }
add = { "Via" = "sluice" }
remove = ["X-Debug"]
[routes.response_headers]
remove = ["Server"]

[[pools]]
name = "app"
backends = [ { address = "unix:/run/app.sock" }, { address = "unix:relative.sock" } ]
sticky_cookie = "s"
sticky_cookie_secure = false
sticky_cookie_samesite = "Strict"
sticky_cookie_httponly = false
)",
                            "/etc/sluice/t.toml");
  for (const Diagnostic& d : r.diagnostics) {
    ADD_FAILURE() << d.format();
  }
  ASSERT_NE(r.config, nullptr);
  const Config& c = *r.config;
  EXPECT_EQ(c.server.drain_delay, 5s);
  EXPECT_EQ(c.server.access_log_format, "text");
  EXPECT_EQ(c.server.error_log, "/var/log/sluice/error.log");
  EXPECT_EQ(c.server.log_level, "debug");
  EXPECT_EQ(c.server.user, "sluice");
  EXPECT_EQ(c.server.group, "www-data");
  EXPECT_EQ(c.admin.read_token_file, "/etc/sluice/read.token");
  const ListenerConfig& l = c.listeners[0];
  EXPECT_EQ(l.trusted_proxies, (std::vector<std::string>{"10.0.0.0/8", "fd00::/8"}));
  ASSERT_EQ(l.trusted_proxies_pos.size(), 2u);
  EXPECT_EQ(l.trusted_proxies_pos[1].line, 17u);
  EXPECT_EQ(l.forwarded_header, "forwarded");
  EXPECT_EQ(l.health_path, "/healthz");
  EXPECT_EQ(l.https_port, 8443) << "the TLS listener's port when none is on 443";
  const RouteConfig& route = c.routes[0];
  EXPECT_FALSE(route.access_log);
  EXPECT_EQ(route.response_timeout, 2s);
  EXPECT_EQ(route.idle_timeout, 3s);
  EXPECT_EQ(route.request_headers.set.size(), 2u);
  EXPECT_EQ(route.request_headers.add[0], (std::pair<std::string, std::string>("Via", "sluice")));
  EXPECT_EQ(route.request_headers.remove, std::vector<std::string>{"x-debug"});
  EXPECT_EQ(route.response_headers.remove, std::vector<std::string>{"server"});
  const PoolConfig& p = c.pools[0];
  EXPECT_EQ(p.backends[0].address.unix_path, "/run/app.sock");
  EXPECT_EQ(p.backends[0].address.text, "unix:/run/app.sock");
  // (loadString resolves relative paths against the working directory)
  EXPECT_TRUE(p.backends[1].address.unix_path.starts_with("/"));
  EXPECT_TRUE(p.backends[1].address.unix_path.ends_with("/relative.sock"));
  EXPECT_EQ(p.sticky_cookie_secure, false);
  EXPECT_EQ(p.sticky_cookie_samesite, "Strict");
  EXPECT_FALSE(p.sticky_cookie_httponly);
}

TEST(ConfOperator, HttpsPortPrefers443AndHonoursTheKey) {
  const char* two_tls = R"(
[[listeners]]
name = "a"
listen = "0.0.0.0:8443"
tls = { cert = "/c.crt", key = "/c.key" }
[[listeners]]
name = "b"
listen = "0.0.0.0:443"
tls = { cert = "/c.crt", key = "/c.key" }
)";
  LoadResult r = load("", two_tls);
  ASSERT_NE(r.config, nullptr);
  EXPECT_EQ(r.config->listeners[0].https_port, 443);
  r = load("", R"(
[[listeners]]
name = "plain"
listen = "0.0.0.0:80"
redirect_to_https = true
https_port = 4443
)");
  ASSERT_NE(r.config, nullptr);
  EXPECT_EQ(r.config->listeners[1].https_port, 4443);
}

TEST(ConfOperator, Refusals) {
  EXPECT_EQ(errors("", R"(
[[listeners]]
name = "pp"
listen = "0.0.0.0:81"
proxy_protocol = true
)"),
            std::vector<std::string>{
                "t.toml:17:18: error: 'proxy_protocol' needs 'trusted_proxies': the addresses of "
                "the load balancers whose PROXY header is believed (\"0.0.0.0/0\" believes "
                "anyone)"});
  EXPECT_EQ(errors("[server]\ngroup = \"www-data\"\n"),
            std::vector<std::string>{"t.toml:2:9: error: 'group' needs 'user': sluice drops "
                                     "privileges to both at once"});
  EXPECT_EQ(errors("[server]\nuser = \"-rf\"\n").size(), 1u);
  EXPECT_EQ(errors("[server]\naccess_log_format = \"xml\"\n"),
            std::vector<std::string>{
                "t.toml:2:21: error: 'access_log_format' must be \"json\" or \"text\", got "
                "\"xml\""});
  EXPECT_EQ(errors("", R"(
[[pools]]
name = "p"
backends = [ { address = "127.0.0.1:1" } ]
sticky_cookie = "s"
sticky_cookie_samesite = "None"
sticky_cookie_secure = false
)")
                .size(),
            1u);
  // A Unix socket is for backends, and must fit a sockaddr_un.
  EXPECT_EQ(errors("", R"(
[[listeners]]
name = "u"
listen = "unix:/run/x.sock"
)")
                .size(),
            1u);
  EXPECT_EQ(errors("", "[[pools]]\nname = \"p\"\nbackends = [ { address = \"unix:/" +
                           std::string(120, 'a') + "\" } ]\n")
                .size(),
            1u);
  // A TLS pool needs sni to reach a Unix socket.
  EXPECT_EQ(errors("", R"(
[[pools]]
name = "p"
backends = [ { address = "unix:/run/x.sock" } ]
tls = { verify = true }
)")
                .size(),
            1u);
  EXPECT_EQ(errors("", R"(
[[listeners]]
name = "plain"
listen = "0.0.0.0:81"
https_port = 8443
)")
                .size(),
            1u);
}

TEST(ConfOperator, HeaderRulesRefuseWhatSluiceManages) {
  std::vector<std::string> e = errors("", R"(
[[routes]]
listener = "public"
path_prefix = "/x"
pool = "app"
[routes.request_headers]
set = { "Content-Length" = "5", "Bad Name" = "x", "X-Ok" = 3 }
remove = ["Sec-WebSocket-Key", "Transfer-Encoding"]
add = { "X-Line" = "a\nb" }
)");
  ASSERT_EQ(e.size(), 6u) << testing::PrintToString(e);
  EXPECT_NE(e[0].find("'Content-Length' is managed by sluice"), std::string::npos) << e[0];
  EXPECT_NE(e[1].find("\"Bad Name\" is not a valid HTTP header name"), std::string::npos) << e[1];
  EXPECT_NE(e[2].find("must have a string value, got integer"), std::string::npos) << e[2];
}

TEST(ConfOperator, PartialConfigComesWithTheErrors) {
  LoadResult r = loadString(R"([server]
workrs = 2
[[listeners]]
name = "public"
listen = "127.0.0.1:8443"
tls = { cert = "/missing.crt", key = "/missing.key" }
)",
                            "t.toml");
  EXPECT_EQ(r.config, nullptr);
  ASSERT_NE(r.partial, nullptr);
  ASSERT_EQ(r.partial->listeners.size(), 1u);
  ASSERT_TRUE(r.partial->listeners[0].tls.has_value());
  EXPECT_EQ(r.partial->listeners[0].tls->certificates[0].cert, "/missing.crt");
}

}  // namespace
}  // namespace sluice::conf

namespace sluice::conf {
namespace {

// docs/configuration.md names every key conf/examples/full.toml sets (the filters' own keys have
// their pages in docs/filters/).
TEST(ConfOperator, ReferenceNamesEveryKeyOfTheFullExample) {
  std::ifstream full_in(SLUICE_SOURCE_DIR "/conf/examples/full.toml");
  std::string full((std::istreambuf_iterator<char>(full_in)), std::istreambuf_iterator<char>());
  full = full.substr(0, full.find("\n[[filters]]"));
  std::ifstream doc_in(SLUICE_SOURCE_DIR "/docs/configuration.md");
  const std::string doc((std::istreambuf_iterator<char>(doc_in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(doc.empty());
  // Keys are what is assigned outside comments, and the commented-out examples ("# user = ").
  static const std::regex kKey(R"((?:^|[{,] *)([a-z_]+) = )");
  static const std::regex kCommentedKey(R"(^# ([a-z_]+) = )");
  size_t keys = 0;
  std::istringstream in(full);
  for (std::string line; std::getline(in, line);) {
    std::smatch commented;
    if (std::regex_search(line, commented, kCommentedKey)) {
      line = line.substr(2);
    }
    line = line.substr(0, line.find(" #"));
    line = line.starts_with("#") ? "" : line;
    for (auto it = std::sregex_iterator(line.begin(), line.end(), kKey);
         it != std::sregex_iterator(); ++it) {
      const std::string key = (*it)[1];
      ++keys;
      EXPECT_NE(doc.find("`" + key + "`"), std::string::npos) << key;
    }
  }
  EXPECT_GT(keys, 80u);
}

}  // namespace
}  // namespace sluice::conf
