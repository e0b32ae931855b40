#include "proxy/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <thread>
#include <tuple>

#include "filters/filter.h"
#include "proxy/admin_page.h"
#include "proxy/http/server_connection.h"
#include "proxy/log.h"
#include "proxy/net/listen.h"
#include "proxy/net/stream.h"
#include "proxy/notify.h"
#include "proxy/privileges.h"

namespace sluice {

namespace {

bool hasErrors(const conf::Diagnostics& diagnostics) {
  return std::any_of(diagnostics.begin(), diagnostics.end(),
                     [](const conf::Diagnostic& d) { return d.error(); });
}

// A token file's first line (trailing whitespace removed); empty with `error` set on failure.
std::string readToken(const std::string& path, std::string* error) {
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) {
    *error = "cannot read token file '" + path + "': " + strerror(errno);
    return {};
  }
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  std::string token(buf, n);
  token = token.substr(0, token.find('\n'));
  while (!token.empty() && isspace(static_cast<unsigned char>(token.back()))) {
    token.pop_back();
  }
  if (token.empty()) {
    *error = "token file '" + path + "' is empty";
  }
  return token;
}

void checkTokenFiles(const conf::Config& cfg, conf::Diagnostics* diagnostics) {
  const conf::AdminConfig& a = cfg.admin;
  for (const auto& [path, pos] : {std::pair(a.token_file, a.token_file_pos),
                                  std::pair(a.read_token_file, a.read_token_file_pos)}) {
    std::string error;
    if (!path.empty() && readToken(path, &error).empty()) {
      diagnostics->push_back({pos, "[admin] " + error});
    }
  }
}

// The certificates of a config that has errors elsewhere: loaded for their diagnostics only.
void checkCertificates(const conf::Config& cfg, conf::Diagnostics* diagnostics) {
  for (const conf::ListenerConfig& l : cfg.listeners) {
    if (l.tls && !l.tls->certificates.empty()) {
      net::ServerTls::build(*l.tls, diagnostics);
    }
  }
  for (const conf::PoolConfig& p : cfg.pools) {
    if (p.tls) {
      net::ClientTls::build(*p.tls, diagnostics);
    }
  }
}

SnapshotPtr load(const std::string& path, uint64_t generation, conf::Diagnostics* diagnostics,
                 metrics::Registry* registry, upstream::BackendStates* states,
                 std::shared_ptr<const conf::Config>* read) {
  conf::LoadResult result = conf::loadFile(path, &filters::validateFilterConfig);
  diagnostics->insert(diagnostics->end(), result.diagnostics.begin(), result.diagnostics.end());
  if (read != nullptr) {
    *read = result.partial;
  }
  if (!result.config || !result.diagnostics.empty()) {
    // The stages that do not need a valid config still run: a typo must not hide a missing
    // certificate.
    if (result.partial) {
      checkCertificates(*result.partial, diagnostics);
      checkTokenFiles(*result.partial, diagnostics);
    }
    return nullptr;
  }
  auto snapshot = std::make_shared<Snapshot>(result.config, generation);
  bool filters = snapshot->buildFilters(diagnostics);
  // Every problem of the later stages at once.
  bool resolved = snapshot->resolveBackends(diagnostics);
  bool tls = snapshot->buildTls(diagnostics);
  bool trusted = snapshot->buildTrustedProxies(diagnostics);
  checkTokenFiles(*snapshot->config, diagnostics);
  addUnsupportedFeatures(*snapshot->config, diagnostics);
  if (!filters || !resolved || !tls || !trusted || hasErrors(*diagnostics)) {
    return nullptr;
  }
  if (registry != nullptr) {
    snapshot->bindMetrics(*registry);
  }
  snapshot->buildBalancers(states);
  return snapshot;
}

// Whether a log target could be opened, without creating the file (for --check).
void checkLogTarget(const std::string& target, const conf::SourcePos& pos, const char* key,
                    conf::Diagnostics* diagnostics) {
  if (target == "stdout" || target == "stderr" || target == "off") {
    return;
  }
  std::string dir = target.substr(0, target.rfind('/'));
  if (dir.empty()) {
    dir = "/";
  }
  if (access(target.c_str(), F_OK) == 0 ? access(target.c_str(), W_OK) != 0
                                        : access(dir.c_str(), W_OK) != 0) {
    diagnostics->push_back(
        {pos, std::string("'") + key + "': cannot write '" + target + "': " + strerror(errno)});
  }
}

}  // namespace

