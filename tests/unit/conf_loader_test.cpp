// loadString / loadFile: the schema, every error at its file:line:column, cross-references,
// includes, and the shipped example configs.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "conf/config.h"

// Expected messages are long literals split over lines, not missing commas.
// NOLINTBEGIN(bugprone-suspicious-missing-comma)

namespace sluice::conf {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Raw strings in these tests start with a newline for readability; line 1 is the line after it.
std::string text(std::string_view raw) {
  if (!raw.empty() && raw.front() == '\n') {
    raw.remove_prefix(1);
  }
  return std::string(raw);
}

LoadResult load(std::string_view raw, const FilterValidator& validate = {}) {
  return loadString(text(raw), "t.toml", validate);
}

std::vector<std::string> formatted(const Diagnostics& diagnostics) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diagnostics) {
    out.push_back(d.format());
  }
  return out;
}

std::vector<std::string> errors(std::string_view raw, const FilterValidator& validate = {}) {
  const LoadResult result = load(raw, validate);
  EXPECT_EQ(result.config == nullptr, !result.diagnostics.empty());
  return formatted(result.diagnostics);
}

std::shared_ptr<const Config> good(std::string_view raw, const FilterValidator& validate = {}) {
  LoadResult result = load(raw, validate);
  EXPECT_EQ(formatted(result.diagnostics), std::vector<std::string>());
  EXPECT_NE(result.config, nullptr);
  return result.config;
}

// A directory of config files, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "sluice-conf-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `raw` (see text()) to `relative` and returns the file's full path.
  std::string write(const std::string& relative, std::string_view raw) const {
    const fs::path file = path_ / relative;
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text(raw);
    return file.string();
  }
  std::string at(const std::string& relative) const { return (path_ / relative).string(); }

 private:
  fs::path path_;
};

// Appended to the snippets of the table-driven test so that each is a complete config.
constexpr std::string_view kRest = R"(
[[listeners]]
name = "base"
listen = "127.0.0.1:18080"
[[routes]]
listener = "base"
pool = "base"
[[pools]]
name = "base"
backends = [{ address = "127.0.0.1:19001" }]
)";

// ---------------------------------------------------------------------------------------------
// Good configs

TEST(ConfLoader, MinimalConfigGetsDefaults) {
  const auto config = good(R"(
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
listener = "public"
pool = "app"

[[pools]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->path, "t.toml");
  EXPECT_EQ(config->files, std::vector<std::string>{"t.toml"});
  EXPECT_EQ(config->server.workers, 0u);
  EXPECT_EQ(config->server.access_log, "stdout");
  EXPECT_EQ(config->admin.listen.text, "127.0.0.1:9901");
  ASSERT_EQ(config->listeners.size(), 1u);
  const ListenerConfig& listener = config->listeners[0];
  EXPECT_EQ(listener.listen.host, "127.0.0.1");
  EXPECT_EQ(listener.listen.port, 8080);
  EXPECT_EQ(listener.header_timeout, 10s);
  EXPECT_EQ(listener.max_header_bytes, 32u * 1024);
  EXPECT_FALSE(listener.tls.has_value());
  EXPECT_EQ(listener.pos.line, 1u);
  ASSERT_EQ(config->routes.size(), 1u);
  const RouteConfig& route = config->routes[0];
  EXPECT_EQ(route.name, "0");
  EXPECT_EQ(route.host, "*");
  EXPECT_EQ(route.path_prefix, "/");
  EXPECT_FALSE(route.websocket.enabled);
  EXPECT_EQ(route.websocket.max_message_bytes, 1024u * 1024);
  EXPECT_EQ(route.pos.line, 5u);
  ASSERT_EQ(config->pools.size(), 1u);
  const PoolConfig& pool = config->pools[0];
  EXPECT_EQ(pool.balance, Balance::kRoundRobin);
  EXPECT_EQ(pool.backends.at(0).weight, 1u);
  EXPECT_EQ(pool.backends.at(0).pos.line, 11u);
  EXPECT_EQ(pool.backends.at(0).pos.column, 13u);
  EXPECT_FALSE(pool.health.has_value());
  EXPECT_FALSE(pool.tls.has_value());
}

TEST(ConfLoader, ReadsEveryKey) {
  const auto config = good(R"(
[server]
workers = 8
max_connections = 5000
shutdown_timeout = "1m30s"
access_log = "off"

[admin]
listen = "[::1]:9000"
token_file = "/etc/sluice/token"

[[listeners]]
name = "tls"
listen = "0.0.0.0:8443"
header_timeout = "5s"
idle_timeout = "2m"
max_header_bytes = "64KiB"
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]
tls = { cert = "/c/a.crt", key = "/c/a.key", min_version = "1.3", alpn = [], client_ca = "/c/ca.pem", handshake_timeout = "3s", hsts = "max-age=60" }

[[listeners]]
name = "plain"
listen = "localhost:8080"
redirect_to_https = true

[[routes]]
name = "ws"
listener = "tls"
host = "*.Example.COM"
path_prefix = "/ws/"
pool = "app"
filters = ["b", "a"]
max_body_bytes = 0
[routes.websocket]
enabled = true
max_message_bytes = 4096
ping_interval = "0s"
pong_timeout = "250ms"
idle_timeout = "1h"
validate_utf8 = false

[[routes]]
listener = "plain"
pool = "app"

[[pools]]
name = "app"
backends = [{ address = "10.0.0.1:9001", weight = 0 }, { address = "app.internal:9002", weight = 1000 }]
balance = "consistent_hash"
hash_key = "header:X-User"
hash_balance_factor = 1
sticky_cookie = "srv"
connect_timeout = "1s"
response_timeout = "2s"
drain_timeout = "0s"
rebalance = { max_per_second = 7 }
keepalive_connections = 0
keepalive_timeout = "10s"
health = { type = "tcp", interval = "1s", timeout = "500ms", healthy_threshold = 1, unhealthy_threshold = 5, expect_status = "2xx", path = "/h" }
tls = { ca = "/c/b.pem", verify = false, sni = "App.Internal", cert = "/c/c.crt", key = "/c/c.key" }

[[filters]]
name = "a"
type = "origin"
[[filters]]
name = "b"
type = "message_limits"
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->server.workers, 8u);
  EXPECT_EQ(config->server.max_connections, 5000u);
  EXPECT_EQ(config->server.shutdown_timeout, 90s);
  EXPECT_EQ(config->server.access_log, "off");
  EXPECT_EQ(config->admin.listen.host, "::1");
  EXPECT_TRUE(config->admin.listen.ipv6);
  EXPECT_EQ(config->admin.token_file, "/etc/sluice/token");

  const ListenerConfig& tls = config->listeners.at(0);
  EXPECT_EQ(tls.header_timeout, 5s);
  EXPECT_EQ(tls.idle_timeout, 2min);
  EXPECT_EQ(tls.max_header_bytes, 64u * 1024);
  EXPECT_TRUE(tls.proxy_protocol);
  ASSERT_TRUE(tls.tls.has_value());
  ASSERT_EQ(tls.tls->certificates.size(), 1u);
  EXPECT_EQ(tls.tls->certificates[0].cert, "/c/a.crt");
  EXPECT_EQ(tls.tls->certificates[0].key, "/c/a.key");
  EXPECT_EQ(tls.tls->min_version, "1.3");
  EXPECT_TRUE(tls.tls->alpn.empty());
  EXPECT_EQ(tls.tls->client_ca, "/c/ca.pem");
  EXPECT_EQ(tls.tls->verify, "require");  // the default once client_ca is set
  EXPECT_EQ(tls.tls->handshake_timeout, 3s);
  EXPECT_EQ(tls.tls->hsts, "max-age=60");
  EXPECT_EQ(config->listeners.at(1).listen.host, "localhost");
  EXPECT_TRUE(config->listeners.at(1).redirect_to_https);

  const RouteConfig& ws = config->routes.at(0);
  EXPECT_EQ(ws.name, "ws");
  EXPECT_EQ(ws.host, "*.example.com");
  EXPECT_EQ(ws.path_prefix, "/ws/");
  EXPECT_EQ(ws.max_body_bytes, 0u);
  EXPECT_EQ(ws.listener_index, 0u);
  EXPECT_EQ(ws.pool_index, 0u);
  EXPECT_EQ(ws.filter_indices, (std::vector<size_t>{1, 0}));
  EXPECT_TRUE(ws.websocket.enabled);
  EXPECT_EQ(ws.websocket.max_message_bytes, 4096u);
  EXPECT_EQ(ws.websocket.ping_interval, 0s);
  EXPECT_EQ(ws.websocket.pong_timeout, 250ms);
  EXPECT_EQ(ws.websocket.idle_timeout, 1h);
  EXPECT_FALSE(ws.websocket.validate_utf8);
  EXPECT_EQ(config->routes.at(1).name, "1");
  EXPECT_EQ(config->routes.at(1).listener_index, 1u);

  const PoolConfig& pool = config->pools.at(0);
  EXPECT_EQ(pool.backends.at(0).weight, 0u);
  EXPECT_EQ(pool.backends.at(1).address.host, "app.internal");
  EXPECT_EQ(pool.backends.at(1).weight, 1000u);
  EXPECT_EQ(pool.balance, Balance::kConsistentHash);
  EXPECT_EQ(pool.balance_name, "consistent_hash");
  EXPECT_EQ(pool.hash_key.text, "header:X-User");
  EXPECT_EQ(pool.hash_key.kind, KeySource::Kind::kHeader);
  EXPECT_EQ(pool.hash_key.name, "X-User");
  EXPECT_EQ(pool.hash_balance_factor, 1.0);
  EXPECT_EQ(pool.sticky_cookie, "srv");
  EXPECT_EQ(pool.connect_timeout, 1s);
  EXPECT_EQ(pool.response_timeout, 2s);
  EXPECT_EQ(pool.drain_timeout, 0s);
  EXPECT_EQ(pool.rebalance_max_per_second, 7u);
  EXPECT_EQ(pool.keepalive_connections, 0u);
  EXPECT_EQ(pool.keepalive_timeout, 10s);
  ASSERT_TRUE(pool.health.has_value());
  EXPECT_EQ(pool.health->type, "tcp");
  EXPECT_EQ(pool.health->path, "/h");
  EXPECT_EQ(pool.health->interval, 1s);
  EXPECT_EQ(pool.health->timeout, 500ms);
  EXPECT_EQ(pool.health->healthy_threshold, 1u);
  EXPECT_EQ(pool.health->unhealthy_threshold, 5u);
  EXPECT_EQ(pool.health->expect_status_min, 200);
  EXPECT_EQ(pool.health->expect_status_max, 299);
  ASSERT_TRUE(pool.tls.has_value());
  EXPECT_EQ(pool.tls->ca, "/c/b.pem");
  EXPECT_FALSE(pool.tls->verify);
  EXPECT_EQ(pool.tls->sni, "app.internal");
  EXPECT_EQ(pool.tls->cert, "/c/c.crt");
  EXPECT_EQ(pool.tls->key, "/c/c.key");
  EXPECT_EQ(config->filters.at(1).type, "message_limits");
}

