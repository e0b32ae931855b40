#pragma once

// The resolved, typed, immutable configuration snapshot. conf/ builds it once from TOML; proxy/
// and filters/ only read it. Nothing here is parsed or merged at request time.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace sluice::conf {

using Duration = std::chrono::milliseconds;

// A position in a config file, for diagnostics.
struct SourcePos {
  std::string file;
  uint32_t line = 0;
  uint32_t column = 0;
};

struct Diagnostic {
  enum class Severity : uint8_t { kError, kWarning };

  SourcePos pos;
  std::string message;
  Severity severity = Severity::kError;

  // "FILE:LINE:COLUMN: error: message" (or "warning:")
  std::string format() const;
  bool error() const { return severity == Severity::kError; }
};

using Diagnostics = std::vector<Diagnostic>;

struct Address {
  std::string host;  // "127.0.0.1", "::1", "0.0.0.0"; no brackets; empty for a Unix socket
  uint16_t port = 0;
  bool ipv6 = false;
  std::string text;       // as written: "127.0.0.1:8080", "[::1]:8443", "unix:/run/app.sock"
  std::string unix_path;  // backends only: "unix:PATH" connects to a Unix socket
};

struct ServerConfig {
  uint32_t workers = 0;  // 0 = one per core
  uint64_t max_connections = 100000;
  // What one worker's connections may hold in held WebSocket messages and buffered bodies
  // together; over it the largest holders are closed (0 = no cap).
  uint64_t max_held_bytes = 512ull * 1024 * 1024;
  Duration shutdown_timeout = std::chrono::seconds(30);
  // Lame duck on SIGTERM: /healthz fails while the listeners still accept, then the drain.
  Duration drain_delay{0};
  std::string access_log = "stdout";       // "stdout", "stderr", "off" or a path
  std::string access_log_format = "json";  // "json" or "text" (combined log, then key=value)
  std::string error_log = "stderr";        // "stderr", "stdout" or a path
  std::string log_level = "info";          // "debug", "info", "warn" or "error"
  std::string user;                        // drop privileges to this user after binding
  std::string group;                       // and this group (default: the user's own)
  SourcePos access_log_pos;
  SourcePos error_log_pos;
  SourcePos user_pos;
};

struct AdminConfig {
  Address listen{"127.0.0.1", 9901, false, "127.0.0.1:9901", {}};
  std::string token_file;       // empty = mutating endpoints need no token
  std::string read_token_file;  // empty = GET endpoints need no token
  // Host names the admin API answers to besides IP literals and "localhost" (a DNS-rebinding page
  // comes with its own name, and gets 403).
  std::vector<std::string> allowed_hosts;
  SourcePos token_file_pos;
  SourcePos read_token_file_pos;
};

struct TlsCertificate {
  std::string cert;  // resolved path
  std::string key;   // resolved path
  SourcePos pos;
};

struct ListenerTls {
  std::vector<TlsCertificate> certificates;  // first = default
  std::string min_version = "1.2";           // "1.2" or "1.3"
  std::vector<std::string> alpn{"http/1.1"};
  std::string client_ca;  // resolved path, empty = no client certificates
  std::string verify;     // "", "require" or "optional"
  Duration handshake_timeout = std::chrono::seconds(10);
  std::string hsts;  // empty = no Strict-Transport-Security header
  SourcePos pos;
};

// What a listener does with a separator hidden from plain prefix matching ("%2F", "\\", "%5C").
enum class SlashPolicy : uint8_t { kReject, kKeep, kDecode };

struct ListenerConfig {
  std::string name;
  Address listen;
  Duration header_timeout = std::chrono::seconds(10);
  Duration idle_timeout = std::chrono::seconds(60);
  uint64_t max_header_bytes = 32ull * 1024;
  bool redirect_to_https = false;
  // The port the 308 of redirect_to_https points at (443 is left out of the URL). Default: 443
  // when a TLS listener listens there, else the first TLS listener's port, else 443.
  uint16_t https_port = 443;
  bool proxy_protocol = false;
  // Request-target normalisation before routing (dot segments are always removed and
  // unreserved characters decoded).
  bool merge_slashes = false;
  SlashPolicy encoded_slashes = SlashPolicy::kKeep;
  SlashPolicy backslashes = SlashPolicy::kKeep;
  // CIDRs whose forwarding headers and PROXY protocol are believed, as written (proxy/ parses
  // them; `trusted_proxies_pos` are their positions for its diagnostics).
  std::vector<std::string> trusted_proxies;
  std::vector<SourcePos> trusted_proxies_pos;
  std::string forwarded_header = "x-forwarded-for";  // or "forwarded" (RFC 7239)
  std::string health_path;                           // empty = no health answer on this listener
  std::optional<ListenerTls> tls;
  SourcePos pos;
};