SnapshotPtr loadSnapshot(const std::string& path, uint64_t generation,
                         conf::Diagnostics* diagnostics, metrics::Registry* registry,
                         upstream::BackendStates* states) {
  return load(path, generation, diagnostics, registry, states, nullptr);
}

void addUnsupportedFeatures(const conf::Config&, conf::Diagnostics*) {
  // Nothing at present: every feature the schema accepts runs.
}

int checkConfig(const std::string& path) {
  conf::Diagnostics diagnostics;
  std::shared_ptr<const conf::Config> cfg;
  load(path, 1, &diagnostics, nullptr, nullptr, &cfg);
  if (cfg) {
    const conf::ServerConfig& s = cfg->server;
    checkLogTarget(s.access_log, s.access_log_pos, "access_log", &diagnostics);
    checkLogTarget(s.error_log, s.error_log_pos, "error_log", &diagnostics);
    if (!s.user.empty()) {
      std::string error;
      if (!privileges::resolveAccount(s.user, s.group, &error)) {
        diagnostics.push_back({s.user_pos, "[server] " + error});
      } else if (geteuid() != 0) {
        diagnostics.push_back({s.user_pos,
                               "[server] 'user' needs sluice to start as root (this check runs as "
                               "uid " +
                                   std::to_string(geteuid()) + ")",
                               conf::Diagnostic::Severity::kWarning});
      }
    }
    // The addresses: a bind without SO_REUSEPORT says whether a start could listen there. The
    // ones a sluice running this very config holds are fine (this is a check before a reload).
    std::vector<std::string> running;
    bool have_running = control::queryAddresses(control::socketName(path), &running);
    auto probe = [&](const conf::Address& address, const conf::SourcePos& pos,
                     const std::string& what) {
      if (address.port == 0 || (have_running && std::find(running.begin(), running.end(),
                                                          address.text) != running.end())) {
        return;
      }
      std::string error;
      if (net::probeAddress(address, &error) != 0) {
        diagnostics.push_back({pos, what + ": " + error});
      }
    };
    probe(cfg->admin.listen, conf::SourcePos{cfg->path, 0, 0}, "[admin]");
    for (const conf::ListenerConfig& l : cfg->listeners) {
      probe(l.listen, l.pos, "listener '" + l.name + "'");
    }
  }
  // Every stage's diagnostics in file order (the main file first, then its includes as read).
  std::vector<std::string> files = cfg ? cfg->files : std::vector<std::string>{path};
  auto rank = [&](const conf::Diagnostic& d) {
    auto it = std::find(files.begin(), files.end(), d.pos.file);
    return std::tuple(static_cast<size_t>(it - files.begin()), d.pos.line, d.pos.column);
  };
  std::stable_sort(
      diagnostics.begin(), diagnostics.end(),
      [&](const conf::Diagnostic& a, const conf::Diagnostic& b) { return rank(a) < rank(b); });
  size_t errors = 0;
  for (const conf::Diagnostic& d : diagnostics) {
    fprintf(stderr, "%s\n", d.format().c_str());
    errors += d.error() ? 1 : 0;
  }
  if (errors > 0) {
    fprintf(stderr, "%s: %zu error%s\n", path.c_str(), errors, errors == 1 ? "" : "s");
    return 1;
  }
  printf("%s: ok\n", path.c_str());
  return 0;
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

// Files whose change is a reload: the config and its includes, certificates, keys, CA files and
// token files (a certificate renewed by certbot or cert-manager goes live without a signal).
std::vector<std::string> watchedFiles(const conf::Config& cfg) {
  std::vector<std::string> files = cfg.files;
  auto add = [&](const std::string& f) {
    if (!f.empty()) {
      files.push_back(f);
    }
  };
  for (const conf::ListenerConfig& l : cfg.listeners) {
    if (l.tls) {
      for (const conf::TlsCertificate& c : l.tls->certificates) {
        add(c.cert);
        add(c.key);
      }
      add(l.tls->client_ca);
    }
  }
  for (const conf::PoolConfig& p : cfg.pools) {
    if (p.tls) {
      add(p.tls->ca);
      add(p.tls->cert);
      add(p.tls->key);
    }
  }
  add(cfg.admin.token_file);
  add(cfg.admin.read_token_file);
  return files;
}

bool sameAddress(const conf::Address& a, const std::string& text) {
  std::optional<conf::Address> b = conf::parseAddress(text);
  return b && b->host == a.host && b->port == a.port;
}

constexpr uint64_t kDebounceMs = 300;

}  // namespace

