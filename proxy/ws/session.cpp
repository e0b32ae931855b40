#include "proxy/ws/session.h"

#include "proxy/access_log.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace sluice::ws {

namespace {

constexpr uint64_t kLingerMs = 2000;

// Index into the `by` label values of sluice_ws_closes_total.
uint8_t metricsCloser(Relay::ClosedBy by) {
  switch (by) {
    case Relay::ClosedBy::kDownstream:
      return 0;
    case Relay::ClosedBy::kUpstream:
      return 1;
    case Relay::ClosedBy::kSluice:
      return 2;
    case Relay::ClosedBy::kNone:
      break;
  }
  return 3;
}

// Why sluice closed a session, when the relay did not say.
const char* closeCause(const Relay::Stats& st) {
  if (st.closed_by != Relay::ClosedBy::kSluice) {
    return "";
  }
  if (st.cause != nullptr) {
    return st.cause;
  }
  switch (st.close_code) {
    case 1009:
    case 1013:
      return "limit";
    case 1002:
    case 1007:
      return "violation";
    case 1003:
    case 1008:
      return "policy";
    case 1014:
      return "backend_failed";
    default:
      return "other";
  }
}

// The session's log fields in one exactly sized string:
// client_ip \0 host \0 path \0 request_id \0 user_agent \0 referer.
std::string logFields(const Session::Setup& s) {
  std::string out;
  out.reserve(s.client_ip.size() + s.host.size() + s.path.size() + s.request_id.size() +
              s.user_agent.size() + s.referer.size() + 5);
  out.append(s.client_ip);
  for (std::string_view f : {s.host, s.path, s.request_id, s.user_agent, s.referer}) {
    out.push_back('\0');
    out.append(f);
  }
  return out;
}

}  // namespace

void Session::start(Setup setup, std::string_view early_client, std::string_view early_upstream) {
  auto* session = new Session(std::move(setup));
  if (!early_upstream.empty()) {
    session->relay_->onBackendData(early_upstream.data(), early_upstream.size());
  }
  if (!early_client.empty() && !session->relay_->finished()) {
    session->relay_->onClientData(early_client.data(), early_client.size());
  }
}

Session::Session(Setup&& setup)
    : s_{setup.worker,
         std::move(setup.snapshot),
         setup.listener,
         setup.route,
         setup.pool,
         setup.backend,
         std::move(setup.client),
         std::move(setup.upstream),
         setup.listener_slot,
         setup.backend_slot,
         setup.backend_state,
         logFields(setup),
         setup.start,
         setup.tls_version,
         setup.tls_cipher,
         static_cast<float>(setup.upstream_connect_ms),
         static_cast<float>(setup.upstream_response_ms),
         setup.access_log} {
  Worker* w = s_.worker;
  s_.client->setHandler(&client_side_);
  s_.upstream->setHandler(&upstream_side_);
  // The HTTP exchange's buffers (cork buffers, a pooled write request) are not needed for the
  // rest of a WebSocket's life.
  s_.client->releaseBuffers();
  s_.upstream->releaseBuffers();
  const conf::RouteConfig& route = s_.snapshot->config->routes[s_.route];
  route_slot_ = &s_.snapshot->metrics.routes[s_.route][w->id()];
  route_slot_->ws_open.add(1);
  s_.backend_slot->websockets_open.add(1);
  if (setup.filters) {
    // The filters' view of the session now points at what the session keeps.
    filters::StreamInfo& info = setup.filters->info();
    info.client_ip = logField(0);
    info.request_id = logField(3);
    info.listener = s_.snapshot->config->listeners[s_.listener].name;
    info.route = route.name;
  }
  relay_ = std::make_unique<Relay>(w->dispatcher(), *s_.client, *s_.upstream, route.websocket,
                                   std::move(setup.filters), route_slot_, this, setup.compression);
  w->registerConnection(this);
  s_.client->readStart();
  s_.upstream->readStart();
}

