#include "conf/schema.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "conf/text.h"

namespace sluice::conf::detail {
namespace {

constexpr uint64_t kMaxBytes = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr uint64_t kMinHeaderBytes = 512;
constexpr uint64_t kMaxHeaderBytes = 1024ull * 1024;

// In the order of the Balance enum.
const std::vector<std::string_view> kBalanceNames = {"round_robin", "least_conn", "random",
                                                     "consistent_hash"};
const std::vector<std::string_view> kAlpnProtocols = {"http/1.1", "http/1.0"};

using Checked = std::optional<std::string>;

Checked checkName(std::string_view text, std::string& why) {
  if (isObjectName(text)) {
    return std::string(text);
  }
  why = "must be a name made of letters, digits, '_', '-', '.' and ':' (at most 128), got " +
        quote(text);
  return std::nullopt;
}

Checked checkNotEmpty(std::string_view text, std::string& why) {
  if (!text.empty()) {
    return std::string(text);
  }
  why = "must not be empty";
  return std::nullopt;
}

Checked checkRoutePath(std::string_view text, std::string& why) {
  if (text.empty() || text.front() != '/') {
    why = "must start with '/', got " + quote(text);
  } else if (hasSpaceOrControl(text) || text.find_first_of("?#") != std::string_view::npos) {
    why = "must be a path without spaces, control characters, '?' or '#', got " + quote(text);
  } else {
    return std::string(text);
  }
  return std::nullopt;
}

Checked checkRouteHost(std::string_view text, std::string& why) {
  std::string reason;
  Checked host = normalizeRouteHost(text, &reason);
  if (!host) {
    why = reason + ", got " + quote(text);
  }
  return host;
}

Checked checkHashKey(std::string_view text, std::string& why) {
  if (KeySource::parse(text, &why)) {
    return std::string(text);
  }
  return std::nullopt;
}

Checked checkCookieName(std::string_view text, std::string& why) {
  if (isToken(text)) {
    return std::string(text);
  }
  why = "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got " + quote(text);
  return std::nullopt;
}

Checked checkHeaderValue(std::string_view text, std::string& why) {
  const bool control = std::any_of(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
  });
  if (!text.empty() && !control) {
    return std::string(text);
  }
  why = text.empty() ? "must not be empty (leave the key out to send no header)"
                     : "must not contain control characters";
  return std::nullopt;
}

// A user or group name (as useradd takes them), or a numeric id.
Checked checkAccountName(std::string_view text, std::string& why) {
  const bool ok = !text.empty() && text.size() <= 32 &&
                  std::all_of(text.begin(), text.end(),
                              [](char c) {
                                return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                       (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
                              }) &&
                  text.front() != '-';
  if (ok) {
    return std::string(text);
  }
  why = "must be a user or group name (letters, digits, '_', '-', '.') or a numeric id, got " +
        quote(text);
  return std::nullopt;
}

Checked checkSni(std::string_view text, std::string& why) {
  if (isHostName(text)) {
    return toLower(text);
  }
  why = "must be a host name, got " + quote(text);
  return std::nullopt;
}

using StatusRange = std::pair<uint16_t, uint16_t>;

std::optional<uint16_t> parseStatus(std::string_view text) {
  if (text.size() != 3 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const int status = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
  return status >= 100 && status <= 599 ? std::optional<uint16_t>(status) : std::nullopt;
}

// expect_status = 200, "200", "2xx" or "200-399".
std::optional<StatusRange> parseExpectStatus(const toml::node& node, std::string& message) {
  static constexpr std::string_view kHelp =
      "'expect_status' must be a status (200), a class (\"2xx\") or a range (\"200-399\") of "
      "codes from 100 to 599";
  if (const std::optional<int64_t> status = node.value_exact<int64_t>()) {
    if (*status >= 100 && *status <= 599) {
      return StatusRange(static_cast<uint16_t>(*status), static_cast<uint16_t>(*status));
    }
    message = std::string(kHelp) + ", got " + std::to_string(*status);
    return std::nullopt;
  }
  const std::optional<std::string_view> text = node.value_exact<std::string_view>();
  if (!text) {
    message = std::string(kHelp) + ", got " + std::string(typeName(node));
    return std::nullopt;
  }
  const std::string lower = toLower(*text);
  if (lower.size() == 3 && lower[0] >= '1' && lower[0] <= '5' && lower.substr(1) == "xx") {
    const auto base = static_cast<uint16_t>((lower[0] - '0') * 100);
    return StatusRange(base, static_cast<uint16_t>(base + 99));
  }
  const size_t dash = text->find('-');
  const std::optional<uint16_t> low = parseStatus(text->substr(0, dash));
  const std::optional<uint16_t> high =
      dash == std::string_view::npos ? low : parseStatus(text->substr(dash + 1));
  if (low && high && *low <= *high) {
    return StatusRange(*low, *high);
  }
  message = std::string(kHelp) + ", got " + quote(*text);
  return std::nullopt;
}

}  // namespace

// Names of one kind (listeners, pools, ...): where each was first defined and its index.
class NameIndex {
 public:
  explicit NameIndex(std::string kind) : kind_(std::move(kind)) {}

  // Adds `name`, or reports it at `pos` when it is already there. Empty names are skipped: they
  // were reported when read.
  void add(const std::string& name, size_t index, const SourcePos& pos, Diagnostics& diagnostics) {
    if (name.empty()) {
      return;
    }
    const auto [it, inserted] = entries_.try_emplace(name, index, pos);
    if (!inserted) {
      diagnostics.push_back({pos, kind_ + " " + quoteName(name) + " is already defined at " +
                                      formatPos(it->second.second)});
      return;
    }
    names_.push_back(name);
  }

  // The index of `name`, or nullopt after reporting it unknown at `pos`.
  std::optional<size_t> resolve(const std::string& name, const SourcePos& pos,
                                Diagnostics& diagnostics) const {
    const auto it = entries_.find(name);
    if (it != entries_.end()) {
      return it->second.first;
    }
    diagnostics.push_back(
        {pos, "unknown " + kind_ + " " + quoteName(name) + didYouMean(name, names_)});
    return std::nullopt;
  }

 private:
  std::string kind_;
  std::map<std::string, std::pair<size_t, SourcePos>> entries_;
  std::vector<std::string> names_;
};

ConfigBuilder::ConfigBuilder(Diagnostics& diagnostics) : diagnostics_(diagnostics) {}

void ConfigBuilder::error(const SourcePos& pos, std::string message) {
  diagnostics_.push_back(Diagnostic{pos, std::move(message)});
}

void ConfigBuilder::addDocument(const std::shared_ptr<const toml::table>& root,
                                const FileContext& file) {
  Section top(*root, "", file, diagnostics_);
  top.get("include");  // read by the loader
  if (const toml::table* table = singleTable(top, "server", server_at_)) {
    Section s(*table, "[server]", file, diagnostics_);
    readServer(s);
  }
  if (const toml::table* table = singleTable(top, "admin", admin_at_)) {
    Section s(*table, "[admin]", file, diagnostics_);
    readAdmin(s);
  }
  for (const toml::table* table : top.tables("listeners")) {
    Section s(*table, "[[listeners]]", file, diagnostics_);
    readListener(s);
  }
  for (const toml::table* table : top.tables("routes")) {
    Section s(*table, "[[routes]]", file, diagnostics_);
    readRoute(s);
  }
  for (const toml::table* table : top.tables("pools")) {
    Section s(*table, "[[pools]]", file, diagnostics_);
    readPool(s);
  }
  for (const toml::table* table : top.tables("filters")) {
    Section s(*table, "[[filters]]", file, diagnostics_);
    readFilter(s, root, *table);
  }
  top.finish();
}

const toml::table* ConfigBuilder::singleTable(Section& top, std::string_view key,
                                              std::optional<SourcePos>& defined_at) {
  const toml::table* table = top.table(key);
  if (table == nullptr) {
    return nullptr;
  }
  if (defined_at) {
    top.error(key, "[" + std::string(key) + "] is already defined at " + formatPos(*defined_at) +
                       "; an included file may not redefine it");
    return nullptr;
  }
  defined_at = top.pos(key);
  return table;
}

void ConfigBuilder::readServer(Section& s) {
  ServerConfig& server = config_.server;
  s.integer("workers", server.workers, 0, 1024);
  s.integer("max_connections", server.max_connections, 1, 100'000'000);
  s.size("max_held_bytes", server.max_held_bytes, 0, kMaxBytes);
  s.duration("shutdown_timeout", server.shutdown_timeout, Zero::kAllowed);
  s.duration("drain_delay", server.drain_delay, Zero::kAllowed);
  const auto log_target = [&s](const std::vector<std::string_view>& streams) {
    return [&s, streams](std::string_view text, std::string& why) {
      if (std::find(streams.begin(), streams.end(), text) != streams.end()) {
        return Checked(text);
      }
      return resolvePath(text, s.file().dir, why);
    };
  };
  s.string("access_log", server.access_log, log_target({"stdout", "stderr", "off"}));
  server.access_log_pos = s.pos("access_log");
  s.oneOf("access_log_format", server.access_log_format, {"json", "text"});
  s.string("error_log", server.error_log, log_target({"stdout", "stderr"}));
  server.error_log_pos = s.pos("error_log");
  s.oneOf("log_level", server.log_level, {"debug", "info", "warn", "error"});
  s.string("user", server.user, checkAccountName);
  server.user_pos = s.pos("user");
  s.string("group", server.group, checkAccountName);
  if (s.get("group") != nullptr && s.get("user") == nullptr) {
    s.error("group", "'group' needs 'user': sluice drops privileges to both at once");
  }
  s.finish();
}

void ConfigBuilder::readAdmin(Section& s) {
  AdminConfig& admin = config_.admin;
  if (s.address("listen", admin.listen, AddressUse::kListen)) {
    admin_listen_at_ = s.pos("listen");
  }
  s.path("token_file", admin.token_file);
  if (s.strings("allowed_hosts", admin.allowed_hosts)) {
    for (std::string& h : admin.allowed_hosts) {
      h = toLower(h);
    }
  }
  admin.token_file_pos = s.pos("token_file");
  s.path("read_token_file", admin.read_token_file);
  admin.read_token_file_pos = s.pos("read_token_file");
  s.finish();
}

void ConfigBuilder::readListener(Section& s) {
  ListenerConfig listener;
  ListenerOrigin origin;
  listener.pos = s.pos();
  s.require({"name", "listen"});
  s.string("name", listener.name, checkName);
  origin.name = s.pos("name");
  origin.has_listen = s.address("listen", listener.listen, AddressUse::kListen);
  origin.listen = s.pos("listen");
  s.duration("header_timeout", listener.header_timeout, Zero::kRejected);
  s.duration("idle_timeout", listener.idle_timeout, Zero::kRejected);
  s.size("max_header_bytes", listener.max_header_bytes, kMinHeaderBytes, kMaxHeaderBytes);
  s.boolean("redirect_to_https", listener.redirect_to_https);
  if (s.integer("https_port", listener.https_port, 1, 65535)) {
    origin.https_port_set = true;
    if (!listener.redirect_to_https) {
      s.error("https_port", "'https_port' is where redirect_to_https points; set that too");
    }
  }
  s.boolean("proxy_protocol", listener.proxy_protocol);
  s.boolean("merge_slashes", listener.merge_slashes);
  static const std::vector<std::string_view> kSlashPolicies = {"reject", "keep", "decode"};
  for (auto [key, out] : {std::pair{"encoded_slashes", &listener.encoded_slashes},
                          std::pair{"backslashes", &listener.backslashes}}) {
    if (std::string v; s.oneOf(key, v, kSlashPolicies)) {
      *out = static_cast<SlashPolicy>(std::find(kSlashPolicies.begin(), kSlashPolicies.end(), v) -
                                      kSlashPolicies.begin());
    }
  }
  s.strings("trusted_proxies", listener.trusted_proxies, &listener.trusted_proxies_pos);
  s.oneOf("forwarded_header", listener.forwarded_header, {"x-forwarded-for", "forwarded"});
  s.string("health_path", listener.health_path, checkRoutePath);
  if (listener.proxy_protocol && s.get("trusted_proxies") == nullptr) {
    s.error("proxy_protocol",
            "'proxy_protocol' needs 'trusted_proxies': the addresses of the load balancers "
            "whose PROXY header is believed (\"0.0.0.0/0\" believes anyone)");
  }
  if (const toml::table* tls = s.table("tls")) {
    Section ts(*tls, "[listeners.tls]", s.file(), diagnostics_);
    listener.tls = readListenerTls(ts);
    if (listener.redirect_to_https) {
      s.error("redirect_to_https",
              "'redirect_to_https' is for plain listeners; this one has [listeners.tls]");
    }
  }
  s.finish();
  config_.listeners.push_back(std::move(listener));
  listener_origins_.push_back(std::move(origin));
}

void ConfigBuilder::readCertificate(Section& s, std::vector<TlsCertificate>& out) {
  TlsCertificate certificate;
  certificate.pos = s.pos();
  s.require({"cert", "key"});
  const bool has_cert = s.path("cert", certificate.cert);
  const bool has_key = s.path("key", certificate.key);
  if (has_cert && has_key) {
    out.push_back(std::move(certificate));
  }
}

ListenerTls ConfigBuilder::readListenerTls(Section& s) {
  ListenerTls tls;
  tls.pos = s.pos();
  const bool single = s.get("cert") != nullptr || s.get("key") != nullptr;
  const toml::node* several = s.get("certificates");
  if (single && several != nullptr) {
    s.error("certificates",
            "'cert'/'key' and 'certificates' are mutually exclusive; list every certificate in "
            "'certificates'");
  }
  if (single) {
    readCertificate(s, tls.certificates);
  }
  for (const toml::table* table : s.tables("certificates")) {
    Section entry(*table, "[[listeners.tls.certificates]]", s.file(), diagnostics_);
    readCertificate(entry, tls.certificates);
    entry.finish();
  }
  if (!single && several == nullptr) {
    s.error(s.pos(), "[listeners.tls] needs a certificate: 'cert' and 'key', or 'certificates'");
  } else if (several != nullptr && several->is_array() && several->as_array()->empty()) {
    s.error("certificates", "'certificates' must list at least one certificate");
  }

  s.oneOf("min_version", tls.min_version, {"1.2", "1.3"});
  std::vector<SourcePos> alpn_at;
  if (s.strings("alpn", tls.alpn, &alpn_at)) {
    for (size_t i = 0; i < tls.alpn.size(); ++i) {
      if (std::find(kAlpnProtocols.begin(), kAlpnProtocols.end(), tls.alpn[i]) ==
          kAlpnProtocols.end()) {
        s.error(alpn_at[i],
                "'alpn' entries must be \"http/1.1\" or \"http/1.0\" (sluice speaks "
                "HTTP/1.x), got " +
                    quote(tls.alpn[i]));
      }
    }
  }
  s.path("client_ca", tls.client_ca);
  if (s.oneOf("verify", tls.verify, {"require", "optional"}) && s.get("client_ca") == nullptr) {
    s.error("verify",
            "'verify' needs 'client_ca', the CA file that client certificates are "
            "checked against");
  }
  if (!tls.client_ca.empty() && tls.verify.empty()) {
    tls.verify = "require";
  }
  s.duration("handshake_timeout", tls.handshake_timeout, Zero::kRejected);
  s.string("hsts", tls.hsts, checkHeaderValue);
  s.finish();
  return tls;
}

void ConfigBuilder::readRoute(Section& s) {
  RouteConfig route;
  RouteOrigin origin;
  route.pos = s.pos();
  s.require({"listener", "pool"});
  origin.named = s.string("name", route.name, checkName);
  origin.name = s.pos("name");
  s.string("listener", route.listener, checkName);
  origin.listener = s.pos("listener");
  // A bad host or path_prefix leaves the default in place, which must not look like a clash.
  const bool host_ok = s.string("host", route.host, checkRouteHost) || s.get("host") == nullptr;
  const bool path_ok =
      s.string("path_prefix", route.path_prefix, checkRoutePath) || s.get("path_prefix") == nullptr;
  origin.matchable = host_ok && path_ok;
  s.string("pool", route.pool, checkName);
  origin.pool = s.pos("pool");
  s.strings("filters", route.filters, &origin.filters);
  s.size("max_body_bytes", route.max_body_bytes, 0, kMaxBytes);
  s.boolean("forward_original_target", route.forward_original_target);
  s.boolean("access_log", route.access_log);
  if (Duration d; s.duration("response_timeout", d, Zero::kRejected)) {
    route.response_timeout = d;
  }
  if (Duration d; s.duration("idle_timeout", d, Zero::kRejected)) {
    route.idle_timeout = d;
  }
  if (const toml::table* rules = s.table("request_headers")) {
    Section hs(*rules, "[routes.request_headers]", s.file(), diagnostics_);
    route.request_headers = readHeaderRules(hs);
  }
  if (const toml::table* rules = s.table("response_headers")) {
    Section hs(*rules, "[routes.response_headers]", s.file(), diagnostics_);
    route.response_headers = readHeaderRules(hs);
  }
  if (const toml::table* websocket = s.table("websocket")) {
    Section ws(*websocket, "[routes.websocket]", s.file(), diagnostics_);
    readWebSocket(ws, route.websocket);
  }
  if (const toml::table* compression = s.table("http_compression")) {
    Section c(*compression, "[routes.http_compression]", s.file(), diagnostics_);
    readHttpCompression(c, route.http_compression);
  }
  s.finish();
  config_.routes.push_back(std::move(route));
  route_origins_.push_back(std::move(origin));
}

HeaderRules ConfigBuilder::readHeaderRules(Section& s) {
  HeaderRules rules;
  // sluice writes these itself (framing, connection management, the WebSocket handshake); an
  // edit could make the two sides read a message differently.
  static const std::vector<std::string_view> kReserved = {
      "content-length", "transfer-encoding", "connection",      "keep-alive", "te",
      "trailer",        "upgrade",           "proxy-connection"};
  const auto name_ok = [&](std::string_view name, const SourcePos& at) {
    const std::string lower = toLower(name);
    if (!isToken(name)) {
      s.error(at, "header name " + quote(name) + " is not a valid HTTP header name");
      return false;
    }
    if (std::find(kReserved.begin(), kReserved.end(), lower) != kReserved.end() ||
        lower.starts_with("sec-websocket-")) {
      s.error(at, "header " + quoteName(name) + " is managed by sluice and cannot be edited");
      return false;
    }
    return true;
  };
  const auto read_values = [&](std::string_view key,
                               std::vector<std::pair<std::string, std::string>>& out) {
    const toml::table* table = s.table(key);
    if (table == nullptr) {
      return;
    }
    for (const auto& [name, value] : *table) {
      const SourcePos at = s.pos(value);
      const std::optional<std::string_view> text = value.value_exact<std::string_view>();
      if (!text) {
        s.error(at, "header " + quoteName(name.str()) + " must have a string value, got " +
                        std::string(typeName(value)));
        continue;
      }
      std::string why;
      if (!checkHeaderValue(*text, why)) {
        s.error(at, "header " + quoteName(name.str()) + " " + why);
        continue;
      }
      if (name_ok(name.str(), at)) {
        out.emplace_back(std::string(name.str()), std::string(*text));
      }
    }
  };
  read_values("set", rules.set);
  read_values("add", rules.add);
  std::vector<std::string> remove;
  std::vector<SourcePos> remove_at;
  if (s.strings("remove", remove, &remove_at)) {
    for (size_t i = 0; i < remove.size(); ++i) {
      if (name_ok(remove[i], remove_at[i])) {
        rules.remove.push_back(toLower(remove[i]));
      }
    }
  }
  s.finish();
  return rules;
}

void ConfigBuilder::readWebSocket(Section& s, WebSocketConfig& ws) {
  s.boolean("enabled", ws.enabled);
  s.size("max_message_bytes", ws.max_message_bytes, 1, kMaxBytes);
  s.duration("ping_interval", ws.ping_interval, Zero::kAllowed);
  s.duration("pong_timeout", ws.pong_timeout, Zero::kRejected);
  s.duration("idle_timeout", ws.idle_timeout, Zero::kAllowed);
  s.boolean("validate_utf8", ws.validate_utf8);
  s.boolean("ping_relay", ws.ping_relay);
  static const std::vector<std::string_view> kModes = {"off", "terminate", "terminate_both",
                                                       "passthrough"};
  if (s.oneOf("compression", ws.compression_name, kModes)) {
    const auto it = std::find(kModes.begin(), kModes.end(), ws.compression_name);
    ws.compression = static_cast<WsCompression>(it - kModes.begin());
  }
  s.size("compression_threshold", ws.compression_threshold, 0, kMaxBytes);
  s.integer("compression_level", ws.compression_level, 1, 9);
  s.integer("compression_window_bits", ws.compression_window_bits, 9, 15);
  s.integer("compression_mem_level", ws.compression_mem_level, 1, 9);
  s.integer("max_inflate_ratio", ws.max_inflate_ratio, 0, 1000000);
  s.finish();
}

void ConfigBuilder::readHttpCompression(Section& s, HttpCompressionConfig& c) {
  s.boolean("enabled", c.enabled);
  std::vector<SourcePos> where;
  if (s.strings("codings", c.codings, &where)) {
    for (size_t i = 0; i < c.codings.size(); ++i) {
      if (c.codings[i] != "br" && c.codings[i] != "gzip") {
        s.error(where[i], "unknown coding " + quote(c.codings[i]) + " (known: \"br\", \"gzip\")");
      }
    }
  }
  s.strings("types", c.types);
  s.size("min_length", c.min_length, 0, kMaxBytes);
  s.integer("gzip_level", c.gzip_level, 1, 9);
  s.integer("brotli_quality", c.brotli_quality, 0, 11);
  s.finish();
}

void ConfigBuilder::readPool(Section& s) {
  PoolConfig pool;
  NamedOrigin origin;
  pool.pos = s.pos();
  s.require({"name", "backends"});
  s.string("name", pool.name, checkName);
  origin.name = s.pos("name");
  readBackends(s, pool);
  if (s.oneOf("balance", pool.balance_name, kBalanceNames)) {
    const auto it = std::find(kBalanceNames.begin(), kBalanceNames.end(), pool.balance_name);
    pool.balance = static_cast<Balance>(it - kBalanceNames.begin());
  }
  if (std::string key; s.string("hash_key", key, checkHashKey)) {
    pool.hash_key = *KeySource::parse(key);
  }
  s.read("hash_balance_factor", pool.hash_balance_factor,
         [&](const toml::node& node, std::string& message) -> std::optional<double> {
           std::optional<double> v = node.is_number() ? node.value<double>() : std::nullopt;
           if (!v || !std::isfinite(*v) || *v < 0) {
             message = node.is_number() ? "'hash_balance_factor' must be 0 (off) or more"
                                        : s.mustBe("hash_balance_factor", "a number", node);
             return std::nullopt;
           }
           return v;
         });
  s.string("sticky_cookie", pool.sticky_cookie, checkCookieName);
  if (bool secure = false; s.boolean("sticky_cookie_secure", secure)) {
    pool.sticky_cookie_secure = secure;
  }
  s.oneOf("sticky_cookie_samesite", pool.sticky_cookie_samesite, {"Lax", "Strict", "None"});
  s.boolean("sticky_cookie_httponly", pool.sticky_cookie_httponly);
  if (pool.sticky_cookie_samesite == "None" && pool.sticky_cookie_secure == false) {
    s.error("sticky_cookie_samesite",
            "'sticky_cookie_samesite = \"None\"' needs a Secure cookie (browsers refuse it "
            "otherwise): leave 'sticky_cookie_secure' out or set it to true");
  }
  s.duration("connect_timeout", pool.connect_timeout, Zero::kRejected);
  s.duration("response_timeout", pool.response_timeout, Zero::kRejected);
  s.duration("drain_timeout", pool.drain_timeout, Zero::kAllowed);
  if (const toml::table* rebalance = s.table("rebalance")) {
    Section r(*rebalance, "[pools.rebalance]", s.file(), diagnostics_);
    r.require({"max_per_second"});
    r.integer("max_per_second", pool.rebalance_max_per_second, 0, 100'000);
    r.finish();
  }
  s.integer("keepalive_connections", pool.keepalive_connections, 0, 10'000);
  s.duration("keepalive_timeout", pool.keepalive_timeout, Zero::kRejected);
  if (const toml::table* health = s.table("health")) {
    Section hs(*health, "[pools.health]", s.file(), diagnostics_);
    pool.health = readHealth(hs);
  }
  if (const toml::table* tls = s.table("tls")) {
    Section ts(*tls, "[pools.tls]", s.file(), diagnostics_);
    pool.tls = readPoolTls(ts);
    if (pool.tls->sni.empty()) {
      for (const BackendConfig& b : pool.backends) {
        if (!b.address.unix_path.empty()) {
          ts.error(b.pos, "backend " + quote(b.address.text) +
                              " is a Unix socket: a TLS pool needs 'sni', the name to send "
                              "and verify");
        }
      }
    }
  }
  s.finish();
  config_.pools.push_back(std::move(pool));
  pool_origins_.push_back(std::move(origin));
}

void ConfigBuilder::readBackends(Section& s, PoolConfig& pool) {
  std::map<std::pair<std::string, uint16_t>, SourcePos> seen;
  for (const toml::table* table : s.tables("backends")) {
    Section b(*table, "[[pools.backends]]", s.file(), diagnostics_);
    BackendConfig backend;
    backend.pos = b.pos();
    b.require({"address"});
    if (b.address("address", backend.address, AddressUse::kConnect)) {
      const std::string& where =
          backend.address.unix_path.empty() ? backend.address.host : backend.address.unix_path;
      const auto [it, inserted] =
          seen.try_emplace(std::pair(where, backend.address.port), b.pos("address"));
      if (!inserted) {
        b.error("address", "backend " + quote(backend.address.text) +
                               " is already listed in this pool at " + formatPos(it->second));
      }
    }
    b.integer("weight", backend.weight, 0, 1000);
    b.finish();
    pool.backends.push_back(std::move(backend));
  }
  const toml::node* backends = s.get("backends");
  if (backends != nullptr && backends->is_array() && backends->as_array()->empty()) {
    s.error("backends", "'backends' must list at least one backend");
  }
}

HealthConfig ConfigBuilder::readHealth(Section& s) {
  HealthConfig health;
  health.pos = s.pos();
  s.oneOf("type", health.type, {"http", "tcp"});
  s.string("path", health.path, checkRoutePath);
  s.duration("interval", health.interval, Zero::kRejected);
  s.duration("timeout", health.timeout, Zero::kRejected);
  s.integer("healthy_threshold", health.healthy_threshold, 1, 1000);
  s.integer("unhealthy_threshold", health.unhealthy_threshold, 1, 1000);
  StatusRange expect{health.expect_status_min, health.expect_status_max};
  if (s.read("expect_status", expect, parseExpectStatus)) {
    health.expect_status_min = expect.first;
    health.expect_status_max = expect.second;
  }
  s.finish();
  return health;
}

PoolTls ConfigBuilder::readPoolTls(Section& s) {
  PoolTls tls;
  tls.pos = s.pos();
  s.path("ca", tls.ca);
  s.boolean("verify", tls.verify);
  s.string("sni", tls.sni, checkSni);
  s.path("cert", tls.cert);
  s.path("key", tls.key);
  if ((s.get("cert") == nullptr) != (s.get("key") == nullptr)) {
    s.error(s.pos(),
            "[pools.tls] needs both 'cert' and 'key' for a client certificate, or neither");
  }
  s.finish();
  return tls;
}

void ConfigBuilder::readFilter(Section& s, const std::shared_ptr<const toml::table>& root,
                               const toml::table& table) {
  FilterConfig filter;
  NamedOrigin origin;
  filter.pos = s.pos();
  s.require({"name", "type"});
  const bool named = s.string("name", filter.name, checkName);
  const bool typed = s.string("type", filter.type, checkNotEmpty);
  origin.name = s.pos("name");
  origin.valid = named && typed;
  // Shares ownership of the whole document: a copy of a toml::table loses its source positions.
  filter.options = std::shared_ptr<const toml::table>(root, &table);
  // No finish(): the other keys belong to the filter type, which its validator checks.
  config_.filters.push_back(std::move(filter));
  filter_origins_.push_back(std::move(origin));
}

void ConfigBuilder::resolve(const FilterValidator& validate_filter, bool check_references) {
  NameIndex listeners("listener");
  for (size_t i = 0; i < config_.listeners.size(); ++i) {
    listeners.add(config_.listeners[i].name, i, listener_origins_[i].name, diagnostics_);
  }
  NameIndex pools("pool");
  for (size_t i = 0; i < config_.pools.size(); ++i) {
    pools.add(config_.pools[i].name, i, pool_origins_[i].name, diagnostics_);
  }
  NameIndex filters("filter");
  for (size_t i = 0; i < config_.filters.size(); ++i) {
    filters.add(config_.filters[i].name, i, filter_origins_[i].name, diagnostics_);
  }
  checkListenAddresses();
  defaultHttpsPorts();
  resolveRoutes(listeners, pools, filters, check_references);
  validateFilters(validate_filter);
}

void ConfigBuilder::defaultHttpsPorts() {
  std::optional<uint16_t> port;
  for (const ListenerConfig& l : config_.listeners) {
    if (l.tls && (!port || l.listen.port == 443)) {
      port = port && *port == 443 ? *port : l.listen.port;
    }
  }
  for (size_t i = 0; i < config_.listeners.size(); ++i) {
    if (!listener_origins_[i].https_port_set) {
      config_.listeners[i].https_port = port.value_or(443);
    }
  }
}

void ConfigBuilder::checkListenAddresses() {
  struct User {
    std::string what;
    std::optional<SourcePos> at;
  };
  std::map<std::pair<std::string, uint16_t>, User> used;
  const Address& admin = config_.admin.listen;
  used.try_emplace(std::pair(admin.host, admin.port), User{"[admin]", admin_listen_at_});
  for (size_t i = 0; i < config_.listeners.size(); ++i) {
    const ListenerConfig& listener = config_.listeners[i];
    const ListenerOrigin& origin = listener_origins_[i];
    if (!origin.has_listen) {
      continue;
    }
    const auto [it, inserted] =
        used.try_emplace(std::pair(listener.listen.host, listener.listen.port),
                         User{"listener " + quoteName(listener.name), origin.listen});
    if (!inserted) {
      const User& first = it->second;
      error(origin.listen, "listen address " + quote(listener.listen.text) +
                               " is already used by " + first.what +
                               (first.at ? " at " + formatPos(*first.at) : " (its default)"));
    }
  }
}

void ConfigBuilder::resolveRoutes(const NameIndex& listeners, const NameIndex& pools,
                                  const NameIndex& filters, bool check_references) {
  Diagnostics unreported;  // unknown names when references are not checked
  Diagnostics& references = check_references ? diagnostics_ : unreported;
  NameIndex names("route");
  std::map<std::string, SourcePos> matches;  // listener, host and path_prefix -> first route
  for (size_t i = 0; i < config_.routes.size(); ++i) {
    RouteConfig& route = config_.routes[i];
    const RouteOrigin& origin = route_origins_[i];
    if (!origin.named) {
      route.name = std::to_string(i);
    }
    names.add(route.name, i, origin.named ? origin.name : route.pos, diagnostics_);

    std::optional<size_t> listener;
    if (!route.listener.empty()) {
      listener = listeners.resolve(route.listener, origin.listener, references);
      route.listener_index = listener.value_or(0);
    }
    if (!route.pool.empty()) {
      route.pool_index = pools.resolve(route.pool, origin.pool, references).value_or(0);
    }
    route.filter_indices.clear();
    for (size_t j = 0; j < route.filters.size(); ++j) {
      const auto first = std::find(route.filters.begin(), route.filters.end(), route.filters[j]);
      if (first != route.filters.begin() + static_cast<std::ptrdiff_t>(j)) {
        error(origin.filters[j], "filter " + quoteName(route.filters[j]) +
                                     " is listed twice in this route's 'filters'");
      } else if (const std::optional<size_t> index =
                     filters.resolve(route.filters[j], origin.filters[j], references)) {
        route.filter_indices.push_back(*index);
      }
    }

    if (listener && origin.matchable) {
      std::string match = route.listener + '\n' + route.host + '\n' + route.path_prefix;
      const auto [it, inserted] = matches.try_emplace(std::move(match), route.pos);
      if (!inserted) {
        error(route.pos, "route matches the same listener, host and path_prefix as the route at " +
                             formatPos(it->second) + ", so one of them can never match");
      }
    }
  }
}

void ConfigBuilder::validateFilters(const FilterValidator& validate_filter) {
  if (!validate_filter) {
    return;
  }
  for (size_t i = 0; i < config_.filters.size(); ++i) {
    const FilterConfig& filter = config_.filters[i];
    if (!filter_origins_[i].valid) {
      continue;
    }
    try {
      validate_filter(filter, diagnostics_);
    } catch (const std::exception& e) {
      error(filter.pos, "filter " + quoteName(filter.name) + ": " + e.what());
    } catch (...) {
      error(filter.pos, "filter " + quoteName(filter.name) + ": its validator failed");
    }
  }
}

}  // namespace sluice::conf::detail