TEST(ConfLoader, ListenerTlsTakesSeveralCertificates) {
  const auto config = good(R"(
[[listeners]]
name = "public"
listen = "127.0.0.1:8443"
[listeners.tls]
certificates = [
  { cert = "/a.crt", key = "/a.key" },
  { cert = "/b.crt", key = "/b.key" },
]
)");
  ASSERT_NE(config, nullptr);
  const ListenerTls& tls = *config->listeners.at(0).tls;
  ASSERT_EQ(tls.certificates.size(), 2u);
  EXPECT_EQ(tls.certificates[1].cert, "/b.crt");
  EXPECT_EQ(tls.certificates[1].pos.line, 7u);
  EXPECT_EQ(tls.certificates[1].pos.column, 3u);
  EXPECT_EQ(tls.pos.line, 4u);
  EXPECT_EQ(tls.verify, "");
  EXPECT_EQ(tls.alpn, std::vector<std::string>{"http/1.1"});
}

TEST(ConfLoader, RouteHostsAreLowerCased) {
  const auto config = good(R"(
[[listeners]]
name = "l"
listen = "127.0.0.1:8080"
[[routes]]
listener = "l"
host = "API.Example.com"
pool = "p"
[[routes]]
listener = "l"
host = "*.EXAMPLE.com"
pool = "p"
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->routes[0].host, "api.example.com");
  EXPECT_EQ(config->routes[1].host, "*.example.com");
}

TEST(ConfLoader, ExpectStatusForms) {
  struct Case {
    std::string value;
    uint16_t min;
    uint16_t max;
  };
  const std::vector<Case> cases = {
      {"200", 200, 200},     {"\"204\"", 204, 204},     {"\"2xx\"", 200, 299},
      {"\"3XX\"", 300, 399}, {"\"200-399\"", 200, 399}, {"\"100-599\"", 100, 599},
  };
  for (const Case& c : cases) {
    const auto config = good(std::string(R"(
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]
health = { expect_status = )") +
                             c.value + " }\n");
    ASSERT_NE(config, nullptr) << c.value;
    EXPECT_EQ(config->pools[0].health->expect_status_min, c.min) << c.value;
    EXPECT_EQ(config->pools[0].health->expect_status_max, c.max) << c.value;
  }
}