Session::~Session() {
  s_.worker->memoryBudget().release(*this);
  s_.listener_slot->connections_open.add(-1);
  s_.worker->shared()->open_connections.fetch_sub(1, std::memory_order_relaxed);
}

void Session::upstreamClosed() {
  // The backend connection is gone even while the client side still lingers.
  s_.backend_slot->connections_open.add(-1);
  if (s_.backend_state != nullptr) {
    s_.backend_state->active.fetch_sub(1, std::memory_order_relaxed);
  }
}

// ---- stream events -------------------------------------------------------------------------

void Session::Side::onData(const char* data, size_t len) {
  Session& s = *session;
  if (s.relay_->finished()) {
    return;  // lingering close: input is read and dropped
  }
  if (is_client) {
    s.relay_->onClientData(data, len);
  } else {
    s.relay_->onBackendData(data, len);
  }
  s.account();
}

void Session::account() {
  if (!relay_->finished()) {
    s_.worker->memoryBudget().update(*this, relay_->heldBytes());
  }
}

void Session::Side::onEof() {
  session->peerGone(is_client);
}

void Session::Side::onError(int status) {
  session->peerGone(is_client);
}

void Session::Side::onWritable() {
  Session& s = *session;
  if (s.relay_->finished()) {
    return;
  }
  if (is_client) {
    s.relay_->onClientWritable();
  } else {
    s.relay_->onBackendWritable();
  }
}

void Session::Side::onClosed() {
  if (!is_client) {
    session->upstreamClosed();
  }
  session->handleClosed();
}

void Session::peerGone(bool client) {
  if (!relay_->finished()) {
    if (client) {
      relay_->onClientEof();
    } else {
      relay_->onBackendEof();
    }
    return;
  }
  if (lingering_) {
    // That peer answered the FIN: its side of the lingering close is over.
    (client ? s_.client : s_.upstream)->close();
  }
}

// ---- the end -------------------------------------------------------------------------------

void Session::relayFinished() {
  s_.worker->memoryBudget().release(*this);
  const Relay::Stats& st = relay_->stats();
  route_slot_->ws_open.add(-1);
  s_.backend_slot->websockets_open.add(-1);
  route_slot_->countClose(st.close_code, metricsCloser(st.closed_by));
  LOG_DEBUG("websocket %.*s on route '%s' ended: code %u by %s%s%s",
            static_cast<int>(logField(3).size()), logField(3).data(),
            s_.snapshot->config->routes[s_.route].name.c_str(),
            static_cast<unsigned>(st.close_code), Relay::closedByName(st.closed_by),
            *closeCause(st) != 0 ? ", because " : "", closeCause(st));
  writeAccessLog();
  s_.worker->unregisterConnection(this);
  // Both sides close lingering: FIN after the close frame, then input read and dropped until the
  // peer's EOF (or 2 s), so that unread input cannot turn into a reset that destroys what was
  // sent last (the close frame; toward a backend, the messages before it too). A side whose
  // peer has ended already, and a backend that has sent its close frame, have nothing more to
  // say: they are closed once what was queued for them is written.
  // When both streams have closed, handleClosed() frees the session; when the linger time passes
  // first, closeAll() ends whatever is left.
  lingering_ = true;
  if (relay_->backendSentClose() || relay_->backendEnded()) {
    s_.upstream->closeAfterFlush();
  } else {
    s_.upstream->shutdown();
    s_.upstream->readStart();
  }
  if (relay_->clientEnded()) {
    s_.client->closeAfterFlush();
  } else {
    s_.client->shutdown();
    s_.client->readStart();
  }
  relay_->lingerFor(std::chrono::milliseconds(kLingerMs));
}

void Session::closeAll() {
  if (closing_) {
    return;
  }
  closing_ = true;
  if (!relay_->finished()) {
    s_.worker->unregisterConnection(this);
  }
  s_.client->close();
  s_.upstream->close();
}