Server::Server(SnapshotPtr snapshot, Options options)
    : snapshot_(std::move(snapshot)), options_(options) {
  uv_loop_init(&loop_);
  loop_.data = nullptr;  // net:: keeps the loop's epoll set there (uv_loop_init keeps `data`)
  started_ms_ = uv_now(&loop_);
  last_reload_.time = rfc3339Now();
}

Server::~Server() {
  if (joiner_.joinable()) {
    joiner_.join();
  }
  if (access_log_) {
    access_log_->stop();
  }
  closeRememberedSockets();
  uv_loop_close(&loop_);
}

bool Server::loadTokens(const conf::Config& config, std::string* token, std::string* read_token,
                        std::string* error) {
  token->clear();
  read_token->clear();
  if (!config.admin.token_file.empty()) {
    *token = readToken(config.admin.token_file, error);
    if (token->empty()) {
      return false;
    }
  }
  if (!config.admin.read_token_file.empty()) {
    *read_token = readToken(config.admin.read_token_file, error);
    if (read_token->empty()) {
      return false;
    }
  }
  return true;
}

bool Server::applyLogs(const conf::Config& config, std::string* error) {
  const conf::ServerConfig& s = config.server;
  if (!error_log_ || error_log_->target() != s.error_log) {
    std::shared_ptr<log::LogFile> file = log::LogFile::open(s.error_log, error);
    if (!file) {
      *error = "error_log: " + *error;
      return false;
    }
    error_log_ = file;
    log::setErrorLog(file);
  }
  if (!options_.log_level_set) {
    log::Level level;
    if (log::parseLevel(s.log_level, &level)) {
      log::setLevel(level);
    }
  }
  return access_log_->configure(s.access_log, s.access_log_format, error);
}

int Server::fail() {
  if (admin_) {
    admin_->close();
  }
  if (control_) {
    control_->close();
  }
  net::runLoop(&loop_);  // let the handles close, so nothing leaks on the way out
  net::closeEventSet(&loop_);
  return 1;
}

bool Server::openListeners(unsigned workers, std::vector<control::Socket>* inherited,
                           std::vector<std::vector<std::pair<size_t, int>>>* fds) {
  const auto& listeners = snapshot_->config->listeners;
  fds->assign(workers, {});
  sockets_.clear();
  for (size_t i = 0; i < listeners.size(); ++i) {
    const conf::ListenerConfig& l = listeners[i];
    std::vector<int> mine;
    for (control::Socket& s : *inherited) {
      if (s.kind == 'L' && s.fd >= 0 && sameAddress(l.listen, s.address)) {
        mine.push_back(s.fd);
        s.fd = -1;
      }
    }
    std::string error;
    // A port nobody handed over: refuse it when another process listens there, rather than
    // share it through SO_REUSEPORT (a second sluice started by mistake would take half the
    // connections).
    if (mine.empty() && net::probeAddress(l.listen, &error) != 0) {
      LOG_ERROR("listener '%s': %s", l.name.c_str(), error.c_str());
      return false;
    }
    while (mine.size() < workers) {
      int fd = net::listenSocket(l.listen, true, &error);
      if (fd < 0) {
        LOG_ERROR("listener '%s': %s", l.name.c_str(), error.c_str());
        for (int f : mine) {
          ::close(f);
        }
        return false;
      }
      mine.push_back(fd);
    }
    // Every socket is accepted on (one left alone would strand the connections the kernel
    // queues on it): a process with fewer workers than its predecessor gives some two.
    ListenerSockets remembered{l.name, l.listen, {}};
    for (size_t k = 0; k < mine.size(); ++k) {
      (*fds)[k % workers].emplace_back(i, mine[k]);
      remembered.fds.push_back(dup(mine[k]));
    }
    sockets_.push_back(std::move(remembered));
  }
  return true;
}