TEST(ConfLoader, HashKeysAndCookieNames) {
  for (const char* key : {"source_ip", "header:X-Session-Id", "cookie:sid", "query:user"}) {
    const auto config = good(std::string(R"(
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]
hash_key = ")") + key + "\"\n");
    ASSERT_NE(config, nullptr) << key;
    EXPECT_EQ(config->pools[0].hash_key.text, key);
  }
}

TEST(ConfLoader, PathsResolveAgainstTheFilesDirectory) {
  TempDir dir;
  const std::string main = dir.write("etc/sluice.toml", R"(
[server]
access_log = "logs/access.log"
[admin]
token_file = "../secrets/token"
[[listeners]]
name = "l"
listen = "127.0.0.1:8443"
tls = { cert = "certs/a.crt", key = "/abs/a.key", client_ca = "./ca.pem" }
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]
tls = { ca = "ca/backends.pem", cert = "c.crt", key = "c.key" }
)");
  const LoadResult result = loadFile(main);
  ASSERT_EQ(formatted(result.diagnostics), std::vector<std::string>());
  const Config& config = *result.config;
  EXPECT_EQ(config.path, main);
  EXPECT_EQ(config.server.access_log, dir.at("etc/logs/access.log"));
  EXPECT_EQ(config.admin.token_file, dir.at("secrets/token"));
  const ListenerTls& tls = *config.listeners[0].tls;
  EXPECT_EQ(tls.certificates[0].cert, dir.at("etc/certs/a.crt"));
  EXPECT_EQ(tls.certificates[0].key, "/abs/a.key");
  EXPECT_EQ(tls.client_ca, dir.at("etc/ca.pem"));
  EXPECT_EQ(config.pools[0].tls->ca, dir.at("etc/ca/backends.pem"));
  EXPECT_EQ(config.pools[0].tls->key, dir.at("etc/c.key"));
}

TEST(ConfLoader, AccessLogKeywordsAreNotPaths) {
  for (const char* value : {"stdout", "stderr", "off"}) {
    const auto config = good(std::string("[server]\naccess_log = \"") + value + "\"\n");
    ASSERT_NE(config, nullptr);
    EXPECT_EQ(config->server.access_log, value);
  }
}

// ---------------------------------------------------------------------------------------------
// One problem per snippet, reported at its exact position.

struct ErrorCase {
  std::string snippet;  // followed by kRest
  std::vector<std::string> expected;
};