void Session::handleClosed() {
  if (handles_.closed()) {
    delete this;  // (the relay's timer goes with it)
  }
}

std::string_view Session::logField(int index) const {
  std::string_view rest = s_.log;
  for (int i = 0; i < index; ++i) {
    rest.remove_prefix(std::min(rest.size(), rest.find('\0') + 1));
  }
  return rest.substr(0, rest.find('\0'));
}

void Session::writeAccessLog() {
  AccessLog* log = s_.worker->accessLog();
  route_slot_->requests_by_class[1].inc();  // the exchange was a 101
  if (log == nullptr || !log->enabled() || !s_.access_log) {
    return;
  }
  const conf::Config& cfg = *s_.snapshot->config;
  const Relay::Stats& st = relay_->stats();
  AccessLogEntry e;
  e.listener = cfg.listeners[s_.listener].name;
  e.route = cfg.routes[s_.route].name;
  e.upstream = cfg.pools[s_.pool].backends[s_.backend].address.text;
  e.client = logField(0);
  e.method = "GET";
  e.host = logField(1);
  e.path = logField(2);
  e.request_id = logField(3);
  e.user_agent = logField(4);
  e.referer = logField(5);
  e.tls_version = s_.tls_version;
  e.tls_cipher = s_.tls_cipher;
  e.upstream_connect_ms = s_.upstream_connect_ms;
  e.upstream_response_ms = s_.upstream_response_ms;
  e.status = 101;
  e.bytes_in = st.bytes[0];
  e.bytes_out = st.bytes[1];
  e.ws_messages_in = st.messages[0];
  e.ws_messages_out = st.messages[1];
  e.ws_close_code = st.close_code;
  e.ws_closed_by = Relay::closedByName(st.closed_by);
  e.ws_close_reason = st.close_reason;
  e.ws_close_cause = closeCause(st);
  if (const FilterManager* fm = relay_->filters()) {
    e.auth = fm->logAuth();
  }
  e.duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s_.start)
          .count();
  log->append(s_.worker->id(), e);
}

// ---- worker commands -----------------------------------------------------------------------

void Session::abort() {
  if (relay_->finished()) {
    closeAll();
  } else {
    relay_->goAway(kGoingAway, "sluice is shutting down");
  }
}

void Session::drainNow(const char* cause) {
  if (!relay_->finished()) {
    relay_->goAway(kServiceRestart, "backend draining; please reconnect", cause);
  }
}

bool Session::webSocketTo(const std::string& pool, const std::string& address) const {
  if (relay_->finished()) {
    return false;
  }
  const conf::PoolConfig& p = s_.snapshot->config->pools[s_.pool];
  return p.name == pool && p.backends[s_.backend].address.text == address;
}

void Session::onSnapshotChanged(const Snapshot& next) {
  if (relay_->finished()) {
    return;
  }
  const conf::Config& cur = *s_.snapshot->config;
  const conf::RouteConfig& route = cur.routes[s_.route];
  const conf::PoolConfig& pool = cur.pools[s_.pool];
  const std::string& backend = pool.backends[s_.backend].address.text;
  bool stays = false;
  for (const conf::RouteConfig& r : next.config->routes) {
    if (r.name != route.name || r.listener != route.listener) {
      continue;
    }
    const conf::PoolConfig& np = next.config->pools[r.pool_index];
    if (np.name != pool.name) {
      continue;
    }
    for (const conf::BackendConfig& b : np.backends) {
      stays = stays || b.address.text == backend;
    }
  }
  if (stays) {
    return;
  }
  LOG_INFO("websocket on route '%s' to %s: route or backend removed by reload; draining in %lld ms",
           route.name.c_str(), backend.c_str(), static_cast<long long>(pool.drain_timeout.count()));
  s_.worker->scheduleDrain(
      this, uv_now(s_.worker->loop()) + static_cast<uint64_t>(pool.drain_timeout.count()),
      "reload");
}

}  // namespace sluice::ws
