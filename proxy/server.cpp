#include "proxy/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>

#include "filters/filter.h"
#include "proxy/http/server_connection.h"
#include "proxy/log.h"
#include "proxy/net/listen.h"
#include "proxy/net/stream.h"

#include <algorithm>
#include <ctime>

namespace sluice {

SnapshotPtr loadSnapshot(const std::string& path, uint64_t generation,
                         conf::Diagnostics* diagnostics, metrics::Registry* registry,
                         upstream::BackendStates* states) {
  conf::LoadResult result = conf::loadFile(path, &filters::validateFilterConfig);
  diagnostics->insert(diagnostics->end(), result.diagnostics.begin(), result.diagnostics.end());
  if (!result.config || !result.diagnostics.empty()) {
    return nullptr;
  }
  auto snapshot = std::make_shared<Snapshot>(result.config, generation);
  if (!snapshot->buildFilters(diagnostics)) {
    return nullptr;
  }
  // Every problem of the later stages at once.
  bool resolved = snapshot->resolveBackends(diagnostics);
  bool tls = snapshot->buildTls(diagnostics);
  addUnsupportedFeatures(*snapshot->config, diagnostics);
  if (!resolved || !tls ||
      std::any_of(diagnostics->begin(), diagnostics->end(),
                  [](const conf::Diagnostic& d) { return d.error(); })) {
    return nullptr;
  }
  if (registry != nullptr) {
    snapshot->bindMetrics(*registry);
  }
  snapshot->buildBalancers(states);
  return snapshot;
}

void addUnsupportedFeatures(const conf::Config& config, conf::Diagnostics* diagnostics) {
  for (const conf::ListenerConfig& l : config.listeners) {
    if (l.proxy_protocol) {
      diagnostics->push_back(
          {l.pos, "listener '" + l.name + "': proxy_protocol is not available in this version"});
    }
  }
}

namespace {

// The backends of pools with [pools.health], for the health checker.
std::vector<upstream::HealthTarget> healthTargets(const Snapshot& snap) {
  std::vector<upstream::HealthTarget> out;
  const conf::Config& cfg = *snap.config;
  for (size_t p = 0; p < cfg.pools.size(); ++p) {
    const conf::PoolConfig& pool = cfg.pools[p];
    for (size_t b = 0; pool.health && b < pool.backends.size(); ++b) {
      const BackendRuntime& br = snap.backend(p, b);
      if (br.state != nullptr) {
        out.push_back({*pool.health, pool.name, pool.backends[b].address.text, br.addr, br.state});
      }
    }
  }
  return out;
}

void raiseFileLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

namespace {

std::string rfc3339Now() {
  time_t now = time(nullptr);
  tm t;
  gmtime_r(&now, &t);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

std::string jsonString(std::string_view s) {
  std::string out;
  appendJsonString(&out, s);
  return out;
}

std::string jsonErrors(const std::vector<std::string>& errors) {
  std::string out = "[";
  for (size_t i = 0; i < errors.size(); ++i) {
    out += (i ? "," : "") + jsonString(errors[i]);
  }
  return out + "]";
}

AdminResponse json(uint16_t status, std::string body) {
  AdminResponse r;
  r.status = status;
  r.body = std::move(body);
  r.body.push_back('\n');
  return r;
}

AdminResponse text(uint16_t status, std::string body) {
  AdminResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  r.body.push_back('\n');
  return r;
}

std::string dirName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

std::string baseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

constexpr uint64_t kDebounceMs = 300;

}  // namespace

Server::Server(SnapshotPtr snapshot) : snapshot_(std::move(snapshot)) {
  uv_loop_init(&loop_);
  loop_.data = nullptr;  // net:: keeps the loop's epoll set there (uv_loop_init keeps `data`)
  started_ms_ = uv_now(&loop_);
  last_reload_.time = rfc3339Now();
}

Server::~Server() {
  if (joiner_.joinable()) {
    joiner_.join();
  }
  uv_loop_close(&loop_);
}

bool Server::openListeners(unsigned workers, std::vector<std::vector<int>>* fds) {
  const auto& listeners = snapshot_->config->listeners;
  fds->assign(workers, {});
  for (const conf::ListenerConfig& l : listeners) {
    for (unsigned w = 0; w < workers; ++w) {
      std::string error;
      int fd = net::listenSocket(l.listen, true, &error);
      if (fd < 0) {
        LOG_ERROR("listener '%s': %s", l.name.c_str(), error.c_str());
        return false;
      }
      (*fds)[w].push_back(fd);
    }
  }
  return true;
}

bool Server::loadToken(const conf::Config& config, std::string* error) {
  if (config.admin.token_file.empty()) {
    token_.clear();
    return true;
  }
  FILE* f = fopen(config.admin.token_file.c_str(), "r");
  if (f == nullptr) {
    *error = "admin token_file '" + config.admin.token_file + "': " + strerror(errno);
    return false;
  }
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  std::string token(buf, n);
  while (!token.empty() && isspace(static_cast<unsigned char>(token.back()))) {
    token.pop_back();
  }
  if (token.empty()) {
    *error = "admin token_file '" + config.admin.token_file + "' is empty";
    return false;
  }
  token_ = token;
  return true;
}

int Server::run() {
  const conf::Config& cfg = *snapshot_->config;
  signal(SIGPIPE, SIG_IGN);
  raiseFileLimit();
  std::string error;
  if (!access_log_.open(cfg.server.access_log, &error) || !loadToken(cfg, &error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  shared_.max_connections = cfg.server.max_connections;
  unsigned workers = cfg.server.workers;
  if (workers == 0) {
    workers = std::max(1u, std::thread::hardware_concurrency());
  }
  registry_ = std::make_unique<metrics::Registry>(workers);
  // The snapshot was loaded before the worker count was known; bind its metrics now, before
  // any worker can see it.
  std::const_pointer_cast<Snapshot>(snapshot_)->bindMetrics(*registry_);
  std::const_pointer_cast<Snapshot>(snapshot_)->buildBalancers(&backend_states_);
  registry_->generation = snapshot_->generation;

  admin_ = std::make_unique<AdminServer>(
      &loop_, [this](const http::RequestHead& req) { return handleAdmin(req); });
  if (!admin_->listen(cfg.admin.listen, &error)) {
    LOG_ERROR("%s", error.c_str());
    admin_->close();
    net::runLoop(&loop_);  // let the handles close, so nothing leaks on the way out
    net::closeEventSet(&loop_);
    return 1;
  }
  std::vector<std::vector<int>> fds;
  if (!openListeners(workers, &fds)) {
    admin_->close();
    net::runLoop(&loop_);
    net::closeEventSet(&loop_);
    return 1;
  }
  metrics::WorkerSlot* worker_slots = registry_->workers();
  for (unsigned i = 0; i < workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(
        i, snapshot_, fds[i], &shared_, &access_log_,
        [](Worker& w, size_t listener, int fd, const sockaddr_storage& peer) {
          (new http::ServerConnection(&w, listener))->accept(fd, peer);
        }));
    workers_.back()->setWorkerSlot(worker_slots);
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
  uv_timer_init(&loop_, &debounce_);
  debounce_.data = this;
  health_ = std::make_unique<upstream::HealthChecker>(&loop_);
  health_->configure(healthTargets(*snapshot_));
  uv_timer_init(&loop_, &rebalance_timer_);
  rebalance_timer_.data = this;
  uv_timer_start(
      &rebalance_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->rebalance(); }, 1000,
      1000);
  loaded_fingerprint_ = fingerprint(cfg);
  watchFiles();

  for (auto& w : workers_) {
    w->start();
  }
  for (const conf::ListenerConfig& l : cfg.listeners) {
    LOG_INFO("listening on %s (%s)", l.listen.text.c_str(), l.name.c_str());
  }
  LOG_INFO("sluice %s started: %u worker%s, config %s, admin on %s", SLUICE_VERSION, workers,
           workers == 1 ? "" : "s", cfg.path.c_str(), cfg.admin.listen.text.c_str());
  net::runLoop(&loop_);
  net::closeEventSet(&loop_);  // the admin connections' epoll set
  if (joiner_.joinable()) {
    joiner_.join();
  }
  LOG_INFO("shutdown complete");
  return 0;
}

// ---- reload --------------------------------------------------------------------------------

Server::ReloadResult Server::reload(const char* trigger) {
  ReloadResult result;
  const conf::Config& cur = *snapshot_->config;
  uint64_t generation = snapshot_->generation + 1;
  conf::Diagnostics diagnostics;
  std::shared_ptr<Snapshot> next = std::const_pointer_cast<Snapshot>(
      loadSnapshot(cur.path, generation, &diagnostics, registry_.get(), &backend_states_));
  std::string token_error;
  if (next && !loadToken(*next->config, &token_error)) {
    diagnostics.push_back({conf::SourcePos{cur.path, 0, 0}, token_error});
    next.reset();
  }
  // New listeners: bind every worker's socket before anything changes, so a port in use fails
  // the reload as a whole.
  std::vector<std::vector<int>> fds(workers_.size());
  if (next && !openNewListeners(cur, *next->config, &fds, &diagnostics)) {
    next.reset();
  }
  std::vector<std::string> errors;
  for (const conf::Diagnostic& d : diagnostics) {
    if (d.error()) {
      errors.push_back(d.format());
    } else {
      LOG_WARN("%s", d.format().c_str());
    }
  }
  last_reload_.time = rfc3339Now();
  if (!next) {
    registry_->reloads_failure.inc();
    last_reload_.ok = false;
    last_reload_.errors = errors;
    loaded_fingerprint_ = fingerprint(cur);
    LOG_WARN("reload (%s) failed; generation %llu keeps running:", trigger,
             static_cast<unsigned long long>(snapshot_->generation));
    for (const std::string& e : errors) {
      LOG_WARN("  %s", e.c_str());
    }
    result.errors = std::move(errors);
    result.generation = snapshot_->generation;
    return result;
  }
  if (next->config->admin.listen.text != cur.admin.listen.text) {
    LOG_WARN("admin.listen changed to %s: the admin listener moves on restart only",
             next->config->admin.listen.text.c_str());
  }
  for (size_t w = 0; w < workers_.size(); ++w) {
    workers_[w]->updateSnapshot(next, fds[w]);
  }
  // Answer only once every worker serves the new config (bounded: a stuck worker must not
  // stall the main thread).
  for (auto& w : workers_) {
    w->waitForGeneration(generation, std::chrono::seconds(2));
  }
  snapshot_ = next;
  health_->configure(healthTargets(*snapshot_));
  shared_.max_connections = snapshot_->config->server.max_connections;
  registry_->generation = generation;
  registry_->reloads_success.inc();
  last_reload_.ok = true;
  last_reload_.errors.clear();
  loaded_fingerprint_ = fingerprint(*snapshot_->config);
  watchFiles();
  LOG_INFO("reload (%s): generation %llu is live", trigger,
           static_cast<unsigned long long>(generation));
  result.ok = true;
  result.generation = generation;
  return result;
}

bool Server::openNewListeners(const conf::Config& cur, const conf::Config& next,
                              std::vector<std::vector<int>>* fds, conf::Diagnostics* diagnostics) {
  const auto& nl = next.listeners;
  for (auto& f : *fds) {
    f.assign(nl.size(), -1);
  }
  for (size_t i = 0; i < nl.size(); ++i) {
    bool kept = false;
    for (const conf::ListenerConfig& ol : cur.listeners) {
      kept = kept || (ol.name == nl[i].name && ol.listen.text == nl[i].listen.text);
    }
    for (size_t w = 0; w < fds->size() && !kept; ++w) {
      std::string error;
      int fd = net::listenSocket(nl[i].listen, true, &error);
      if (fd < 0) {
        diagnostics->push_back({nl[i].pos, "listener '" + nl[i].name + "': " + error});
        for (auto& f : *fds) {
          for (int& opened : f) {
            if (opened >= 0) {
              ::close(opened);
            }
            opened = -1;
          }
        }
        return false;
      }
      (*fds)[w][i] = fd;
    }
  }
  return true;
}

std::string Server::fingerprint(const conf::Config& config) const {
  std::string all;
  for (const std::string& path : config.files) {
    FILE* f = fopen(path.c_str(), "rb");
    all += path;
    all.push_back('\0');
    if (f != nullptr) {
      char buf[8192];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        all.append(buf, n);
      }
      fclose(f);
    }
    all.push_back('\0');
  }
  return std::to_string(std::hash<std::string>{}(all)) + ":" + std::to_string(all.size());
}

void Server::watchFiles() {
  for (uv_fs_event_t* w : watchers_) {
    uv_close(reinterpret_cast<uv_handle_t*>(w),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  }
  watchers_.clear();
  // Watch directories, not files: editors and config management replace files by renaming.
  std::vector<std::string> dirs;
  for (const std::string& file : snapshot_->config->files) {
    std::string dir = dirName(file);
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) {
      dirs.push_back(dir);
    }
  }
  for (const std::string& dir : dirs) {
    auto* w = new uv_fs_event_t;
    uv_fs_event_init(&loop_, w);
    w->data = this;
    if (uv_fs_event_start(w, &Server::onFsEvent, dir.c_str(), 0) != 0) {
      LOG_WARN("cannot watch %s for config changes", dir.c_str());
      uv_close(reinterpret_cast<uv_handle_t*>(w),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
      continue;
    }
    watchers_.push_back(w);
  }
}

void Server::onFsEvent(uv_fs_event_t* handle, const char* filename, int, int status) {
  auto* s = static_cast<Server*>(handle->data);
  if (status < 0 || s->shutting_down_) {
    return;
  }
  bool ours = filename == nullptr;
  for (const std::string& file : s->snapshot_->config->files) {
    ours = ours || baseName(file) == filename;
  }
  // New files matching an include pattern count too: any *.toml in a watched directory.
  std::string_view name = filename != nullptr ? filename : "";
  if (!ours && name.ends_with(".toml")) {
    ours = true;
    s->new_file_seen_ = true;  // may match an include pattern: the fingerprint cannot tell
  }
  if (ours) {
    uv_timer_start(&s->debounce_, &Server::onDebounce, kDebounceMs, 0);
  }
}

void Server::onDebounce(uv_timer_t* timer) {
  auto* s = static_cast<Server*>(timer->data);
  bool new_file = s->new_file_seen_;
  s->new_file_seen_ = false;
  if (s->fingerprint(*s->snapshot_->config) == s->loaded_fingerprint_) {
    if (!new_file) {
      return;  // touched, not changed (or the same content that failed already)
    }
    // A new *.toml beside the config: reload only if an include pattern now matches it.
    conf::Diagnostics diagnostics;
    SnapshotPtr probe = loadSnapshot(s->snapshot_->config->path, 0, &diagnostics);
    if (probe && probe->config->files == s->snapshot_->config->files) {
      return;
    }
  }
  s->reload("config file changed");
}

// ---- admin API -----------------------------------------------------------------------------

namespace {
// A DNS-rebinding page reaches the admin listener with its own name in Host. Only an IP literal,
// "localhost" or a name in [admin] allowed_hosts is answered (a request without Host, from a
// non-browser HTTP/1.0 client, too).
bool adminHostAllowed(std::string_view host, const std::vector<std::string>& allowed) {
  if (host.empty()) {
    return true;
  }
  std::string_view name = host;
  if (name.front() == '[') {
    size_t close = name.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    name = name.substr(1, close - 1);
  } else if (size_t colon = name.rfind(':'); colon != std::string_view::npos) {
    name = name.substr(0, colon);
  }
  std::string n(name);
  for (char& c : n) {
    c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  }
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(AF_INET, n.c_str(), buf) == 1 || inet_pton(AF_INET6, n.c_str(), buf) == 1 ||
      n == "localhost") {
    return true;
  }
  return std::find(allowed.begin(), allowed.end(), n) != allowed.end();
}
}  // namespace

AdminResponse Server::handleAdmin(const http::RequestHead& req) {
  if (!adminHostAllowed(req.get("host").value_or(std::string_view()),
                        snapshot_->config->admin.allowed_hosts)) {
    return text(403, "this Host is not allowed on the admin API (see [admin] allowed_hosts)");
  }
  std::string_view path = req.url;
  path = path.substr(0, path.find('?'));
  bool get = req.method == "GET" || req.method == "HEAD";
  bool post = req.method == "POST";
  auto authorized = [&] {
    if (token_.empty()) {
      return true;
    }
    const http::Header* h = req.find("authorization");
    return h != nullptr && h->value == "Bearer " + token_;
  };
  auto unauthorized = [] {
    AdminResponse r = json(401, R"({"error":"missing or wrong bearer token"})");
    r.headers = "WWW-Authenticate: Bearer\r\n";
    return r;
  };

  if (path == "/healthz") {
    if (!get) {
      return text(405, "method not allowed");
    }
    return shutting_down_ ? text(503, "shutting down") : text(200, "ok");
  }
  if (path == "/metrics") {
    if (!get) {
      return text(405, "method not allowed");
    }
    std::vector<std::tuple<std::string, std::string, std::string>> states;
    uint64_t now = upstream::steadyNowMs();
    const conf::Config& cfg = *snapshot_->config;
    for (size_t p = 0; p < cfg.pools.size(); ++p) {
      for (size_t b = 0; b < cfg.pools[p].backends.size(); ++b) {
        states.emplace_back(cfg.pools[p].name, cfg.pools[p].backends[b].address.text,
                            snapshot_->backend(p, b).state->stateName(now));
      }
    }
    AdminResponse r = text(200, registry_->render(states));
    r.body.pop_back();  // render() ends with a newline already
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    return r;
  }
  if (path == "/api/status") {
    if (!get) {
      return text(405, "method not allowed");
    }
    return json(200, statusJson());
  }
  if (path == "/api/reload") {
    if (!post) {
      return text(405, "method not allowed: use POST");
    }
    if (!authorized()) {
      return unauthorized();
    }
    ReloadResult r = reload("admin API");
    if (!r.ok) {
      return json(400, R"({"result":"failure","generation":)" + std::to_string(r.generation) +
                           R"(,"errors":)" + jsonErrors(r.errors) + "}");
    }
    return json(200, R"({"result":"success","generation":)" + std::to_string(r.generation) + "}");
  }
  if (path.starts_with("/api/pools/")) {
    if (!post) {
      return text(405, "method not allowed: use POST");
    }
    if (!authorized()) {
      return unauthorized();
    }
    return drainEndpoint(path.substr(11));
  }
  return json(404, R"({"error":"unknown endpoint"})");
}

// /api/pools/{pool}/backends/{address}/drain|undrain
AdminResponse Server::drainEndpoint(std::string_view rest) {
  size_t b = rest.find("/backends/");
  size_t last = rest.rfind('/');
  if (b == std::string_view::npos || last <= b + 10) {
    return json(404, R"({"error":"unknown endpoint"})");
  }
  std::string pool(rest.substr(0, b));
  std::string address(rest.substr(b + 10, last - b - 10));
  std::string_view action = rest.substr(last + 1);
  const conf::Config& cfg = *snapshot_->config;
  const conf::PoolConfig* found_pool = nullptr;
  upstream::BackendState* state = nullptr;
  for (size_t p = 0; p < cfg.pools.size(); ++p) {
    for (size_t i = 0; i < cfg.pools[p].backends.size(); ++i) {
      if (cfg.pools[p].name == pool && cfg.pools[p].backends[i].address.text == address) {
        found_pool = &cfg.pools[p];
        state = snapshot_->backend(p, i).state;
      }
    }
  }
  if (state == nullptr || (action != "drain" && action != "undrain")) {
    return json(404, R"({"error":"unknown pool, backend or action"})");
  }
  bool drain = action == "drain";
  state->admin_drain = drain;
  conf::Duration timeout = found_pool->drain_timeout;
  for (auto& w : workers_) {
    Worker* worker = w.get();
    if (drain) {
      worker->post(
          [worker, pool, address, timeout] { worker->drainBackend(pool, address, timeout); });
    } else {
      worker->post([worker, pool, address] { worker->undrainBackend(pool, address); });
    }
  }
  LOG_INFO("admin: pool '%s' backend %s %s", pool.c_str(), address.c_str(),
           drain ? "draining (no new connections; WebSockets get 1012 after drain_timeout)"
                 : "undrained");
  return json(200, R"({"pool":)" + jsonString(pool) + R"(,"backend":)" + jsonString(address) +
                       R"(,"state":)" + jsonString(state->stateName(upstream::steadyNowMs())) +
                       "}");
}

void Server::rebalance() {
  // Gradual rebalance, for pools with rebalance.max_per_second: when one backend carries more
  // than its share (connections per unit of weight), close up to N of its WebSockets per second
  // with 1012 so that their clients reconnect and land on the others. Each tick asks one
  // worker, so no more than N close per second in all.
  const conf::Config& cfg = *snapshot_->config;
  uint64_t now = upstream::steadyNowMs();
  ++rebalance_tick_;
  for (size_t p = 0; p < cfg.pools.size(); ++p) {
    const conf::PoolConfig& pool = cfg.pools[p];
    if (pool.rebalance_max_per_second == 0 || pool.backends.size() < 2) {
      continue;
    }
    int64_t total = 0;
    uint64_t weights = 0;
    int most = -1;
    double most_load = 0;
    double least_load = 1e18;
    for (size_t b = 0; b < pool.backends.size(); ++b) {
      const upstream::BackendState* st = snapshot_->backend(p, b).state;
      uint32_t w = pool.backends[b].weight;
      if (w == 0 || !st->available(now)) {
        continue;
      }
      int64_t active = st->active.load(std::memory_order_relaxed);
      total += active;
      weights += w;
      double load = static_cast<double>(active) / w;
      least_load = std::min(least_load, load);
      if (most < 0 || load > most_load) {
        most = static_cast<int>(b);
        most_load = load;
      }
    }
    if (most < 0 || weights == 0 || most_load - least_load <= 1.0) {
      continue;
    }
    uint32_t w = pool.backends[static_cast<size_t>(most)].weight;
    int64_t fair = (total * w + static_cast<int64_t>(weights) - 1) / static_cast<int64_t>(weights);
    int64_t active = snapshot_->backend(p, static_cast<size_t>(most)).state->active.load();
    int64_t excess = active - fair;
    if (excess <= 0) {
      continue;
    }
    size_t budget = static_cast<size_t>(std::min<int64_t>(excess, pool.rebalance_max_per_second));
    std::string name = pool.name;
    std::string address = pool.backends[static_cast<size_t>(most)].address.text;
    Worker* worker = workers_[rebalance_tick_ % workers_.size()].get();
    worker->post([worker, name, address, budget, active, fair] {
      size_t moved = worker->shedWebSockets(name, address, budget);
      if (moved > 0) {
        LOG_INFO(
            "rebalance: pool '%s' backend %s had %lld connections (fair share %lld): closed "
            "%zu WebSockets with 1012 so that they reconnect elsewhere",
            name.c_str(), address.c_str(), static_cast<long long>(active),
            static_cast<long long>(fair), moved);
      }
    });
  }
}

std::string Server::statusJson() const {
  const conf::Config& cfg = *snapshot_->config;
  std::string o = "{\"version\":" + jsonString(SLUICE_VERSION);
  o += ",\"uptime_seconds\":" + std::to_string((uv_now(&loop_) - started_ms_) / 1000);
  o += ",\"shutting_down\":" + std::string(shutting_down_ ? "true" : "false");
  o += ",\"config\":{\"path\":" + jsonString(cfg.path) +
       ",\"generation\":" + std::to_string(snapshot_->generation) +
       ",\"files\":" + jsonErrors(cfg.files);
  o += ",\"last_reload\":{\"result\":" + jsonString(last_reload_.ok ? "success" : "failure") +
       ",\"time\":" + jsonString(last_reload_.time) +
       ",\"errors\":" + jsonErrors(last_reload_.errors) + "}}";
  o += ",\"listeners\":[";
  for (size_t i = 0; i < cfg.listeners.size(); ++i) {
    const conf::ListenerConfig& l = cfg.listeners[i];
    o += (i ? "," : "") + std::string("{\"name\":") + jsonString(l.name) +
         ",\"listen\":" + jsonString(l.listen.text) +
         ",\"connections\":" + std::to_string(registry_->listenerConnections(l.name)) + "}";
  }
  o += "],\"routes\":[";
  for (size_t i = 0; i < cfg.routes.size(); ++i) {
    const conf::RouteConfig& r = cfg.routes[i];
    o += (i ? "," : "") + std::string("{\"name\":") + jsonString(r.name) +
         ",\"listener\":" + jsonString(r.listener) + ",\"host\":" + jsonString(r.host) +
         ",\"path_prefix\":" + jsonString(r.path_prefix) + ",\"pool\":" + jsonString(r.pool) +
         ",\"filters\":" + jsonErrors(r.filters) +
         ",\"websocket\":" + (r.websocket.enabled ? "true" : "false") + "}";
  }
  o += "],\"pools\":[";
  for (size_t i = 0; i < cfg.pools.size(); ++i) {
    const conf::PoolConfig& p = cfg.pools[i];
    o += (i ? "," : "") + std::string("{\"name\":") + jsonString(p.name) +
         ",\"balance\":" + jsonString(p.balance_name) + ",\"backends\":[";
    for (size_t j = 0; j < p.backends.size(); ++j) {
      const conf::BackendConfig& b = p.backends[j];
      auto [conns, websockets] = registry_->backendConnections(p.name, b.address.text);
      o += (j ? "," : "") + std::string("{\"address\":") + jsonString(b.address.text) +
           ",\"weight\":" + std::to_string(b.weight) + ",\"state\":" +
           jsonString(snapshot_->backend(i, j).state->stateName(upstream::steadyNowMs())) +
           ",\"connections\":" + std::to_string(conns) +
           ",\"websockets\":" + std::to_string(websockets) + "}";
    }
    o += "]}";
  }
  o += "]}";
  return o;
}

// ---- signals and shutdown ------------------------------------------------------------------

void Server::onSignal(uv_signal_t* handle, int signum) {
  auto* s = static_cast<Server*>(handle->data);
  if (signum == SIGHUP) {
    if (!s->shutting_down_) {
      s->reload("SIGHUP");
    }
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
  LOG_INFO("%s: shutting down (in-flight requests and WebSockets have %lld ms)", strsignal(signum),
           static_cast<long long>(timeout.count()));
  uv_timer_stop(&debounce_);
  uv_timer_stop(&rebalance_timer_);
  health_->stop();
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
  close(&s->debounce_);
  close(&s->rebalance_timer_);
  for (uv_fs_event_t* w : s->watchers_) {
    uv_close(reinterpret_cast<uv_handle_t*>(w),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  }
  s->watchers_.clear();
  s->admin_->close();
}

}  // namespace sluice