// permessage-deflate on a WebSocket route (RFC 7692).
enum class WsCompression : uint8_t {
  kOff,            // the client's offer is removed: messages travel uncompressed
  kTerminate,      // compressed between the client and sluice, plain toward the backend
  kTerminateBoth,  // negotiated by sluice on each leg separately
  kPassthrough,    // negotiated end to end; frames go on as they came
};

struct WebSocketConfig {
  bool enabled = false;
  uint64_t max_message_bytes = 1024ull * 1024;        // after inflation, for compressed messages
  Duration ping_interval = std::chrono::seconds(30);  // 0 = no heartbeats
  Duration pong_timeout = std::chrono::seconds(10);
  Duration idle_timeout{0};  // 0 = off
  bool validate_utf8 = true;
  // Control frames: false, sluice answers pings per leg and drops unsolicited pongs; true,
  // pings and pongs are relayed end to end.
  bool ping_relay = false;
  // Off by default: an upgrade's wire behaviour and its cost stay what they were unless a route
  // asks for compression.
  WsCompression compression = WsCompression::kOff;
  std::string compression_name = "off";
  uint64_t compression_threshold = 256;  // smaller messages are sent uncompressed
  uint8_t compression_level = 6;         // zlib's 1..9
  uint8_t compression_window_bits = 15;  // sluice's compressor's window, 9..15
  uint8_t compression_mem_level = 8;     // zlib's 1..9
  // A compressed message may not inflate to more than this many times its size (past its first
  // 64 KiB); 0 = off. max_message_bytes bounds it in any case.
  uint32_t max_inflate_ratio = 1000;
};

// gzip and brotli responses on a route ([routes.http_compression]).
struct HttpCompressionConfig {
  bool enabled = false;
  std::vector<std::string> codings{"br", "gzip"};  // in the route's order of preference
  std::vector<std::string> types;                  // compressible types; empty: the built-in list
  uint64_t min_length = 256;   // a response with a smaller Content-Length goes as it is
  uint8_t gzip_level = 5;      // 1..9
  uint8_t brotli_quality = 5;  // 0..11
};

// Header edits on a route, toward the backend (request) or the client (response).
struct HeaderRules {
  std::vector<std::pair<std::string, std::string>> set;  // replaces every line of that name
  std::vector<std::pair<std::string, std::string>> add;  // appended
  std::vector<std::string> remove;                       // lower-case names
  bool empty() const { return set.empty() && add.empty() && remove.empty(); }
};

struct RouteConfig {
  std::string name;  // `name` key, or the route's index in file order ("0", "1", ...)
  std::string listener;
  std::string host = "*";  // lower-cased: "example.com", "*.example.com" or "*"
  std::string path_prefix = "/";
  std::string pool;
  std::vector<std::string> filters;
  uint64_t max_body_bytes = 1024ull * 1024 * 1024;  // 413 above; 0 = unlimited
  // Routing always uses the normalised target; the backend gets the target as the client sent it
  // (true) or normalised (false, the default).
  bool forward_original_target = false;
  bool access_log = true;                    // false: this route's requests are not logged
  std::optional<Duration> response_timeout;  // overrides the pool's
  std::optional<Duration> idle_timeout;      // overrides the listener's (within a request)
  HeaderRules request_headers;
  HeaderRules response_headers;
  WebSocketConfig websocket;
  HttpCompressionConfig http_compression;
  size_t listener_index = 0;           // index into Config::listeners
  size_t pool_index = 0;               // index into Config::pools
  std::vector<size_t> filter_indices;  // indices into Config::filters, in order
  SourcePos pos;
};

struct BackendConfig {
  Address address;
  uint32_t weight = 1;
  SourcePos pos;
};

