#include "proxy/snapshot.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstdio>
#include <cstring>

namespace sluice {

Snapshot::Snapshot(std::shared_ptr<const conf::Config> c, uint64_t gen)
    : config(std::move(c)), router(*config), generation(gen) {
  pools.resize(config->pools.size());
  trusted_proxies.resize(config->listeners.size());
  for (size_t p = 0; p < config->pools.size(); ++p) {
    pools[p].backends.resize(config->pools[p].backends.size());
  }
  for (const conf::RouteConfig& r : config->routes) {
    const conf::HttpCompressionConfig& c = r.http_compression;
    if (!c.enabled) {
      route_compression.emplace_back();
      continue;
    }
    auto rc = std::make_unique<RouteCompression>();
    rc->policy.codings.clear();
    for (const std::string& coding : c.codings) {
      rc->policy.codings.push_back(coding == "br" ? http::Coding::kBrotli : http::Coding::kGzip);
    }
    if (!c.types.empty()) {
      rc->policy.types = c.types;
    }
    rc->policy.min_length = c.min_length;
    rc->options.gzip_level = c.gzip_level;
    rc->options.brotli_quality = c.brotli_quality;
    route_compression.push_back(std::move(rc));
  }
}

bool Snapshot::resolveBackends(conf::Diagnostics* diagnostics) {
  bool ok = true;
  for (size_t p = 0; p < config->pools.size(); ++p) {
    const conf::PoolConfig& pool = config->pools[p];
    for (size_t i = 0; i < pool.backends.size(); ++i) {
      const conf::BackendConfig& b = pool.backends[i];
      if (!b.address.unix_path.empty()) {
        auto* un = reinterpret_cast<sockaddr_un*>(&pools[p].backends[i].addr);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, b.address.unix_path.c_str(), b.address.unix_path.size() + 1);
        continue;
      }
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      std::string port = std::to_string(b.address.port);
      int rc = getaddrinfo(b.address.host.c_str(), port.c_str(), &hints, &res);
      if (rc != 0 || res == nullptr) {
        ok = false;
        diagnostics->push_back({b.pos, "pool '" + pool.name + "': cannot resolve '" +
                                           b.address.text + "': " + gai_strerror(rc)});
      } else {
        memcpy(&pools[p].backends[i].addr, res->ai_addr, res->ai_addrlen);
      }
      if (res != nullptr) {
        freeaddrinfo(res);
      }
    }
  }
  return ok;
}

bool Snapshot::buildFilters(conf::Diagnostics* diagnostics) {
  size_t errors = diagnostics->size();
  for (const conf::FilterConfig& f : config->filters) {
    filters.push_back(filters::buildFilter(f, *diagnostics));
  }
  if (diagnostics->size() != errors) {
    return false;
  }
  route_filters.assign(config->routes.size(), {});
  for (size_t r = 0; r < config->routes.size(); ++r) {
    for (size_t idx : config->routes[r].filter_indices) {
      route_filters[r].push_back(filters[idx]);
    }
  }
  return true;
}

std::string upstreamKey(const std::string& pool, const std::string& address) {
  return pool + "|" + address + "|";
}

bool Snapshot::buildTls(conf::Diagnostics* diagnostics) {
  bool ok = true;
  for (const conf::ListenerConfig& l : config->listeners) {
    listener_tls.push_back(l.tls ? net::ServerTls::build(*l.tls, diagnostics) : nullptr);
    ok = ok && (!l.tls || listener_tls.back() != nullptr);
  }
  for (size_t p = 0; p < config->pools.size(); ++p) {
    const conf::PoolConfig& pc = config->pools[p];
    pools[p].tls = pc.tls ? net::ClientTls::build(*pc.tls, diagnostics) : nullptr;
    ok = ok && (!pc.tls || pools[p].tls != nullptr);
    std::string tls = "plain";
    if (pc.tls) {
      tls = "tls|" + pc.tls->ca + "|" + (pc.tls->verify ? "verify" : "noverify") + "|" +
            pc.tls->sni + "|" + pc.tls->cert + "|" + pc.tls->key;
    }
    for (size_t b = 0; b < pc.backends.size(); ++b) {
      pools[p].backends[b].upstream_key = upstreamKey(pc.name, pc.backends[b].address.text) + tls;
    }
  }
  return ok;
}

bool Snapshot::buildTrustedProxies(conf::Diagnostics* diagnostics) {
  bool ok = true;
  for (size_t l = 0; l < config->listeners.size(); ++l) {
    const conf::ListenerConfig& lc = config->listeners[l];
    for (size_t i = 0; i < lc.trusted_proxies.size(); ++i) {
      std::string why;
      if (!trusted_proxies[l].add(lc.trusted_proxies[i], &why)) {
        conf::SourcePos at = i < lc.trusted_proxies_pos.size() ? lc.trusted_proxies_pos[i] : lc.pos;
        diagnostics->push_back({at, "listener '" + lc.name + "': 'trusted_proxies': " + why});
        ok = false;
      }
    }
  }
  return ok;
}

std::vector<metrics::CertificateExpiry> Snapshot::certificateExpiries() const {
  std::vector<metrics::CertificateExpiry> out;
  for (size_t l = 0; l < listener_tls.size(); ++l) {
    if (listener_tls[l]) {
      for (const net::ServerTls::Expiry& e : listener_tls[l]->expiries()) {
        out.push_back({config->listeners[l].name, e.name, e.not_after});
      }
    }
  }
  return out;
}

void Snapshot::buildBalancers(upstream::BackendStates* states) {
  for (size_t p = 0; p < config->pools.size(); ++p) {
    const conf::PoolConfig& pc = config->pools[p];
    std::vector<upstream::BackendState*> shared;
    for (size_t b = 0; b < pc.backends.size(); ++b) {
      BackendRuntime& br = pools[p].backends[b];
      br.state = states != nullptr ? states->get(pc.name, pc.backends[b].address.text) : nullptr;
      shared.push_back(br.state);
      // Opaque and stable across restarts and instances: a hash of pool and address.
      char token[24];
      snprintf(token, sizeof token, "%016llx",
               static_cast<unsigned long long>(
                   upstream::Balancer::hash(pc.name + "/" + pc.backends[b].address.text)));
      br.sticky_token = token;
    }
    pools[p].balancer.emplace(pc, std::move(shared));
  }
}

void Snapshot::bindMetrics(metrics::Registry& registry) {
  metrics::Bound& b = metrics;
  b.unrouted = registry.route("");
  for (const conf::ListenerConfig& l : config->listeners) {
    b.listeners.push_back(registry.listener(l.name));
  }
  for (const conf::RouteConfig& r : config->routes) {
    b.routes.push_back(registry.route(r.name));
  }
  for (size_t p = 0; p < config->pools.size(); ++p) {
    const conf::PoolConfig& pc = config->pools[p];
    pools[p].slots = registry.pool(pc.name);
    for (size_t i = 0; i < pc.backends.size(); ++i) {
      pools[p].backends[i].slots = registry.backend(pc.name, pc.backends[i].address.text);
    }
  }
  for (const conf::FilterConfig& f : config->filters) {
    b.filters.push_back(registry.filter(f.name));
  }
  for (const filters::FilterPtr& f : filters) {
    f->bindStats(registry);
  }
}

}  // namespace sluice