TEST(ConfLoader, ReportsEachBadValueAtItsPosition) {
  const std::vector<ErrorCase> cases = {
      // [server]
      {"[server]\nworkers = \"4\"",
       {"t.toml:2:11: error: 'workers' must be an integer, got string"}},
      {"[server]\nworkers = 2000",
       {"t.toml:2:11: error: 'workers' must be between 0 and 1024, got 2000"}},
      {"[server]\nworkers = -1",
       {"t.toml:2:11: error: 'workers' must be between 0 and 1024, got -1"}},
      {"[server]\nworkers = 1.5", {"t.toml:2:11: error: 'workers' must be an integer, got float"}},
      {"[server]\nmax_connections = 0",
       {"t.toml:2:19: error: 'max_connections' must be between 1 and 100000000, got 0"}},
      {"[server]\nshutdown_timeout = 30",
       {"t.toml:2:20: error: 'shutdown_timeout' must be a duration string, got integer; use a "
        "string with a unit, e.g. \"30s\""}},
      {"[server]\nshutdown_timeout = \"30\"",
       {"t.toml:2:20: error: 'shutdown_timeout' has an invalid duration \"30\": missing unit after "
        "\"30\" (use ms, s, m or h, e.g. \"30s\")"}},
      {"[server]\naccess_log = \"\"", {"t.toml:2:14: error: 'access_log' must not be empty"}},
      {"[server]\nwokers = 3",
       {"t.toml:2:1: error: unknown key 'wokers' in [server]; did you mean 'workers'?"}},
      {"server = 1", {"t.toml:1:10: error: 'server' must be a table, got integer"}},
      // [admin]
      {"[admin]\nlisten = \"example.com:9901\"",
       {"t.toml:2:10: error: 'listen' must listen on an IP address or localhost, got host name "
        "\"example.com\""}},
      {"[admin]\nlisten = \"127.0.0.1\"",
       {"t.toml:2:10: error: 'listen' has an invalid address \"127.0.0.1\": missing port (e.g. "
        "\"127.0.0.1:8080\")"}},
      {"[admin]\ntoken = \"/t\"",
       {"t.toml:2:1: error: unknown key 'token' in [admin]; did you mean 'token_file'?"}},
      {"[admin]\ntoken_file = \"a\\u0001b\"",
       {"t.toml:2:14: error: 'token_file' must not contain control characters"}},
      // [[listeners]]
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nidel_timeout = \"30s\"",
       {"t.toml:4:1: error: unknown key 'idel_timeout' in [[listeners]]; did you mean "
        "'idle_timeout'?"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nheader_timeout = \"0s\"",
       {"t.toml:4:18: error: 'header_timeout' must be longer than 0s"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_header_bytes = 100",
       {"t.toml:4:20: error: 'max_header_bytes' must be between 512 and 1048576 bytes, got 100"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_header_bytes = \"16XB\"",
       {"t.toml:4:20: error: 'max_header_bytes' has an invalid size \"16XB\": unknown unit \"XB\" "
        "(use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_header_bytes = -5",
       {"t.toml:4:20: error: 'max_header_bytes' must not be negative"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_header_bytes = true",
       {"t.toml:4:20: error: 'max_header_bytes' must be a size (bytes, or a string like "
        "\"16KiB\"), got boolean"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nredirect_to_https = \"yes\"",
       {"t.toml:4:21: error: 'redirect_to_https' must be a boolean (true or false), got string"}},
      {"[[listeners]]\nname = \"my listener\"\nlisten = \"127.0.0.1:1\"",
       {"t.toml:2:8: error: 'name' must be a name made of letters, digits, '_', '-', '.' and ':' "
        "(at most 128), got \"my listener\""}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"::1:80\"",
       {"t.toml:3:10: error: 'listen' has an invalid address \"::1:80\": IPv6 addresses need "
        "brackets (e.g. \"[::1]:8443\")"}},
      {"[[listeners]]\nname = \"a\"",
       {"t.toml:1:1: error: missing required key 'listen' in [[listeners]]"}},
      {"[filters]\nname = \"a\"",
       {"t.toml:1:1: error: 'filters' must be an array of tables, got table; write "
        "[[filters]], not [filters]"}},
      {"filters = [1]", {"t.toml:1:12: error: 'filters' entries must be tables, got integer"}},
      // [listeners.tls]
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\nmin_version = "
       "\"1.3\"",
       {"t.toml:4:1: error: [listeners.tls] needs a certificate: 'cert' and 'key', or "
        "'certificates'"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ntls = { cert = \"a.crt\" }",
       {"t.toml:4:7: error: missing required key 'key' in [listeners.tls]"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\ncertificates = [{ cert = \"c\", key = \"d\" }]",
       {"t.toml:7:16: error: 'cert'/'key' and 'certificates' are mutually exclusive; list every "
        "certificate in 'certificates'"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncertificates = []",
       {"t.toml:5:16: error: 'certificates' must list at least one certificate"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncertificates = [{ "
       "cert = \"c\", key = \"d\", chain = \"e\" }]",
       {"t.toml:5:42: error: unknown key 'chain' in [[listeners.tls.certificates]]"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\nmin_version = \"1.1\"",
       {"t.toml:7:15: error: 'min_version' must be \"1.2\" or \"1.3\", got \"1.1\"; did you mean "
        "'1.2'?"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\nmin_version = 1.3",
       {"t.toml:7:15: error: 'min_version' must be a string, got float"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\nalpn = [\"http/1.1\", \"h2\"]",
       {"t.toml:7:21: error: 'alpn' entries must be \"http/1.1\" or \"http/1.0\" (sluice speaks "
        "HTTP/1.x), got \"h2\""}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\nverify = \"require\"",
       {"t.toml:7:10: error: 'verify' needs 'client_ca', the CA file that client certificates are "
        "checked against"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\nclient_ca = \"ca\"\nverify = \"sometimes\"",
       {"t.toml:8:10: error: 'verify' must be \"require\" or \"optional\", got \"sometimes\""}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[listeners.tls]\ncert = \"a\"\nkey "
       "= "
       "\"b\"\nhsts = \"max-age=1\\r\\nX: y\"",
       {"t.toml:7:8: error: 'hsts' must not contain control characters"}},
      {"[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nredirect_to_https = true\ntls = { "
       "cert = \"a\", key = \"b\" }",
       {"t.toml:4:21: error: 'redirect_to_https' is for plain listeners; this one has "
        "[listeners.tls]"}},
      // [[routes]]
      {"[[routes]]\nlistener = \"base\"\npath_prefix = \"/x\"",
       {"t.toml:1:1: error: missing required key 'pool' in [[routes]]"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = \"api\"",
       {"t.toml:4:15: error: 'path_prefix' must start with '/', got \"api\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = \"/a b\"",
       {"t.toml:4:15: error: 'path_prefix' must be a path without spaces, control characters, '?' "
        "or '#', got \"/a b\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\nhost = \"Example.com:80\"",
       {"t.toml:4:8: error: 'host' must not contain a port (routes match the Host header without "
        "its port), got \"Example.com:80\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\nhost = \"a.*.com\"",
       {"t.toml:4:8: error: 'host' may only use a wildcard as a leading \"*.\" (\"*.example.com\") "
        "or alone (\"*\"), got \"a.*.com\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\nhost = \"exa mple.com\"",
       {"t.toml:4:8: error: 'host' must not contain spaces, got \"exa mple.com\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\nhost = \"-x.com\"",
       {"t.toml:4:8: error: 'host' must be a host name, \"*.suffix\" or \"*\", got \"-x.com\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\nhost = \"\"",
       {"t.toml:4:8: error: 'host' is empty, got \"\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = \"/x\"\nfilters = "
       "\"origin\"",
       {"t.toml:5:11: error: 'filters' must be an array of strings, got string"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = \"/x\"\nfilters = [\"\"]",
       {"t.toml:5:12: error: 'filters' entries must not be empty"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = \"/x\"\nmax_body_bytes = "
       "\"1.5GiB\"",
       {"t.toml:5:18: error: 'max_body_bytes' has an invalid size \"1.5GiB\": fractions are not "
        "supported; use a smaller unit (\"1536KiB\")"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = "
       "\"/x\"\n[routes.websocket]\n"
       "enabled = \"yes\"",
       {"t.toml:6:11: error: 'enabled' must be a boolean (true or false), got string"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = "
       "\"/x\"\n[routes.websocket]\n"
       "max_message_bytes = 0",
       {"t.toml:6:21: error: 'max_message_bytes' must be between 1 and 9223372036854775807 bytes, "
        "got 0"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = "
       "\"/x\"\n[routes.websocket]\n"
       "pong_timeout = \"0s\"",
       {"t.toml:6:16: error: 'pong_timeout' must be longer than 0s"}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = "
       "\"/x\"\n[routes.websocket]\n"
       "ping_interval = 30",
       {"t.toml:6:17: error: 'ping_interval' must be a duration string, got integer; use a string "
        "with a unit, e.g. \"30s\""}},
      {"[[routes]]\nlistener = \"base\"\npool = \"base\"\npath_prefix = \"/x\"\nwebsocket.enable = "
       "true",
       {"t.toml:5:11: error: unknown key 'enable' in [routes.websocket]; did you mean 'enabled'?"}},
      // [[pools]]
      {"[[pools]]\nname = \"p\"\nbackends = []",
       {"t.toml:3:12: error: 'backends' must list at least one backend"}},
      {"[[pools]]\nname = \"p\"\nbackends = [\"127.0.0.1:9001\"]",
       {"t.toml:3:13: error: 'backends' entries must be tables, got string"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"127.0.0.1:9001\", weight = 1001 }]",
       {"t.toml:3:52: error: 'weight' must be between 0 and 1000, got 1001"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ adress = \"127.0.0.1:9001\" }]",
       {"t.toml:3:13: error: missing required key 'address' in [[pools.backends]]",
        "t.toml:3:15: error: unknown key 'adress' in [[pools.backends]]; did you mean 'address'?"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }, { address = \"A:1\" }]",
       {"t.toml:3:46: error: backend \"A:1\" is already listed in this pool at t.toml:3:25"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nbalance = \"least-conn\"",
       {"t.toml:4:11: error: 'balance' must be \"round_robin\", \"least_conn\", \"random\" or "
        "\"consistent_hash\", got \"least-conn\"; did you mean 'least_conn'?"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nhash_key = \"header:\"",
       {"t.toml:4:12: error: 'hash_key' must be \"source_ip\", \"header:NAME\", \"cookie:NAME\" or "
        "\"query:NAME\", got \"header:\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nhash_key = \"ip\"",
       {"t.toml:4:12: error: 'hash_key' must be \"source_ip\", \"header:NAME\", \"cookie:NAME\" or "
        "\"query:NAME\", got \"ip\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nhash_balance_factor = -1",
       {"t.toml:4:23: error: 'hash_balance_factor' must be 0 (off) or more"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nhash_balance_factor = "
       "\"0.25\"",
       {"t.toml:4:23: error: 'hash_balance_factor' must be a number, got string"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nsticky_cookie = \"a b\"",
       {"t.toml:4:17: error: 'sticky_cookie' must be a cookie name (letters, digits and "
        "!#$%&'*+-.^_`|~), got \"a b\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nconnect_timeout = \"5x\"",
       {"t.toml:4:19: error: 'connect_timeout' has an invalid duration \"5x\": unknown unit \"x\" "
        "(use ms, s, m or h)"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nrebalance = { max_per_second "
       "= -1 }",
       {"t.toml:4:32: error: 'max_per_second' must be between 0 and 100000, got -1"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nrebalance = 5",
       {"t.toml:4:13: error: 'rebalance' must be a table, got integer"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nrebalance = {}",
       {"t.toml:4:13: error: missing required key 'max_per_second' in [pools.rebalance]"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\nkeepalive_connections = 10001",
       {"t.toml:4:25: error: 'keepalive_connections' must be between 0 and 10000, got 10001"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.health]\ntype = "
       "\"udp\"",
       {"t.toml:5:8: error: 'type' must be \"http\" or \"tcp\", got \"udp\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.health]\nexpect_status "
       "= 600",
       {"t.toml:5:17: error: 'expect_status' must be a status (200), a class (\"2xx\") or a range "
        "(\"200-399\") of codes from 100 to 599, got 600"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.health]\nexpect_status "
       "= \"399-200\"",
       {"t.toml:5:17: error: 'expect_status' must be a status (200), a class (\"2xx\") or a range "
        "(\"200-399\") of codes from 100 to 599, got \"399-200\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.health]\nexpect_status "
       "= true",
       {"t.toml:5:17: error: 'expect_status' must be a status (200), a class (\"2xx\") or a range "
        "(\"200-399\") of codes from 100 to 599, got boolean"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.health]\n"
       "healthy_threshold = 0",
       {"t.toml:5:21: error: 'healthy_threshold' must be between 1 and 1000, got 0"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.health]\npath = \"h\"",
       {"t.toml:5:8: error: 'path' must start with '/', got \"h\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.tls]\ncert = \"c\"",
       {"t.toml:4:1: error: [pools.tls] needs both 'cert' and 'key' for a client certificate, or "
        "neither"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.tls]\nverify = \"yes\"",
       {"t.toml:5:10: error: 'verify' must be a boolean (true or false), got string"}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.tls]\nsni = \"a b\"",
       {"t.toml:5:7: error: 'sni' must be a host name, got \"a b\""}},
      {"[[pools]]\nname = \"p\"\nbackends = [{ address = \"a:1\" }]\n[pools.tls]\nverfy = false",
       {"t.toml:5:1: error: unknown key 'verfy' in [pools.tls]; did you mean 'verify'?"}},
      // [[filters]]
      {"[[filters]]\nname = \"x\"",
       {"t.toml:1:1: error: missing required key 'type' in [[filters]]"}},
      {"[[filters]]\nname = \"x\"\ntype = 3",
       {"t.toml:3:8: error: 'type' must be a string, got integer"}},
      {"[[filters]]\nname = \"x\"\ntype = \"\"", {"t.toml:3:8: error: 'type' must not be empty"}},
      // top level
      {"[servr]\nworkers = 1",
       {"t.toml:1:2: error: unknown key 'servr' at top level; did you mean 'server'?"}},
      {"listener = 1",
       {"t.toml:1:1: error: unknown key 'listener' at top level; did you mean "
        "'listeners'?"}},
      {"include = 5",
       {"t.toml:1:11: error: 'include' must be an array of file names or patterns, got integer"}},
      {"include = [\"\"]", {"t.toml:1:12: error: 'include' entries must not be empty"}},
      {"include = [\"no-such-dir-*/*.toml\", 1]",
       {"t.toml:1:36: error: 'include' entries must be strings, got integer"}},
      // TOML syntax
      {"[server\nworkers = 1",
       {"t.toml:1:8: error: TOML syntax error in table header: expected ']', saw '\\n'"}},
  };
  for (const ErrorCase& c : cases) {
    EXPECT_EQ(errors(c.snippet + std::string(kRest)), c.expected) << c.snippet;
  }
}

// ---------------------------------------------------------------------------------------------
// Several problems at once, across tables

TEST(ConfLoader, ReportsEveryErrorInFileOrder) {
  EXPECT_EQ(errors(R"(
[server]
workers = "four"
max_conections = 10

[[listeners]]
name = "public"
listen = "0.0.0.0:80800"
idel_timeout = "30s"

[[routes]]
listener = "publc"
pool = "app"
path_prefix = "ws"

[[pools]]
name = "app"
backends = [{ address = "127.0.0.1:9001", weight = -1 }]
balance = "roundrobin"
)"),
            (std::vector<std::string>{
                "t.toml:2:11: error: 'workers' must be an integer, got string",
                "t.toml:3:1: error: unknown key 'max_conections' in [server]; did you mean "
                "'max_connections'?",
                "t.toml:7:10: error: 'listen' has an invalid address \"0.0.0.0:80800\": port must "
                "be between 1 and 65535, got 80800",
                "t.toml:8:1: error: unknown key 'idel_timeout' in [[listeners]]; did you mean "
                "'idle_timeout'?",
                "t.toml:11:12: error: unknown listener 'publc'; did you mean 'public'?",
                "t.toml:13:15: error: 'path_prefix' must start with '/', got \"ws\"",
                "t.toml:17:52: error: 'weight' must be between 0 and 1000, got -1",
                "t.toml:18:11: error: 'balance' must be \"round_robin\", \"least_conn\", "
                "\"random\" or \"consistent_hash\", got \"roundrobin\"; did you mean "
                "'round_robin'?",
            }));
}

TEST(ConfLoader, ReportsDanglingReferencesWithSuggestions) {
  EXPECT_EQ(errors(R"(
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
listener = "pubic"
pool = "application"
filters = ["orign", "ratelimit"]

[[pools]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]

[[filters]]
name = "origin"
type = "origin"
)"),
            (std::vector<std::string>{
                "t.toml:6:12: error: unknown listener 'pubic'; did you mean 'public'?",
                "t.toml:7:8: error: unknown pool 'application'",
                "t.toml:8:12: error: unknown filter 'orign'; did you mean 'origin'?",
                "t.toml:8:21: error: unknown filter 'ratelimit'",
            }));
}

TEST(ConfLoader, ReportsDuplicatesAtTheSecondWithTheFirst) {
  EXPECT_EQ(errors(R"(
[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "a"
listen = "127.0.0.1:8080"
[[listeners]]
name = "a"
listen = "127.0.0.1:8081"
[[listeners]]
name = "b"
listen = "127.0.0.1:8080"
[[listeners]]
name = "c"
listen = "127.0.0.1:9901"

[[routes]]
name = "r"
listener = "a"
pool = "p"
[[routes]]
name = "r"
listener = "a"
host = "x.com"
pool = "p"
[[routes]]
listener = "a"
pool = "p"
filters = ["f", "f"]

[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]

[[filters]]
name = "f"
type = "origin"
[[filters]]
name = "f"
type = "origin"
)"),
            (std::vector<std::string>{
                "t.toml:8:8: error: listener 'a' is already defined at t.toml:5:8",
                "t.toml:12:10: error: listen address \"127.0.0.1:8080\" is already used by "
                "listener 'a' at t.toml:6:10",
                "t.toml:15:10: error: listen address \"127.0.0.1:9901\" is already used by "
                "[admin] at t.toml:2:10",
                "t.toml:22:8: error: route 'r' is already defined at t.toml:18:8",
                "t.toml:26:1: error: route matches the same listener, host and path_prefix as the "
                "route at t.toml:17:1, so one of them can never match",
                "t.toml:29:17: error: filter 'f' is listed twice in this route's 'filters'",
                "t.toml:35:8: error: pool 'p' is already defined at t.toml:32:8",
                "t.toml:42:8: error: filter 'f' is already defined at t.toml:39:8",
            }));
}

TEST(ConfLoader, ListenerMayNotTakeTheDefaultAdminAddress) {
  EXPECT_EQ(errors(R"(
[[listeners]]
name = "a"
listen = "127.0.0.1:9901"
)"),
            (std::vector<std::string>{"t.toml:3:10: error: listen address \"127.0.0.1:9901\" is "
                                      "already used by [admin] (its default)"}));
}

TEST(ConfLoader, UnnamedRoutesAreNamedByIndex) {
  const auto config = good(R"(
[[listeners]]
name = "l"
listen = "127.0.0.1:8080"
[[routes]]
listener = "l"
pool = "p"
[[routes]]
name = "named"
listener = "l"
path_prefix = "/a"
pool = "p"
[[routes]]
listener = "l"
path_prefix = "/b"
pool = "p"
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1:9001" }]
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->routes[0].name, "0");
  EXPECT_EQ(config->routes[1].name, "named");
  EXPECT_EQ(config->routes[2].name, "2");
}

TEST(ConfLoader, MissingRequiredKeysAreReportedAtTheTable) {
  EXPECT_EQ(errors(R"(
[[listeners]]
[[routes]]
[[pools]]
[[filters]]
)"),
            (std::vector<std::string>{
                "t.toml:1:1: error: missing required key 'name' in [[listeners]]",
                "t.toml:1:1: error: missing required key 'listen' in [[listeners]]",
                "t.toml:2:1: error: missing required key 'listener' in [[routes]]",
                "t.toml:2:1: error: missing required key 'pool' in [[routes]]",
                "t.toml:3:1: error: missing required key 'name' in [[pools]]",
                "t.toml:3:1: error: missing required key 'backends' in [[pools]]",
                "t.toml:4:1: error: missing required key 'name' in [[filters]]",
                "t.toml:4:1: error: missing required key 'type' in [[filters]]",
            }));
}

// ---------------------------------------------------------------------------------------------
// Filters

TEST(ConfLoader, FilterOptionsKeepTheWholeTableWithPositions) {
  std::vector<std::string> seen;
  const auto validate = [&](const FilterConfig& filter, Diagnostics& diagnostics) {
    seen.push_back(filter.name + ":" + filter.type);
    const toml::node* allow = filter.options->get("allow");
    ASSERT_NE(allow, nullptr);
    EXPECT_EQ(filter.options->get("name")->value<std::string>(), filter.name);
    diagnostics.push_back(
        {SourcePos{*allow->source().path, allow->source().begin.line, allow->source().begin.column},
         "bad allow"});
  };
  const LoadResult result = load(R"(
[[filters]]
name = "origin"
type = "origin"
allow = ["https://a.example"]
[[filters]]
name = "broken"
[[filters]]
name = "second"
type = "origin"
allow = []
)",
                                 validate);
  EXPECT_EQ(seen, (std::vector<std::string>{"origin:origin", "second:origin"}));
  EXPECT_EQ(formatted(result.diagnostics),
            (std::vector<std::string>{
                "t.toml:4:9: error: bad allow",
                "t.toml:5:1: error: missing required key 'type' in [[filters]]",
                "t.toml:10:9: error: bad allow",
            }));
}

TEST(ConfLoader, FilterOptionsOutliveTheLoad) {
  std::shared_ptr<const toml::table> options;
  {
    const auto config = good(R"(
[[filters]]
name = "limits"
type = "message_limits"
max_message_bytes = "64KiB"
)");
    ASSERT_NE(config, nullptr);
    options = config->filters.at(0).options;
    EXPECT_EQ(config->filters.at(0).pos.line, 1u);
  }
  ASSERT_NE(options, nullptr);
  const toml::node* max = options->get("max_message_bytes");
  ASSERT_NE(max, nullptr);
  EXPECT_EQ(max->value<std::string>(), "64KiB");
  EXPECT_EQ(max->source().begin.line, 4u);
  EXPECT_EQ(max->source().begin.column, 21u);
}

TEST(ConfLoader, ThrowingFilterValidatorBecomesADiagnostic) {
  const auto validate = [](const FilterConfig&, Diagnostics&) {
    throw std::runtime_error("unknown filter type 'nope'");
  };
  EXPECT_EQ(
      errors("[[filters]]\nname = \"f\"\ntype = \"nope\"\n", validate),
      (std::vector<std::string>{"t.toml:1:1: error: filter 'f': unknown filter type 'nope'"}));
}

// ---------------------------------------------------------------------------------------------
// Files and includes

TEST(ConfInclude, MergesIncludedFilesInOrder) {
  TempDir dir;
  const std::string main = dir.write("main.toml", R"(
include = ["conf.d/*.toml", "extra/more.toml"]
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"
[[routes]]
listener = "public"
pool = "a"
)");
  dir.write("conf.d/20-b.toml", R"(
[[routes]]
listener = "public"
path_prefix = "/b/"
pool = "b"
[[pools]]
name = "b"
backends = [{ address = "127.0.0.1:9002" }]
)");
  dir.write("conf.d/10-a.toml", R"(
include = ["../nested/*.toml"]
[[pools]]
name = "a"
backends = [{ address = "127.0.0.1:9001" }]
)");
  dir.write("conf.d/ignored.txt", "not toml");
  dir.write("conf.d/sub.toml/x.toml", "");  // a directory matching the pattern is skipped
  dir.write("nested/n.toml", R"(
[server]
access_log = "n.log"
)");
  dir.write("extra/more.toml", R"(
[[routes]]
name = "more"
listener = "public"
path_prefix = "/more/"
pool = "a"
[[filters]]
name = "f"
type = "origin"
)");
  const LoadResult result = loadFile(main);
  ASSERT_EQ(formatted(result.diagnostics), std::vector<std::string>());
  const Config& config = *result.config;
  EXPECT_EQ(config.files,
            (std::vector<std::string>{main, dir.at("conf.d/10-a.toml"), dir.at("nested/n.toml"),
                                      dir.at("conf.d/20-b.toml"), dir.at("extra/more.toml")}));
  ASSERT_EQ(config.routes.size(), 3u);
  EXPECT_EQ(config.routes[1].path_prefix, "/b/");
  EXPECT_EQ(config.routes[1].name, "1");
  EXPECT_EQ(config.routes[1].pool_index, 1u);
  EXPECT_EQ(config.routes[1].pos.file, dir.at("conf.d/20-b.toml"));
  EXPECT_EQ(config.routes[2].name, "more");
  EXPECT_EQ(config.pools[0].name, "a");
  EXPECT_EQ(config.pools[1].name, "b");
  EXPECT_EQ(config.server.access_log, dir.at("nested/n.log"));  // relative to nested/
  EXPECT_EQ(config.filters.at(0).pos.file, dir.at("extra/more.toml"));
}

TEST(ConfInclude, ErrorsNameTheIncludedFileAndLine) {
  TempDir dir;
  const std::string main = dir.write("main.toml", R"(
include = ["conf.d/*.toml"]
[server]
workers = "x"
)");
  dir.write("conf.d/a.toml", R"(
[[pools]]
name = "p"
backends = [{ address = "127.0.0.1" }]
)");
  dir.write("conf.d/b.toml", R"(
[[routes]]
listener = "nope"
pool = "p"
)");
  EXPECT_EQ(formatted(loadFile(main).diagnostics),
            (std::vector<std::string>{
                main + ":3:11: error: 'workers' must be an integer, got string",
                dir.at("conf.d/a.toml") + ":3:25: error: 'address' has an invalid address "
                                          "\"127.0.0.1\": missing port (e.g. \"127.0.0.1:8080\")",
                dir.at("conf.d/b.toml") + ":2:12: error: unknown listener 'nope'",
            }));
}

TEST(ConfInclude, SyntaxErrorInIncludedFile) {
  TempDir dir;
  const std::string main =
      dir.write("main.toml", "include = [\"bad.toml\"]\n[server]\nworkers = 1\n");
  dir.write("bad.toml", "[[pools]]\nname = \"p\nbackends = []\n");
  const std::vector<std::string> got = formatted(loadFile(main).diagnostics);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].rfind(dir.at("bad.toml") + ":2:", 0), 0u) << got[0];
  EXPECT_NE(got[0].find("error: TOML syntax error"), std::string::npos) << got[0];
}

TEST(ConfInclude, MissingFileWithoutWildcardIsAnError) {
  TempDir dir;
  const std::string main = dir.write("main.toml", R"(
include = ["conf.d/*.toml", "missing.toml"]
)");
  EXPECT_EQ(formatted(loadFile(main).diagnostics),
            (std::vector<std::string>{main + ":1:29: error: included file \"" +
                                      dir.at("missing.toml") + "\" does not exist"}));
}

TEST(ConfInclude, MissingFileSuppressesUnknownNamesButNotOtherErrors) {
  TempDir dir;
  const std::string main = dir.write("main.toml", R"(
include = ["routes.toml"]
[[routes]]
listener = "defined-in-the-missing-file"
pool = "p"
[[pools]]
name = "p"
backends = [{ address = "a:1" }]
[[pools]]
name = "p"
backends = [{ address = "a:1" }]
)");
  EXPECT_EQ(
      formatted(loadFile(main).diagnostics),
      (std::vector<std::string>{
          main + ":1:12: error: included file \"" + dir.at("routes.toml") + "\" does not exist",
          main + ":9:8: error: pool 'p' is already defined at " + main + ":6:8",
      }));
}

TEST(ConfInclude, CyclesAreErrors) {
  TempDir dir;
  const std::string a = dir.write("a.toml", "include = [\"b.toml\"]\n");
  dir.write("b.toml", "# b\ninclude = [\"a.toml\"]\n");
  EXPECT_EQ(formatted(loadFile(a).diagnostics),
            (std::vector<std::string>{dir.at("b.toml") + ":2:12: error: include cycle: " + a +
                                      " -> " + dir.at("b.toml") + " -> " + a}));
}

TEST(ConfInclude, SelfMatchingPatternIsACycle) {
  TempDir dir;
  const std::string main = dir.write("main.toml", "include = [\"*.toml\"]\n");
  EXPECT_EQ(
      formatted(loadFile(main).diagnostics),
      (std::vector<std::string>{main + ":1:12: error: include cycle: " + main + " -> " + main}));
}

TEST(ConfInclude, FileIncludedTwiceIsAnError) {
  TempDir dir;
  const std::string main = dir.write("main.toml", "include = [\"x.toml\", \"./x.toml\"]\n");
  dir.write("x.toml", "[[filters]]\nname = \"f\"\ntype = \"t\"\n");
  EXPECT_EQ(formatted(loadFile(main).diagnostics),
            (std::vector<std::string>{main + ":1:22: error: file \"" + dir.at("x.toml") +
                                      "\" is already included (as \"" + dir.at("x.toml") + "\")"}));
}

TEST(ConfInclude, IncludedFileMayNotRedefineServerOrAdmin) {
  TempDir dir;
  const std::string main = dir.write("main.toml", R"(
include = ["a.toml", "b.toml"]
[server]
workers = 2
)");
  dir.write("a.toml", "[admin]\nlisten = \"127.0.0.1:9999\"\n");
  dir.write("b.toml", "# b\n[server]\nworkers = 3\n[admin]\nlisten = \"127.0.0.1:9998\"\n");
  const LoadResult result = loadFile(main);
  EXPECT_EQ(formatted(result.diagnostics),
            (std::vector<std::string>{
                dir.at("b.toml") + ":2:1: error: [server] is already defined at " + main +
                    ":2:1; an included file may not redefine it",
                dir.at("b.toml") + ":4:1: error: [admin] is already defined at " +
                    dir.at("a.toml") + ":1:1; an included file may not redefine it",
            }));
}

TEST(ConfInclude, LoadStringResolvesAbsoluteIncludes) {
  TempDir dir;
  const std::string extra = dir.write("extra.toml", "[[filters]]\nname = \"f\"\ntype = \"t\"\n");
  const LoadResult result = loadString("include = [\"" + extra + "\"]\n", "inline.toml");
  ASSERT_EQ(formatted(result.diagnostics), std::vector<std::string>());
  EXPECT_EQ(result.config->files, (std::vector<std::string>{"inline.toml", extra}));
  EXPECT_EQ(result.config->filters.at(0).name, "f");
}

TEST(ConfInclude, UnreadableMainFile) {
  TempDir dir;
  EXPECT_EQ(formatted(loadFile(dir.at("nope.toml")).diagnostics),
            (std::vector<std::string>{dir.at("nope.toml") + ": error: cannot read \"" +
                                      dir.at("nope.toml") + "\": No such file or directory"}));
  EXPECT_EQ(formatted(loadFile(dir.at("")).diagnostics).size(), 1u);  // a directory
}

// ---------------------------------------------------------------------------------------------
// Robustness: untrusted input never crashes or throws.

TEST(ConfLoader, SurvivesHostileInput) {
  const std::vector<std::string> inputs = {
      "",
      std::string("a = \"\0\"", 7),
      std::string(300, '[') + std::string(300, ']'),
      "x = " + std::string(200, '[') + std::string(200, ']'),
      "[[listeners]]\nname = \"" + std::string(100000, 'n') + "\"\nlisten = \"1.1.1.1:1\"\n",
      "[[pools]]\nname = \"p\"\nbackends = [{ address = \"[" + std::string(5000, ':') + "]:1\" }]",
      "[[routes]]\nfilters = [[1], {a = 1}, 1979-05-27]\nlistener = 1\npool = []",
      "[server]\nworkers = 9223372036854775807\nmax_connections = -9223372036854775808",
      "listeners = [{ tls = { certificates = [[]] } }]",
      "\xff\xfe\xfd = 1",
  };
  for (const std::string& input : inputs) {
    LoadResult result;
    EXPECT_NO_THROW(result = loadString(input, "h.toml"));
    if (!input.empty()) {
      EXPECT_FALSE(result.diagnostics.empty()) << input.substr(0, 40);
      EXPECT_EQ(result.config, nullptr);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The shipped examples

TEST(ConfExamples, DemoLoadsCleanly) {
  const LoadResult result = loadFile(SLUICE_SOURCE_DIR "/conf/examples/demo.toml");
  ASSERT_EQ(formatted(result.diagnostics), std::vector<std::string>());
  const Config& config = *result.config;
  EXPECT_EQ(config.admin.listen.text, "127.0.0.1:9901");
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].name, "public");
  EXPECT_EQ(config.listeners[0].listen.text, "127.0.0.1:8080");
  EXPECT_FALSE(config.listeners[0].tls.has_value());
  ASSERT_EQ(config.routes.size(), 1u);
  EXPECT_EQ(config.routes[0].path_prefix, "/");
  EXPECT_TRUE(config.routes[0].websocket.enabled);
  ASSERT_EQ(config.pools.size(), 1u);
  EXPECT_EQ(config.pools[0].name, "demo");
  EXPECT_EQ(config.pools[0].backends.at(0).address.text, "127.0.0.1:9001");
  EXPECT_EQ(config.server.access_log, "stdout");
}

TEST(ConfExamples, FullLoadsCleanlyWithItsInclude) {
  const std::string dir = SLUICE_SOURCE_DIR "/conf/examples";
  const LoadResult result = loadFile(dir + "/full.toml");
  ASSERT_EQ(formatted(result.diagnostics), std::vector<std::string>());
  const Config& config = *result.config;
  EXPECT_EQ(config.files,
            (std::vector<std::string>{dir + "/full.toml", dir + "/conf.d/extra-routes.toml"}));
  EXPECT_EQ(config.listeners.size(), 3u);
  EXPECT_EQ(config.pools.size(), 3u);
  EXPECT_EQ(config.filters.size(), 7u);  // the waf entry is commented out (it needs the CRS)
  ASSERT_EQ(config.routes.size(), 6u);
  EXPECT_EQ(config.routes[4].name, "static");
  EXPECT_EQ(config.routes[5].name, "5");
  EXPECT_EQ(config.routes[5].pool_index, 2u);
  EXPECT_EQ(config.listeners[0].tls->certificates.size(), 2u);
  EXPECT_EQ(config.listeners[1].tls->verify, "require");
  EXPECT_EQ(config.pools[0].balance, Balance::kConsistentHash);
  EXPECT_EQ(config.pools[0].rebalance_max_per_second, 50u);
  EXPECT_EQ(config.pools[2].health->type, "tcp");
}

// Every key of every schema table appears in full.toml (the filters' own keys aside).
TEST(ConfExamples, FullDocumentsEveryKey) {
  std::ifstream in(SLUICE_SOURCE_DIR "/conf/examples/full.toml");
  const std::string full((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::vector<std::string> keys = {"include",
                                         "workers",
                                         "max_connections",
                                         "shutdown_timeout",
                                         "access_log",
                                         "listen",
                                         "token_file",
                                         "name",
                                         "header_timeout",
                                         "idle_timeout",
                                         "max_header_bytes",
                                         "redirect_to_https",
                                         "proxy_protocol",
                                         "cert",
                                         "key",
                                         "certificates",
                                         "min_version",
                                         "alpn",
                                         "client_ca",
                                         "verify",
                                         "handshake_timeout",
                                         "hsts",
                                         "listener",
                                         "host",
                                         "path_prefix",
                                         "pool",
                                         "filters",
                                         "max_body_bytes",
                                         "enabled",
                                         "max_message_bytes",
                                         "ping_interval",
                                         "pong_timeout",
                                         "validate_utf8",
                                         "backends",
                                         "address",
                                         "weight",
                                         "balance",
                                         "hash_key",
                                         "hash_balance_factor",
                                         "sticky_cookie",
                                         "connect_timeout",
                                         "response_timeout",
                                         "drain_timeout",
                                         "rebalance",
                                         "max_per_second",
                                         "keepalive_connections",
                                         "keepalive_timeout",
                                         "type",
                                         "path",
                                         "interval",
                                         "timeout",
                                         "healthy_threshold",
                                         "unhealthy_threshold",
                                         "expect_status",
                                         "ca",
                                         "sni",
                                         "allow",
                                         "allow_missing",
                                         "allow_types",
                                         "drain_delay",
                                         "access_log_format",
                                         "error_log",
                                         "log_level",
                                         "user",
                                         "group",
                                         "read_token_file",
                                         "https_port",
                                         "trusted_proxies",
                                         "forwarded_header",
                                         "health_path",
                                         "sticky_cookie_secure",
                                         "sticky_cookie_samesite",
                                         "sticky_cookie_httponly",
                                         "set",
                                         "add",
                                         "remove"};
  for (const std::string& key : keys) {
    const bool assigned = full.find("\n" + key + " = ") != std::string::npos ||
                          full.find(" " + key + " = ") != std::string::npos;
    EXPECT_TRUE(assigned) << key;
  }
}

}  // namespace
}  // namespace sluice::conf

// NOLINTEND(bugprone-suspicious-missing-comma)
