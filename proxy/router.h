#pragma once

// Route selection: listener, then Host (exact, then the longest "*.suffix", then "*"), then the
// longest path_prefix among that host's routes. Built once per config snapshot; lookups allocate
// nothing.

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "conf/config.h"

namespace sluice {

class Router {
 public:
  explicit Router(const conf::Config& config);

  // Returns the index into Config::routes, or -1 when no route matches. `host` may carry a port
  // and any letter case; `path` may carry a query string.
  int match(size_t listener_index, std::string_view host, std::string_view path) const;

  // Lower-cases `host` and strips a port and a trailing dot: "Example.COM:8080" -> "example.com".
  static std::string normalizeHost(std::string_view host);

 private:
  struct HostRoutes {
    // Route indices sorted by descending path_prefix length.
    std::vector<int> routes;
  };
  struct ListenerRoutes {
    std::unordered_map<std::string, HostRoutes> exact;
    // "*.example.com" stored as ".example.com", sorted by descending suffix length.
    std::vector<std::pair<std::string, HostRoutes>> suffixes;
    HostRoutes any;
    bool has_any = false;
  };

  const HostRoutes* hostRoutes(const ListenerRoutes& lr, std::string_view host) const;

  const conf::Config& config_;
  std::vector<ListenerRoutes> listeners_;
};

}  // namespace sluice