struct HealthConfig {
  std::string type = "http";  // "http" or "tcp"
  std::string path = "/";
  Duration interval = std::chrono::seconds(5);
  Duration timeout = std::chrono::seconds(2);
  uint32_t healthy_threshold = 2;
  uint32_t unhealthy_threshold = 3;
  uint16_t expect_status_min = 200;  // expect_status = 200, "2xx" or "200-399"
  uint16_t expect_status_max = 399;
  SourcePos pos;
};

struct PoolTls {
  std::string ca;  // resolved path; empty = system default
  bool verify = true;
  std::string sni;
  std::string cert;
  std::string key;
  SourcePos pos;
};

enum class Balance { kRoundRobin, kLeastConn, kRandom, kConsistentHash };

// Where a per-request key comes from: the client's address, a header, a cookie or a query
// parameter (a pool's hash_key; rate-limit keys).
struct KeySource {
  enum class Kind : uint8_t { kSourceIp, kHeader, kCookie, kQuery };
  Kind kind = Kind::kSourceIp;
  std::string name;                // the header, cookie or parameter name
  std::string text = "source_ip";  // as written

  // "source_ip", "header:NAME", "cookie:NAME" or "query:NAME"; nullopt (and `why`) otherwise.
  static std::optional<KeySource> parse(std::string_view text, std::string* why = nullptr);
};

struct PoolConfig {
  std::string name;
  std::vector<BackendConfig> backends;
  Balance balance = Balance::kRoundRobin;
  std::string balance_name = "round_robin";
  KeySource hash_key;
  double hash_balance_factor = 0;  // bounded load for consistent_hash; 0 = off
  std::string sticky_cookie;       // empty = off
  // Secure: nullopt = when the request came over TLS.
  std::optional<bool> sticky_cookie_secure;
  std::string sticky_cookie_samesite = "Lax";  // "Lax", "Strict" or "None"
  bool sticky_cookie_httponly = true;
  Duration connect_timeout = std::chrono::seconds(5);
  Duration response_timeout = std::chrono::seconds(60);
  Duration drain_timeout = std::chrono::seconds(30);
  uint32_t rebalance_max_per_second = 0;  // 0 = off
  uint32_t keepalive_connections = 32;    // idle upstream connections kept per worker per backend
  Duration keepalive_timeout = std::chrono::seconds(60);
  std::optional<HealthConfig> health;
  std::optional<PoolTls> tls;
  SourcePos pos;
};

// A [[filters]] entry. Its type-specific keys stay a TOML table (with source positions) that the
// filter registry validates and compiles; conf/ only checks name and type.
struct FilterConfig {
  std::string name;
  std::string type;
  std::shared_ptr<const toml::table>
      options;  // the whole [[filters]] table, name and type included
  SourcePos pos;
};

struct Config {
  std::string path;                // the main file, as given
  std::vector<std::string> files;  // every file read (main first, then includes), for watching
  ServerConfig server;
  AdminConfig admin;
  std::vector<ListenerConfig> listeners;
  std::vector<RouteConfig> routes;
  std::vector<PoolConfig> pools;
  std::vector<FilterConfig> filters;
};

// Called for each [[filters]] entry once conf/ has checked name and type; appends diagnostics for
// unknown types and bad type-specific keys. Supplied by the filter registry.
using FilterValidator = std::function<void(const FilterConfig&, Diagnostics&)>;

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when diagnostics is non-empty
  Diagnostics diagnostics;
  // What was read, also when there are errors (entries with bad values keep their defaults):
  // the later stages (certificates, files, ports) check it, so that one run reports every
  // stage's errors. Null only when no file could be read.
  std::shared_ptr<const Config> partial;
};

// Reads `path` (and its includes), validates everything, and returns either a config or every
// error found.
LoadResult loadFile(const std::string& path, const FilterValidator& validate_filter = {});

// Same, from a string (for tests); `name` is used as the file name in diagnostics, includes are
// resolved relative to the current directory.
LoadResult loadString(std::string_view text, const std::string& name,
                      const FilterValidator& validate_filter = {});

// Value parsers, exposed for reuse and unit tests. Each returns nullopt on a bad value and sets
// `why` to a short explanation.
std::optional<Duration> parseDuration(std::string_view text, std::string* why = nullptr);
std::optional<uint64_t> parseSize(std::string_view text, std::string* why = nullptr);
std::optional<Address> parseAddress(std::string_view text, std::string* why = nullptr);

}  // namespace sluice::conf
