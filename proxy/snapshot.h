#pragma once

// What the data path needs from one config generation, built once on the main thread and shared
// read-only by every worker: the config itself, the router, and resolved backend addresses.
// Connections hold a shared_ptr to the snapshot they started with; the last holder frees it.

#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "filters/filter.h"
#include "proxy/metrics.h"
#include "proxy/net/tls.h"
#include "proxy/router.h"
#include "proxy/upstream/balancer.h"

namespace sluice {

struct Snapshot {
  std::shared_ptr<const conf::Config> config;
  Router router;
  uint64_t generation = 0;
  // backend_addrs[pool][backend]
  std::vector<std::vector<sockaddr_storage>> backend_addrs;
  // filters[i]: the built [[filters]] entry i; route_filters[route]: the route's chain, in order.
  std::vector<filters::FilterPtr> filters;
  std::vector<std::vector<filters::ConstFilterPtr>> route_filters;
  // Metric slots resolved for this config's listeners, routes, pools, backends and filters.
  metrics::Bound metrics;
  // backend_states[pool][backend]: shared runtime state (null until bindBackendStates).
  std::vector<std::vector<upstream::BackendState*>> backend_states;
  // One balancer per pool; sticky_tokens[pool][backend]: the opaque sticky-cookie value.
  std::vector<upstream::Balancer> balancers;
  std::vector<std::vector<std::string>> sticky_tokens;
  // listener_tls[listener] / pool_tls[pool]: null for plain TCP.
  std::vector<std::shared_ptr<net::ServerTls>> listener_tls;
  std::vector<std::shared_ptr<net::ClientTls>> pool_tls;
  // upstream_keys[pool][backend]: what an idle keep-alive connection may be reused for: the
  // same pool, address and TLS settings (never a plain connection for a TLS pool, or one that
  // was not verified for one that verifies).
  std::vector<std::vector<std::string>> upstream_keys;

  Snapshot(std::shared_ptr<const conf::Config> c, uint64_t gen);
  // Resolves every backend address; appends "pool 'x': cannot resolve 'host:port': why" errors.
  bool resolveBackends(std::vector<std::string>* errors);
  // Builds every [[filters]] entry and each route's chain; appends diagnostics on failure.
  bool buildFilters(conf::Diagnostics* diagnostics);
  // Loads certificates and builds TLS contexts; appends "FILE:LINE:COL: error: ..." lines.
  bool buildTls(std::vector<std::string>* errors);
  // Main thread: resolves every metric slot this config uses.
  void bindMetrics(metrics::Registry& registry);
  // Main thread: attaches shared backend state and builds the balancers. Without `states`
  // (--check), balancers see every backend as available.
  void buildBalancers(upstream::BackendStates* states);
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

// The start of every upstream key of a pool's backend (see Snapshot::upstream_keys).
std::string upstreamKey(const std::string& pool, const std::string& address);

}  // namespace sluice
