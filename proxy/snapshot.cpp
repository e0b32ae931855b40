#include "proxy/snapshot.h"

#include <netdb.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstring>

namespace sluice {

Snapshot::Snapshot(std::shared_ptr<const conf::Config> c, uint64_t gen)
    : config(std::move(c)), router(*config), generation(gen) {}

bool Snapshot::resolveBackends(std::vector<std::string>* errors) {
  bool ok = true;
  backend_addrs.assign(config->pools.size(), {});
  for (size_t p = 0; p < config->pools.size(); ++p) {
    const conf::PoolConfig& pool = config->pools[p];
    for (const conf::BackendConfig& b : pool.backends) {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      std::string port = std::to_string(b.address.port);
      int rc = getaddrinfo(b.address.host.c_str(), port.c_str(), &hints, &res);
      sockaddr_storage ss{};
      if (rc != 0 || res == nullptr) {
        ok = false;
        errors->push_back(b.pos.file + ":" + std::to_string(b.pos.line) + ":" +
                          std::to_string(b.pos.column) + ": error: pool '" + pool.name +
                          "': cannot resolve '" + b.address.text + "': " + gai_strerror(rc));
      } else {
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
      }
      if (res != nullptr) {
        freeaddrinfo(res);
      }
      backend_addrs[p].push_back(ss);
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

bool Snapshot::buildTls(std::vector<std::string>* errors) {
  bool ok = true;
  for (const conf::ListenerConfig& l : config->listeners) {
    listener_tls.push_back(l.tls ? net::ServerTls::build(*l.tls, errors) : nullptr);
    ok = ok && (!l.tls || listener_tls.back() != nullptr);
  }
  for (const conf::PoolConfig& p : config->pools) {
    pool_tls.push_back(p.tls ? net::ClientTls::build(*p.tls, errors) : nullptr);
    ok = ok && (!p.tls || pool_tls.back() != nullptr);
    std::string tls = "plain";
    if (p.tls) {
      tls = "tls|" + p.tls->ca + "|" + (p.tls->verify ? "verify" : "noverify") + "|" + p.tls->sni +
            "|" + p.tls->cert + "|" + p.tls->key;
    }
    upstream_keys.emplace_back();
    for (const conf::BackendConfig& b : p.backends) {
      upstream_keys.back().push_back(upstreamKey(p.name, b.address.text) + tls);
    }
  }
  return ok;
}

void Snapshot::buildBalancers(upstream::BackendStates* states) {
  backend_states.assign(config->pools.size(), {});
  balancers.clear();
  sticky_tokens.assign(config->pools.size(), {});
  for (size_t p = 0; p < config->pools.size(); ++p) {
    const conf::PoolConfig& pool = config->pools[p];
    for (const conf::BackendConfig& b : pool.backends) {
      backend_states[p].push_back(states != nullptr ? states->get(pool.name, b.address.text)
                                                    : nullptr);
      // Opaque and stable across restarts and instances: a hash of pool and address.
      char token[24];
      snprintf(token, sizeof token, "%016llx",
               static_cast<unsigned long long>(
                   upstream::Balancer::hash(pool.name + "/" + b.address.text)));
      sticky_tokens[p].push_back(token);
    }
    balancers.emplace_back(pool, backend_states[p]);
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
  for (const conf::PoolConfig& p : config->pools) {
    b.pools.push_back(registry.pool(p.name));
    b.backends.emplace_back();
    for (const conf::BackendConfig& be : p.backends) {
      b.backends.back().push_back(registry.backend(p.name, be.address.text));
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
