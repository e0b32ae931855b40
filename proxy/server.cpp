#include "proxy/server.h"

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>

#include "filters/filter.h"
#include "proxy/log.h"

namespace sluice {

SnapshotPtr loadSnapshot(const std::string& path, uint64_t generation,
                         std::vector<std::string>* errors) {
  conf::LoadResult result = conf::loadFile(path, &filters::validateFilterConfig);
  for (const conf::Diagnostic& d : result.diagnostics) {
    errors->push_back(d.format());
  }
  if (!result.config || !result.diagnostics.empty()) {
    return nullptr;
  }
  auto snapshot = std::make_shared<Snapshot>(result.config, generation);
  conf::Diagnostics filter_errors;
  if (!snapshot->buildFilters(&filter_errors)) {
    for (const conf::Diagnostic& d : filter_errors) {
      errors->push_back(d.format());
    }
    return nullptr;
  }
  if (!snapshot->resolveBackends(errors)) {
    return nullptr;
  }
  return snapshot;
}

std::string formatWarning(const conf::Diagnostic& d) {
  std::string line = d.format();
  size_t e = line.find(": error: ");
  if (e != std::string::npos) {
    line.replace(e, 9, ": warning: ");
  }
  return line;
}

Unsupported unsupportedFeatures(const conf::Config& config) {
  Unsupported u;
  auto at = [](const conf::SourcePos& pos, std::string what) {
    return conf::Diagnostic{pos, std::move(what)};
  };
  for (const conf::ListenerConfig& l : config.listeners) {
    if (l.tls) {
      u.fatal.push_back(at(l.tls->pos.line ? l.tls->pos : l.pos,
                           "listener '" + l.name + "': TLS termination is not available in this "
                           "version; refusing to serve plain HTTP in its place"));
    }
    if (l.proxy_protocol) {
      u.fatal.push_back(at(l.pos, "listener '" + l.name + "': proxy_protocol is not available in "
                                  "this version"));
    }
    if (l.redirect_to_https) {
      u.warnings.push_back(at(l.pos, "listener '" + l.name + "': redirect_to_https is not "
                                     "available in this version and is ignored"));
    }
  }
  for (const conf::PoolConfig& p : config.pools) {
    if (p.tls) {
      u.fatal.push_back(at(p.tls->pos.line ? p.tls->pos : p.pos,
                           "pool '" + p.name + "': TLS toward backends is not available in this "
                           "version; refusing to send plain HTTP in its place"));
    }
    if (p.balance != conf::Balance::kRoundRobin) {
      u.warnings.push_back(at(p.pos, "pool '" + p.name + "': balance '" + p.balance_name +
                                         "' is not available in this version; using round_robin"));
    }
    if (!p.sticky_cookie.empty() || p.health || p.rebalance_max_per_second > 0) {
      u.warnings.push_back(at(p.pos, "pool '" + p.name + "': sticky_cookie, health checks and "
                                     "rebalance are not available in this version and are ignored"));
    }
  }
  return u;
}

Server::Server(SnapshotPtr snapshot) : snapshot_(std::move(snapshot)) {
  uv_loop_init(&loop_);
}

Server::~Server() {
  if (joiner_.joinable()) {
    joiner_.join();
  }
  uv_loop_close(&loop_);
}

namespace {

int listenSocket(const conf::Address& addr, std::string* error) {
  sockaddr_storage ss{};
  std::string host = addr.host == "localhost" ? "127.0.0.1" : addr.host;
  int rc = addr.ipv6 ? uv_ip6_addr(host.c_str(), addr.port, reinterpret_cast<sockaddr_in6*>(&ss))
                     : uv_ip4_addr(host.c_str(), addr.port, reinterpret_cast<sockaddr_in*>(&ss));
  if (rc != 0) {
    *error = "bad listen address '" + addr.text + "'";
    return -1;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (addr.ipv6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    *error = "cannot listen on " + addr.text + ": " + strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

void raiseFileLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

bool Server::openListeners(unsigned workers, std::vector<std::vector<int>>* fds) {
  const auto& listeners = snapshot_->config->listeners;
  fds->assign(workers, {});
  for (const conf::ListenerConfig& l : listeners) {
    for (unsigned w = 0; w < workers; ++w) {
      std::string error;
      int fd = listenSocket(l.listen, &error);
      if (fd < 0) {
        LOG_ERROR("listener '%s': %s", l.name.c_str(), error.c_str());
        return false;
      }
      (*fds)[w].push_back(fd);
    }
  }
  return true;
}

int Server::run() {
  const conf::Config& cfg = *snapshot_->config;
  signal(SIGPIPE, SIG_IGN);
  raiseFileLimit();
  std::string error;
  if (!access_log_.open(cfg.server.access_log, &error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  shared_.max_connections = cfg.server.max_connections;
  unsigned workers = cfg.server.workers;
  if (workers == 0) {
    workers = std::max(1u, std::thread::hardware_concurrency());
  }
  std::vector<std::vector<int>> fds;
  if (!openListeners(workers, &fds)) {
    return 1;
  }
  for (unsigned i = 0; i < workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(i, snapshot_, fds[i], &shared_, &access_log_));
  }

  auto watch = [this](uv_signal_t* h, int signum) {
    uv_signal_init(&loop_, h);
    h->data = this;
    uv_signal_start(h, &Server::onSignal, signum);
  };
  watch(&sigterm_, SIGTERM);
  watch(&sigint_, SIGINT);
  watch(&sighup_, SIGHUP);
  uv_async_init(&loop_, &workers_done_, &Server::onWorkersDone);
  workers_done_.data = this;

  for (auto& w : workers_) {
    w->start();
  }
  for (const conf::ListenerConfig& l : cfg.listeners) {
    LOG_INFO("listening on %s (%s)", l.listen.text.c_str(), l.name.c_str());
  }
  LOG_INFO("sluice %s started: %u worker%s, config %s", SLUICE_VERSION, workers,
           workers == 1 ? "" : "s", cfg.path.c_str());
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (joiner_.joinable()) {
    joiner_.join();
  }
  LOG_INFO("shutdown complete");
  return 0;
}

void Server::onSignal(uv_signal_t* handle, int signum) {
  auto* s = static_cast<Server*>(handle->data);
  if (signum == SIGHUP) {
    LOG_WARN("SIGHUP: live reload is not available in this build; the running config stays");
    return;
  }
  s->beginShutdown(signum);
}

void Server::beginShutdown(int signum) {
  if (shutting_down_) {
    LOG_WARN("second signal (%s): exiting now", strsignal(signum));
    fflush(stderr);
    _exit(1);
  }
  shutting_down_ = true;
  conf::Duration timeout = snapshot_->config->server.shutdown_timeout;
  LOG_INFO("%s: shutting down (in-flight requests have %lld ms)", strsignal(signum),
           static_cast<long long>(timeout.count()));
  for (auto& w : workers_) {
    w->requestShutdown(timeout);
  }
  joiner_ = std::thread([this] {
    for (auto& w : workers_) {
      w->join();
    }
    uv_async_send(&workers_done_);
  });
}

void Server::onWorkersDone(uv_async_t* async) {
  auto* s = static_cast<Server*>(async->data);
  auto close = [](auto* h) { uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr); };
  close(&s->sigterm_);
  close(&s->sigint_);
  close(&s->sighup_);
  close(&s->workers_done_);
}

}  // namespace sluice
