#pragma once

// Private to conf/: turns parsed TOML documents (the main file, then its includes) into one
// Config, then checks what spans tables and files: unique names and addresses, references.

#include <memory>
#include <optional>
#include <vector>

#include "conf/config.h"
#include "conf/section.h"

namespace sluice::conf::detail {

class NameIndex;

class ConfigBuilder {
 public:
  explicit ConfigBuilder(Diagnostics& diagnostics);

  // Reads one parsed file; its arrays of tables are appended to those read before. `root` is kept
  // alive by the filters' options.
  void addDocument(const std::shared_ptr<const toml::table>& root, const FileContext& file);

  // Names unnamed routes, checks uniqueness, resolves references and validates filters. Call
  // once, after every document. Without `check_references` (a file could not be read, so names
  // may be missing for that reason alone) unknown names are not reported.
  void resolve(const FilterValidator& validate_filter, bool check_references);

  Config& config() { return config_; }

 private:
  // Where the keys that cross-checks report at were written; beside the config, not in it.
  struct ListenerOrigin {
    SourcePos name;
    SourcePos listen;
    bool has_listen = false;
    bool https_port_set = false;
  };
  struct RouteOrigin {
    SourcePos listener;
    SourcePos pool;
    std::vector<SourcePos> filters;
    SourcePos name;
    bool named = false;
    bool matchable = false;  // host and path_prefix are valid
  };
  struct NamedOrigin {
    SourcePos name;
    bool valid = false;  // filters: name and type both good, so the validator may run
  };

  // [server] and [admin] may be defined once, in any one file.
  const toml::table* singleTable(Section& top, std::string_view key,
                                 std::optional<SourcePos>& defined_at);

  void readServer(Section& s);
  void readAdmin(Section& s);
  void readListener(Section& s);
  ListenerTls readListenerTls(Section& s);
  void readCertificate(Section& s, std::vector<TlsCertificate>& out);
  void readRoute(Section& s);
  void readWebSocket(Section& s, WebSocketConfig& ws);
  void readHttpCompression(Section& s, HttpCompressionConfig& c);
  HeaderRules readHeaderRules(Section& s);
  void readPool(Section& s);
  void readBackends(Section& s, PoolConfig& pool);
  HealthConfig readHealth(Section& s);
  PoolTls readPoolTls(Section& s);
  void readFilter(Section& s, const std::shared_ptr<const toml::table>& root,
                  const toml::table& table);

  void checkListenAddresses();
  void defaultHttpsPorts();
  void resolveRoutes(const NameIndex& listeners, const NameIndex& pools, const NameIndex& filters,
                     bool check_references);
  void validateFilters(const FilterValidator& validate_filter);

  void error(const SourcePos& pos, std::string message);

  Diagnostics& diagnostics_;
  Config config_;
  std::optional<SourcePos> server_at_;
  std::optional<SourcePos> admin_at_;
  std::optional<SourcePos> admin_listen_at_;
  std::vector<ListenerOrigin> listener_origins_;
  std::vector<RouteOrigin> route_origins_;
  std::vector<NamedOrigin> pool_origins_;
  std::vector<NamedOrigin> filter_origins_;
};

}  // namespace sluice::conf::detail