void Server::rememberSockets(const conf::Config& next,
                             const std::vector<std::vector<int>>& new_fds) {
  std::vector<ListenerSockets> kept;
  for (size_t i = 0; i < next.listeners.size(); ++i) {
    const conf::ListenerConfig& l = next.listeners[i];
    auto old = std::find_if(sockets_.begin(), sockets_.end(), [&](const ListenerSockets& s) {
      return s.name == l.name && s.address.text == l.listen.text;
    });
    bool opened = !new_fds.empty() && i < new_fds[0].size() && new_fds[0][i] >= 0;
    if (old != sockets_.end() && !opened) {
      kept.push_back(std::move(*old));
      sockets_.erase(old);
      continue;
    }
    ListenerSockets s{l.name, l.listen, {}};
    for (const std::vector<int>& w : new_fds) {
      if (i < w.size() && w[i] >= 0) {
        s.fds.push_back(dup(w[i]));
      }
    }
    kept.push_back(std::move(s));
  }
  closeRememberedSockets();  // those of listeners the new config removed
  sockets_ = std::move(kept);
}

void Server::closeRememberedSockets() {
  for (ListenerSockets& s : sockets_) {
    for (int fd : s.fds) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  }
  sockets_.clear();
}

int Server::run() {
  const conf::Config& cfg = *snapshot_->config;
  signal(SIGPIPE, SIG_IGN);
  raiseFileLimit();
  unsigned workers = cfg.server.workers;
  if (workers == 0) {
    workers = std::max(1u, std::thread::hardware_concurrency());
  }
  access_log_ = std::make_unique<AccessLog>(workers);
  std::string error;
  if (!applyLogs(cfg, &error) || !loadTokens(cfg, &token_, &read_token_, &error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  shared_.max_connections = cfg.server.max_connections;
  registry_ = std::make_unique<metrics::Registry>(workers);
  // The snapshot was loaded before the worker count was known; bind its metrics now, before
  // any worker can see it.
  std::const_pointer_cast<Snapshot>(snapshot_)->bindMetrics(*registry_);
  std::const_pointer_cast<Snapshot>(snapshot_)->buildBalancers(&backend_states_);
  registry_->generation = snapshot_->generation;

  // The control socket: the lock against a second sluice on this config, or the way to the
  // sluice this one replaces.
  control_name_ = control::socketName(cfg.path);
  control::Server::Callbacks callbacks;
  callbacks.sockets = [this] {
    std::vector<control::Socket> out;
    for (const ListenerSockets& s : sockets_) {
      for (int fd : s.fds) {
        out.push_back({'L', s.address.text, fd});
      }
    }
    if (admin_ && admin_->fd() >= 0) {
      out.push_back({'A', snapshot_->config->admin.listen.text, admin_->fd()});
    }
    return out;
  };
  callbacks.can_hand_over = [this](std::string* why) {
    *why = "it is shutting down";
    return !shutting_down_;
  };
  callbacks.hand_over = [this](pid_t pid) { handOver(pid); };
  control_ = std::make_unique<control::Server>(&loop_, std::move(callbacks));
  control::Takeover takeover;
  std::vector<control::Socket> inherited;
  if (options_.upgrade) {
    if (!takeover.begin(control_name_, &error)) {
      LOG_ERROR("upgrade: %s", error.c_str());
      return fail();
    }
    inherited = std::move(takeover.sockets());
    takeover.sockets().clear();
    LOG_INFO("upgrade: pid %d handed over %zu listening sockets",
             static_cast<int>(takeover.oldPid()), inherited.size());
  } else if (int rc = control_->listen(control_name_); rc == EADDRINUSE) {
    std::optional<pid_t> pid = control::runningPid(control_name_);
    LOG_ERROR(
        "another sluice%s is running with %s: stop it first, or take its listening sockets "
        "over with `sluice --upgrade --config %s`",
        pid ? (" (pid " + std::to_string(*pid) + ")").c_str() : "", cfg.path.c_str(),
        cfg.path.c_str());
    return fail();
  } else if (rc != 0) {
    LOG_WARN(
        "control socket: %s: a second start on this config cannot be detected, and a binary "
        "upgrade cannot take over from this process",
        strerror(rc));
  }
  auto close_inherited = [&] {
    for (control::Socket& s : inherited) {
      if (s.fd >= 0) {
        ::close(s.fd);
        s.fd = -1;
      }
    }
  };

  admin_ = std::make_unique<AdminServer>(
      &loop_, [this](const http::RequestHead& req) { return handleAdmin(req); });
  admin_->setLiveSource([this] { return statusJson(); });
  bool admin_ok = false;
  for (control::Socket& s : inherited) {
    if (s.kind == 'A' && s.fd >= 0 && sameAddress(cfg.admin.listen, s.address)) {
      admin_ok = admin_->adopt(s.fd, &error);
      s.fd = -1;
      break;
    }
  }
  if (!admin_ok && !admin_->listen(cfg.admin.listen, &error)) {
    LOG_ERROR("%s", error.c_str());
    close_inherited();
    return fail();
  }
  std::vector<std::vector<std::pair<size_t, int>>> fds;
  if (!openListeners(workers, &inherited, &fds)) {
    close_inherited();
    return fail();
  }
  close_inherited();  // those of listeners this config no longer has

  if (!cfg.server.user.empty()) {
    std::optional<privileges::Account> account =
        privileges::resolveAccount(cfg.server.user, cfg.server.group, &error);
    if (!account || !privileges::drop(*account, &error)) {
      LOG_ERROR("[server] user: %s", error.c_str());
      for (auto& w : fds) {
        for (auto& [index, fd] : w) {
          ::close(fd);
        }
      }
      return fail();
    }
    LOG_INFO("running as user %s (uid %u), group %s (gid %u)", cfg.server.user.c_str(),
             static_cast<unsigned>(account->uid), account->group.c_str(),
             static_cast<unsigned>(account->gid));
    // Reloads read these files again as that user: say now what it cannot read.
    for (const std::string& f : watchedFiles(cfg)) {
      if (!privileges::readable(f)) {
        LOG_WARN(
            "user %s cannot read %s: reloads (and certificate renewals) will fail until it "
            "can",
            cfg.server.user.c_str(), f.c_str());
      }
    }
  }

  metrics::WorkerSlot* worker_slots = registry_->workers();
  services_ = std::make_unique<ProcessServices>(&loop_);
  startFilters(*snapshot_);
  for (unsigned i = 0; i < workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(
        i, snapshot_, fds[i], &shared_, access_log_.get(),
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
  watch(&sigusr1_, SIGUSR1);
  uv_async_init(&loop_, &workers_done_, &Server::onWorkersDone);
  workers_done_.data = this;
  uv_timer_init(&loop_, &debounce_);
  debounce_.data = this;
  uv_timer_init(&loop_, &lame_duck_);
  lame_duck_.data = this;
  health_ = std::make_unique<upstream::HealthChecker>(&loop_);
  health_->configure(healthTargets(*snapshot_));
  uv_timer_init(&loop_, &rebalance_timer_);
  rebalance_timer_.data = this;
  uv_timer_start(
      &rebalance_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->rebalance(); }, 1000,
      1000);
  handles_ready_ = true;
  loaded_fingerprint_ = fingerprint(cfg);
  watchFiles();

  for (auto& w : workers_) {
    w->start();
  }
  if (options_.upgrade) {
    // Both processes accept now; the old one stops when it reads "ready".
    if (!takeover.finish(&error)) {
      LOG_WARN("upgrade: %s", error.c_str());
    }
    int rc = EADDRINUSE;
    for (int i = 0; i < 100 && rc == EADDRINUSE; ++i) {
      rc = control_->listen(control_name_);
      if (rc == EADDRINUSE) {
        usleep(20 * 1000);
      }
    }
    if (rc != 0) {
      LOG_WARN("control socket: %s: the next upgrade cannot take over from this process",
               strerror(rc));
    }
  }
  for (const conf::ListenerConfig& l : cfg.listeners) {
    LOG_INFO("listening on %s (%s)%s", l.listen.text.c_str(), l.name.c_str(),
             options_.upgrade ? " (taken over)" : "");
  }
  LOG_INFO("sluice %s started: %u worker%s, config %s, admin on %s, pid %d", SLUICE_VERSION,
           workers, workers == 1 ? "" : "s", cfg.path.c_str(), cfg.admin.listen.text.c_str(),
           static_cast<int>(getpid()));
  notify::ready("generation " + std::to_string(snapshot_->generation) + " serving " +
                std::to_string(cfg.listeners.size()) + " listener(s), admin on " +
                cfg.admin.listen.text);
  net::runLoop(&loop_);
  net::closeEventSet(&loop_);  // the admin connections' epoll set
  if (joiner_.joinable()) {
    joiner_.join();
  }
  access_log_->stop();
  LOG_INFO("shutdown complete");
  return 0;
}

// ---- reload --------------------------------------------------------------------------------

Server::ReloadResult Server::reload(const char* trigger) {
  ReloadResult result;
  const conf::Config& cur = *snapshot_->config;
  uint64_t generation = snapshot_->generation + 1;
  notify::reloading(std::string("reloading (") + trigger + ")");
  conf::Diagnostics diagnostics;
  std::shared_ptr<Snapshot> next = std::const_pointer_cast<Snapshot>(
      loadSnapshot(cur.path, generation, &diagnostics, registry_.get(), &backend_states_));
  std::string token;
  std::string read_token;
  std::string error;
  if (next && !loadTokens(*next->config, &token, &read_token, &error)) {
    diagnostics.push_back({conf::SourcePos{cur.path, 0, 0}, error});
    next.reset();
  }
  // New log files must open before anything changes.
  if (next) {
    const conf::ServerConfig& s = next->config->server;
    for (const auto& [target, pos] :
         {std::pair(s.access_log, s.access_log_pos), std::pair(s.error_log, s.error_log_pos)}) {
      if (target != "off" && !log::LogFile::open(target, &error)) {
        diagnostics.push_back({pos, error});
        next.reset();
        break;
      }
    }
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
  if (reload_history_.size() == 10) {
    reload_history_.pop_front();
  }
  reload_history_.push_back({last_reload_.time, trigger, next != nullptr,
                             next ? generation : snapshot_->generation, errors});
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
    notify::ready("reload (" + std::string(trigger) + ") failed; generation " +
                  std::to_string(snapshot_->generation) + " keeps running");
    return result;
  }
  if (next->config->admin.listen.text != cur.admin.listen.text) {
    LOG_WARN("admin.listen changed to %s: the admin listener moves on restart only",
             next->config->admin.listen.text.c_str());
  }
  if (next->config->server.user != cur.server.user ||
      next->config->server.group != cur.server.group) {
    LOG_WARN("[server] user/group changed: that takes effect on restart only");
  }
  // The new filters start before any worker can use them (a filter's background work, such as
  // a JWKS fetch, is under way when the first request comes); the old ones stop once no worker
  // takes new streams on them (their live streams keep using them).
  startFilters(*next);
  for (size_t w = 0; w < workers_.size(); ++w) {
    workers_[w]->updateSnapshot(next, fds[w]);
  }
  rememberSockets(*next->config, fds);
  // Answer only once every worker serves the new config (bounded: a stuck worker must not
  // stall the main thread).
  for (auto& w : workers_) {
    w->waitForGeneration(generation, std::chrono::seconds(2));
  }
  SnapshotPtr previous = std::move(snapshot_);
  snapshot_ = next;
  token_ = std::move(token);
  read_token_ = std::move(read_token);
  if (!applyLogs(*snapshot_->config, &error)) {
    LOG_WARN("%s", error.c_str());  // (checked above; a race with the file system)
  }
  stopFilters(*previous);
  previous.reset();
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
  notify::ready("generation " + std::to_string(generation) + " is live (" + trigger + ")");
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
  auto close_all = [&] {
    for (auto& f : *fds) {
      for (int& opened : f) {
        if (opened >= 0) {
          ::close(opened);
        }
        opened = -1;
      }
    }
  };
  for (size_t i = 0; i < nl.size(); ++i) {
    bool kept = false;
    for (const conf::ListenerConfig& ol : cur.listeners) {
      kept = kept || (ol.name == nl[i].name && ol.listen.text == nl[i].listen.text);
    }
    if (kept) {
      continue;
    }
    std::string error;
    if (net::probeAddress(nl[i].listen, &error) != 0) {
      diagnostics->push_back({nl[i].pos, "listener '" + nl[i].name + "': " + error});
      close_all();
      return false;
    }
    for (size_t w = 0; w < fds->size(); ++w) {
      int fd = net::listenSocket(nl[i].listen, true, &error);
      if (fd < 0) {
        diagnostics->push_back({nl[i].pos, "listener '" + nl[i].name + "': " + error});
        close_all();
        return false;
      }
      (*fds)[w][i] = fd;
    }
  }
  return true;
}

std::string Server::fingerprint(const conf::Config& config) const {
  std::string all;
  for (const std::string& path : watchedFiles(config)) {
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
  // Watch directories, not files: editors and config management replace files by renaming,
  // certbot swaps symlinks and Kubernetes swaps a "..data" symlink beside them.
  std::vector<std::string> dirs;
  for (const std::string& file : watchedFiles(*snapshot_->config)) {
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
      LOG_WARN("cannot watch %s for config or certificate changes", dir.c_str());
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
  std::string_view name = filename != nullptr ? filename : "";
  bool ours = filename == nullptr || name.starts_with("..");  // Kubernetes' atomic writer
  for (const std::string& file : watchedFiles(*s->snapshot_->config)) {
    ours = ours || baseName(file) == name;
  }
  // New files matching an include pattern count too: any *.toml in a watched directory.
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
  s->reload("a config or certificate file changed");
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
  auto has_token = [&](const std::string& token) {
    if (token.empty()) {
      return true;
    }
    const http::Header* h = req.find("authorization");
    return h != nullptr && h->value == "Bearer " + token;
  };
  // Reading needs the read token or the write token; writing needs the write token.
  auto may_read = [&] {
    return read_token_.empty() || has_token(read_token_) || (!token_.empty() && has_token(token_));
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
    if (!may_read()) {
      return unauthorized();
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
    AdminResponse r = text(200, registry_->render(states, snapshot_->certificateExpiries()));
    r.body.pop_back();  // render() ends with a newline already
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    return r;
  }
  if (path == "/api/status") {
    if (!get) {
      return text(405, "method not allowed");
    }
    if (!may_read()) {
      return unauthorized();
    }
    return json(200, statusJson());
  }
  if (const AdminAsset* asset = findAdminAsset(path); asset != nullptr) {
    // The page holds no data (it reads it through /api/live with its token): anyone the Host
    // check lets in may load it.
    return get ? adminAssetResponse(*asset) : text(405, "method not allowed");
  }
  if (path == "/api/live") {
    std::string_view offered = liveOfferedToken(req);
    bool offered_ok = !offered.empty() && ((!read_token_.empty() && offered == read_token_) ||
                                           (!token_.empty() && offered == token_));
    if (!may_read() && !offered_ok) {
      return unauthorized();
    }
    return AdminServer::liveHandshake(req, liveProtocolOffered(req) ? kLiveProtocol : "");
  }
  if (path == "/api/reload") {
    if (!post) {
      return text(405, "method not allowed: use POST");
    }
    if (!has_token(token_)) {
      return unauthorized();
    }
    if (shutting_down_) {
      return json(503, R"({"error":"shutting down"})");
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
    if (!has_token(token_)) {
      return unauthorized();
    }
    return drainEndpoint(path.substr(11));
  }
  if (!may_read()) {
    return unauthorized();  // not even which endpoints exist
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
  o += ",\"pid\":" + std::to_string(getpid());
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
         ",\"websocket\":" + (r.websocket.enabled ? "true" : "false") + "," +
         routeTotalsJson(registry_->routeTotals(r.name)) + "}";
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
  o += "],\"uptime_ms\":" + std::to_string(uv_now(&loop_) - started_ms_);
  o += ",\"reload_history\":[";
  for (size_t i = 0; i < reload_history_.size(); ++i) {
    const ReloadRecord& h = reload_history_[i];
    o += (i ? "," : "") + std::string("{\"time\":") + jsonString(h.time) +
         ",\"trigger\":" + jsonString(h.trigger) +
         ",\"result\":" + jsonString(h.ok ? "success" : "failure") +
         ",\"generation\":" + std::to_string(h.generation) + ",\"errors\":" + jsonErrors(h.errors) +
         "}";
  }
  o += "]," + problemsJson(log::recentProblems()) + "}";
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
  if (signum == SIGUSR1) {
    s->reopenLogs();
    return;
  }
  s->beginShutdown(signum);
}

void Server::reopenLogs() {
  // logrotate's convention: the files were renamed (or copied and truncated); write to files of
  // the configured names from now on.
  std::string error;
  bool ok = true;
  if (error_log_ && !error_log_->reopen(&error)) {
    LOG_WARN("SIGUSR1: error log: %s", error.c_str());
    ok = false;
  }
  if (!access_log_->reopen(&error)) {
    LOG_WARN("SIGUSR1: access log: %s", error.c_str());
    ok = false;
  }
  if (ok) {
    LOG_INFO("SIGUSR1: log files reopened");
  }
}

void Server::beginShutdown(int signum) {
  if (shutting_down_) {
    LOG_WARN("second signal (%s): exiting now", strsignal(signum));
    access_log_->stop();
    _exit(1);
  }
  shutting_down_ = true;
  shared_.stopping = true;  // health answers fail from now on
  notify::stopping(std::string("stopping (") + strsignal(signum) + ")");
  conf::Duration delay = snapshot_->config->server.drain_delay;
  if (delay.count() > 0) {
    LOG_INFO(
        "%s: lame duck for %lld ms (health checks fail, listeners still accept), then "
        "draining",
        strsignal(signum), static_cast<long long>(delay.count()));
    uv_timer_start(
        &lame_duck_,
        [](uv_timer_t* t) { static_cast<Server*>(t->data)->startDrain("drain_delay passed"); },
        static_cast<uint64_t>(delay.count()), 0);
    return;
  }
  startDrain(strsignal(signum));
}

void Server::startDrain(const char* why) {
  if (draining_) {
    return;
  }
  draining_ = true;
  shutting_down_ = true;
  shared_.stopping = true;
  conf::Duration timeout = snapshot_->config->server.shutdown_timeout;
  LOG_INFO("%s: shutting down (in-flight requests and WebSockets have %lld ms)", why,
           static_cast<long long>(timeout.count()));
  uv_timer_stop(&debounce_);
  uv_timer_stop(&rebalance_timer_);
  health_->stop();
  // The listeners close now (the workers close theirs; these duplicates must go too, or the
  // kernel would go on queueing connections nobody accepts), and a new sluice may start on this
  // config while this one drains.
  closeRememberedSockets();
  control_->close();
  stopFilters(*snapshot_);
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

void Server::handOver(pid_t new_pid) {
  // The new process accepts on the same sockets (and serves the admin API): this one stops
  // accepting and drains as on SIGTERM, without a lame duck (nothing in front needs to move).
  handed_over_ = true;
  notify::stopping("handed over to pid " + std::to_string(new_pid));
  uv_timer_stop(&lame_duck_);
  admin_->close();
  closeRememberedSockets();
  std::string why = "handed over to pid " + std::to_string(new_pid);
  startDrain(why.c_str());
}

void Server::onWorkersDone(uv_async_t* async) {
  auto* s = static_cast<Server*>(async->data);
  auto close = [](auto* h) { uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr); };
  close(&s->sigterm_);
  close(&s->sigint_);
  close(&s->sighup_);
  close(&s->sigusr1_);
  close(&s->workers_done_);
  close(&s->debounce_);
  close(&s->lame_duck_);
  close(&s->rebalance_timer_);
  for (uv_fs_event_t* w : s->watchers_) {
    uv_close(reinterpret_cast<uv_handle_t*>(w),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  }
  s->watchers_.clear();
  s->admin_->close();
  s->control_->close();
  s->control_->closeConnections();
  s->services_->close();
}

void Server::startFilters(const Snapshot& snapshot) {
  if (shutting_down_) {
    return;  // (a reload through the admin API during shutdown): nothing may start now
  }
  for (const filters::FilterPtr& f : snapshot.filters) {
    if (f) {
      f->start(*services_);
    }
  }
}

void Server::stopFilters(const Snapshot& snapshot) {
  for (const filters::FilterPtr& f : snapshot.filters) {
    if (f) {
      f->stop();
    }
  }
}

}  // namespace sluice
