#pragma once

// What the data path needs from one config generation, built once on the main thread and shared
// read-only by every worker: the config itself, the router, the filters, TLS contexts, and what
// each pool's backends are at run time. Connections hold a shared_ptr to the snapshot they
// started with; the last holder frees it.

#include <sys/socket.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "conf/config.h"
#include "filters/filter.h"
#include "proxy/http/compress.h"
#include "proxy/http/forwarded.h"
#include "proxy/metrics.h"
#include "proxy/net/tls.h"
#include "proxy/router.h"
#include "proxy/upstream/balancer.h"

namespace sluice {

// One backend of a pool, resolved for this snapshot.
struct BackendRuntime {
  sockaddr_storage addr{};
  // Shared by every worker and kept across reloads (null for `--check`).
  upstream::BackendState* state = nullptr;
  std::string sticky_token;  // the opaque sticky-cookie value
  // What an idle keep-alive connection may be reused for: the same pool, address and TLS
  // settings (never a plain connection for a TLS pool, or one that was not verified for one that
  // verifies).
  std::string upstream_key;
  metrics::BackendSlot* slots = nullptr;  // one per worker (null until bindMetrics)
};

struct PoolRuntime {
  std::vector<BackendRuntime> backends;
  std::shared_ptr<net::ClientTls> tls;  // null for plain TCP
  std::optional<upstream::Balancer> balancer;
  metrics::PoolSlot* slots = nullptr;  // one per worker (null until bindMetrics)
};

struct Snapshot {
  std::shared_ptr<const conf::Config> config;
  Router router;
  uint64_t generation = 0;
  // filters[i]: the built [[filters]] entry i; route_filters[route]: the route's chain, in order.
  std::vector<filters::FilterPtr> filters;
  std::vector<std::vector<filters::ConstFilterPtr>> route_filters;
  // pools[i]: config pool i at run time.
  std::vector<PoolRuntime> pools;
  // listener_tls[listener]: null for plain TCP.
  std::vector<std::shared_ptr<net::ServerTls>> listener_tls;
  // route_compression[route]: gzip/brotli responses on that route (null: off).
  struct RouteCompression {
    http::CompressPolicy policy;
    http::EncoderOptions options;
  };
  std::vector<std::unique_ptr<const RouteCompression>> route_compression;
  // trusted_proxies[listener]: whose forwarding headers and PROXY header are believed.
  std::vector<http::TrustedProxies> trusted_proxies;
  // Metric slots resolved for this config's listeners, routes and filters.
  metrics::Bound metrics;

  Snapshot(std::shared_ptr<const conf::Config> c, uint64_t gen);
  // Resolves every backend address.
  bool resolveBackends(conf::Diagnostics* diagnostics);
  // Builds every [[filters]] entry and each route's chain.
  bool buildFilters(conf::Diagnostics* diagnostics);
  // Loads certificates and builds TLS contexts.
  bool buildTls(conf::Diagnostics* diagnostics);
  // Parses each listener's trusted_proxies.
  bool buildTrustedProxies(conf::Diagnostics* diagnostics);
  // The listeners' certificates and when they expire.
  std::vector<metrics::CertificateExpiry> certificateExpiries() const;
  // Main thread: resolves every metric slot this config uses, and lets the filters declare theirs.
  void bindMetrics(metrics::Registry& registry);
  // Main thread: attaches shared backend state and builds the balancers. Without `states`
  // (--check), balancers see every backend as available.
  void buildBalancers(upstream::BackendStates* states);

  const PoolRuntime& pool(size_t i) const { return pools[i]; }
  const BackendRuntime& backend(size_t pool, size_t backend) const {
    return pools[pool].backends[backend];
  }
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

// The start of every upstream key of a pool's backend (see BackendRuntime::upstream_key).
std::string upstreamKey(const std::string& pool, const std::string& address);

}  // namespace sluice
