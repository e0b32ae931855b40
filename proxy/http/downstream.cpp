#include <charconv>
#include <cstring>

#include "proxy/http/connection.h"
#include "proxy/log.h"
#include "proxy/router.h"
#include "proxy/worker.h"
#include "proxy/ws/codec.h"
#include "proxy/ws/session.h"

namespace sluice::http {

namespace {
constexpr size_t kMaxPendingInput = size_t{64} * 1024;
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";

bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" ||
         method == "PUT" || method == "DELETE";
}

// Writes `data` as one chunk of a chunked body: size line, data, CRLF, in one writev.
template <typename Sink>
void writeChunk(Sink& sink, const char* data, size_t len) {
  char size_line[24];
  char* end = std::to_chars(size_line, size_line + sizeof size_line - 2, len, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  uv_buf_t bufs[3] = {uv_buf_init(size_line, static_cast<unsigned>(end - size_line)),
                      uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len)),
                      uv_buf_init(const_cast<char*>(kCrlf.data()), 2)};
  sink.write(bufs, 3);
}
}  // namespace

DownstreamConnection::DownstreamConnection(Worker* worker, size_t listener_index)
    : worker_(worker),
      snapshot_(worker->snapshot()),
      listener_index_(listener_index),
      stream_owner_(std::make_unique<net::Stream>(worker->loop(), this)),
      stream_(*stream_owner_),
      timer_(worker->loop(), this, &DownstreamConnection::onTimer),
      parser_(this, snapshot_->config->listeners[listener_index].max_header_bytes),
      request_(parser_.head()) {
  worker_->shared()->open_connections.fetch_add(1, std::memory_order_relaxed);
  listener_slot_ = &snapshot_->metrics.listeners[listener_index][worker->id()];
  listener_slot_->connections_open.add(1);
  listener_slot_->connections_accepted.inc();
}

DownstreamConnection::~DownstreamConnection() {
  if (!handed_over_) {
    listener_slot_->connections_open.add(-1);
    worker_->shared()->open_connections.fetch_sub(1, std::memory_order_relaxed);
  }
}

const conf::ListenerConfig& DownstreamConnection::listener() const {
  return snapshot_->config->listeners[listener_index_];
}

bool DownstreamConnection::accept(int fd, const sockaddr_storage& peer) {
  worker_->registerConnection(this);
  registered_ = true;
  if (int rc = stream_.open(fd); rc != 0) {
    LOG_WARN("accept: %s", uv_strerror(rc));
    closeNow();
    return false;
  }
  if (!net::addressText(peer, &client_ip_)) {
    client_ip_ = "unknown";
  }
  if (const auto& tls = snapshot_->listener_tls[listener_index_]) {
    SSL* ssl = tls->newSession();
    if (ssl == nullptr) {
      closeNow();
      return false;
    }
    stream_.startTls(ssl);
    tls_ = true;
    armTimer(TimerMode::kHandshake, listener().tls->handshake_timeout);
  } else {
    armTimer(TimerMode::kHeader, listener().header_timeout);
  }
  stream_.readStart();
  return true;
}

void DownstreamConnection::onTlsHandshake(const char* failure) {
  listener_slot_->tls_handshakes[metrics::tlsResultIndex(failure != nullptr ? failure : "ok")]
      .inc();
  if (failure != nullptr) {
    LOG_DEBUG("downstream %s: TLS handshake failed: %s", client_ip_.c_str(), failure);
    closeNow();
    return;
  }
  if (X509* peer = SSL_get1_peer_certificate(stream_.ssl())) {
    if (SSL_get_verify_result(stream_.ssl()) == X509_V_OK) {
      char subject[512];
      X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
      client_subject_ = subject;
    }
    X509_free(peer);
  }
  armTimer(TimerMode::kHeader, listener().header_timeout);
}

std::string DownstreamConnection::hstsHeader() const {
  if (!tls_ || listener().tls->hsts.empty()) {
    return {};
  }
  return "Strict-Transport-Security: " + listener().tls->hsts + "\r\n";
}

std::string DownstreamConnection::extraResponseHeaders() const {
  return stickyHeader() + hstsHeader();
}

void DownstreamConnection::armTimer(TimerMode mode, conf::Duration d) {
  timer_mode_ = mode;
  if (mode == TimerMode::kNone || d.count() <= 0) {
    timer_.disarm();
    return;
  }
  timer_.arm(d);
}

void DownstreamConnection::onTimer(void* self) {
  auto* d = static_cast<DownstreamConnection*>(self);
  switch (d->timer_mode_) {
    case TimerMode::kHeader:
      if (d->state_ == State::kReadingHead && d->saw_request_bytes_) {
        d->respondLocal(408, "request head not received in time", true);
      } else {
        d->closeNow();  // a connection that never sent a byte gets no answer
      }
      return;
    case TimerMode::kBody:
      d->respondLocal(408, "request body not received in time", true);
      return;
    case TimerMode::kSend:
      LOG_INFO("client %s not reading the response: closing", d->client_ip_.c_str());
      d->respondLocal(408, "client not reading the response", true);
      return;
    case TimerMode::kHandshake:
      d->listener_slot_->tls_handshakes[metrics::tlsResultIndex("timeout")].inc();
      d->closeNow();
      return;
    case TimerMode::kIdle:
    case TimerMode::kLinger:
    case TimerMode::kNone:
      d->closeNow();
      return;
  }
}

bool DownstreamConnection::clientWantsKeepAlive() const {
  return parser_.keepAlive();
}

// ---- reading and parsing -------------------------------------------------------------------

void DownstreamConnection::onData(const char* data, size_t len) {
  if (closing_ || state_ == State::kClosing) {
    return;  // lingering close: discard what the client still sends
  }
  if (parser_paused_) {
    // A request is in flight; keep the next ones (pipelining) but bounded.
    pending_input_.append(data, len);
    if (pending_input_.size() > kMaxPendingInput) {
      stream_.readStop();
    }
    return;
  }
  parse(data, len);
}

void DownstreamConnection::parse(const char* data, size_t len) {
  if (state_ == State::kReadingHead) {
    saw_request_bytes_ = true;
    if (timer_mode_ == TimerMode::kIdle) {
      armTimer(TimerMode::kHeader, listener().header_timeout);
    }
  }
  in_parse_ = true;
  RequestParser::Result r = parser_.execute(data, len);
  in_parse_ = false;
  if (corked_upstream_ != nullptr) {
    // The request head and the body bytes of this read go upstream in one write.
    corked_upstream_->uncork();
    corked_upstream_ = nullptr;
  }
  if (closing_ || state_ == State::kClosing) {
    return;
  }
  switch (r.status) {
    case RequestParser::Status::kNeedMore:
    case RequestParser::Status::kStopped:
      return;
    case RequestParser::Status::kPaused:
      if (r.consumed < len) {
        // `data` may point into pending_input_ itself: copy before replacing.
        std::string rest(data + r.consumed, len - r.consumed);
        rest.append(pending_input_);
        pending_input_ = std::move(rest);
      }
      parser_paused_ = true;
      if (response_complete_ && request_complete_) {
        finishExchange();
      }
      return;
    case RequestParser::Status::kError:
      parser_failed_ = true;
      LOG_DEBUG("downstream %s: bad request: %u %s", client_ip_.c_str(),
                static_cast<unsigned>(r.error_status), r.error_reason);
      respondLocal(r.error_status, r.error_reason, true);
      return;
  }
}

void DownstreamConnection::processPendingInput() {
  if (pending_input_.empty()) {
    return;
  }
  std::string data = std::move(pending_input_);
  pending_input_.clear();
  parse(data.data(), data.size());
}

void DownstreamConnection::onMessageBegin() {
  request_start_ = std::chrono::steady_clock::now();
  adoptCurrentSnapshot();  // each request sees the latest config, also on old connections
}

RequestParser::HeadAction DownstreamConnection::onHead() {
  using HeadAction = RequestParser::HeadAction;
  const RequestHead& req = request_;
  method_ = req.method;
  head_request_ = req.method == "HEAD";
  websocket_ = false;
  filter_paused_ = false;
  stream_filters_.clear();
  request_complete_ = response_complete_ = response_started_ = false;
  body_in_ = bytes_out_ = 0;
  status_ = 0;
  attempts_ = 0;
  backend_ = -1;
  route_ = -1;
  local_error_.clear();
  request_id_.clear();
  keep_alive_ = !listener_gone_;
  expect_continue_ = false;
  state_ = State::kProxying;
  armTimer(TimerMode::kNone, {});

  request_framing_ = parser_.chunked() ? BodyFraming{Framing::kChunked}
                     : parser_.hasContentLength()
                         ? BodyFraming{Framing::kContentLength, parser_.contentLength()}
                         : BodyFraming{};
  bool has_body = parser_.hasBody();
  // Local answers to requests with an unread body close the connection: the body is never
  // read, so the stream cannot be resynchronised.

  // The authority: absolute-form target first, then Host.
  std::string_view path = req.url;
  std::string_view host;
  if (const Header* h = req.find("host")) {
    host = h->value;
  }
  if (path.starts_with("http://") || path.starts_with("https://")) {
    std::string_view rest = path.substr(path.find("//") + 2);
    size_t slash = rest.find_first_of("/?");
    host = rest.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  }
  if (listener().redirect_to_https) {
    std::string_view authority = host;
    if (!authority.empty() && authority.front() == '[') {
      authority = authority.substr(0, authority.find(']') + 1);  // "[::1]:8080" -> "[::1]"
    } else {
      authority = authority.substr(0, authority.rfind(':'));
    }
    std::string location =
        "Location: https://" + std::string(authority) +
        std::string(req.url.starts_with("/") ? std::string_view(req.url) : path) + "\r\n";
    respondLocal(308, "use https", has_body, location);
    return has_body ? HeadAction::kStop : HeadAction::kContinue;
  }
  route_ = snapshot_->router.match(listener_index_, host, path);
  if (route_ < 0) {
    respondLocal(404, "no route", has_body);
    return has_body ? HeadAction::kStop : HeadAction::kContinue;
  }
  const conf::RouteConfig& route = snapshot_->config->routes[static_cast<size_t>(route_)];

  // Upgrades other than WebSocket (h2c, ...) are not offered: those requests are proxied as plain
  // HTTP/1.1 with the Upgrade header removed.
  if (headersHaveToken(req.headers, "upgrade", "websocket")) {
    if (!route.websocket.enabled) {
      respondLocal(403, "WebSocket upgrades are not enabled on this route", true);
      return HeadAction::kStop;
    }
    if (!checkWebSocketHandshake()) {
      return HeadAction::kStop;
    }
    websocket_ = true;
  }

  if (parser_.hasContentLength() && route.max_body_bytes > 0 &&
      parser_.contentLength() > route.max_body_bytes) {
    respondLocal(413, "request body larger than max_body_bytes", true);
    return HeadAction::kStop;
  }
  if (const Header* expect = req.find("expect")) {
    if (!iequals(expect->value, "100-continue")) {
      respondLocal(417, "unsupported Expect", true);
      return HeadAction::kStop;
    }
    expect_continue_ = req.minor >= 1 && has_body;
  }
  if (const Header* id = req.find("x-request-id")) {
    request_id_ = id->value;
  } else {
    worker_->newRequestId(&request_id_);
  }
  if (!runHeadFilters(0)) {
    if (filter_paused_) {
      return HeadAction::kPause;  // the body waits (unparsed) until the filter resumes
    }
    return (closing_ || state_ == State::kClosing) ? HeadAction::kStop : HeadAction::kContinue;
  }
  afterHeadFilters();
  return (closing_ || state_ == State::kClosing) ? HeadAction::kStop : HeadAction::kContinue;
}

bool DownstreamConnection::checkWebSocketHandshake() {
  const RequestHead& req = request_;
  const char* bad = nullptr;
  const Header* key = req.find("sec-websocket-key");
  if (req.method != "GET") {
    bad = "WebSocket upgrade must use GET";
  } else if (req.minor < 1) {
    bad = "WebSocket upgrade needs HTTP/1.1";
  } else if (!headersHaveToken(req.headers, "connection", "upgrade")) {
    bad = "WebSocket upgrade without 'Connection: Upgrade'";
  } else if (parser_.hasBody()) {
    bad = "WebSocket upgrade with a body";
  } else if (key == nullptr || req.count("sec-websocket-key") != 1 ||
             !ws::validClientKey(key->value)) {
    bad = "missing or invalid Sec-WebSocket-Key";
  }
  if (bad != nullptr) {
    respondLocal(400, bad, true);
    return false;
  }
  const Header* version = req.find("sec-websocket-version");
  if (version == nullptr || req.count("sec-websocket-version") != 1 || version->value != "13") {
    respondLocal(426, "unsupported Sec-WebSocket-Version", true, "Sec-WebSocket-Version: 13\r\n");
    return false;
  }
  return true;
}

std::string_view DownstreamConnection::host() const {
  const Header* h = request_.find("host");
  return h != nullptr ? std::string_view(h->value) : std::string_view();
}

std::optional<std::string_view> DownstreamConnection::header(std::string_view name) const {
  const Header* h = request_.find(name);
  if (h == nullptr) {
    return std::nullopt;
  }
  return std::string_view(h->value);
}

bool DownstreamConnection::runHeadFilters(size_t from) {
  const auto& chain = snapshot_->route_filters[static_cast<size_t>(route_)];
  bool unread_body = !request_complete_ && request_framing_.kind != Framing::kNone;
  for (size_t i = from; i < chain.size(); ++i) {
    while (stream_filters_.size() <= i) {
      stream_filters_.push_back(chain[stream_filters_.size()]->create());
    }
    filter_index_ = i;
    in_head_filters_ = true;
    filters::HeadDecision d = stream_filters_[i]->onRequestHead(*this, *this);
    in_head_filters_ = false;
    metrics::FilterSlot& fm = filterSlot(i);
    if (d.action == filters::HeadDecision::Action::kPause) {
      if (inline_resume_) {
        // The filter called resume() before returning.
        d = std::move(*inline_resume_);
        inline_resume_.reset();
      } else {
        filter_paused_ = true;
        return false;
      }
    }
    fm.decisions[d.action == filters::HeadDecision::Action::kReject ? metrics::kDecisionReject
                                                                    : metrics::kDecisionContinue]
        .inc();
    if (d.action == filters::HeadDecision::Action::kReject) {
      LOG_DEBUG("filter '%s' rejected %s %s: %u %s", chain[i]->name().c_str(),
                request_.method.c_str(), request_.url.c_str(), static_cast<unsigned>(d.status),
                d.reason.c_str());
      respondLocal(d.status, d.reason, unread_body || filter_paused_, d.headers);
      return false;
    }
  }
  return true;
}

metrics::FilterSlot& DownstreamConnection::filterSlot(size_t chain_index) const {
  size_t filter =
      snapshot_->config->routes[static_cast<size_t>(route_)].filter_indices[chain_index];
  return snapshot_->metrics.filters[filter][worker_->id()];
}

void DownstreamConnection::resume(filters::HeadDecision decision) {
  if (in_head_filters_) {
    inline_resume_ = std::move(decision);
    return;
  }
  if (!filter_paused_ || closing_ || state_ != State::kProxying) {
    return;
  }
  bool reject = decision.action == filters::HeadDecision::Action::kReject;
  filterSlot(filter_index_)
      .decisions[reject ? metrics::kDecisionReject : metrics::kDecisionContinue]
      .inc();
  if (reject) {
    respondLocal(decision.status, decision.reason, true, decision.headers);
    return;
  }
  filter_paused_ = false;
  if (!runHeadFilters(filter_index_ + 1)) {
    return;
  }
  afterHeadFilters();
  // The parser stopped after the head; let it read the body (or the next request) now.
  parser_paused_ = false;
  parser_.resume();
  stream_.readStart();
  processPendingInput();
}

void DownstreamConnection::afterHeadFilters() {
  if (request_framing_.kind != Framing::kNone && !request_complete_) {
    armTimer(TimerMode::kBody, listener().idle_timeout);
  }
  startUpstream(-1);
}

bool DownstreamConnection::onBody(const char* data, size_t len) {
  forwardBody(data, len);
  return !closing_ && state_ != State::kClosing;
}

void DownstreamConnection::onMessageComplete() {
  finishRequestBody();
}

// ---- toward the upstream -------------------------------------------------------------------

void DownstreamConnection::startUpstream(int exclude_backend) {
  const Snapshot& snap = *snapshot_;
  const conf::RouteConfig& route = snap.config->routes[static_cast<size_t>(route_)];
  const conf::PoolConfig& pool = snap.config->pools[route.pool_index];
  const size_t p = route.pool_index;
  int backend = -1;
  if (attempts_ == 0) {
    backend = stickyBackend(snap, p);
    sticky_hit_ = backend >= 0;
  } else {
    sticky_hit_ = false;  // a retry chose another backend: the client needs a new cookie
  }
  if (backend < 0) {
    std::string key;
    balanceKey(pool, &key);
    backend = worker_->pickBackend(snap, p, key, exclude_backend);
  }
  if (backend < 0) {
    logNoBackend(snap, p);
    respondLocal(503, "no backend available", !request_complete_);
    return;
  }
  backend_ = backend;
  ++attempts_;
  const std::string& key = snap.upstream_keys[p][static_cast<size_t>(backend)];
  // A retry after a stale keep-alive connection always opens a fresh one.
  // A WebSocket gets a dedicated connection.
  UpstreamConnection* up = attempts_ == 1 && !websocket_ ? worker_->takeIdleUpstream(key) : nullptr;
  if (up == nullptr) {
    up = new UpstreamConnection(
        worker_, key, pool.backends[static_cast<size_t>(backend)].address.text, route.pool_index,
        &snap.metrics.backends[route.pool_index][static_cast<size_t>(backend)][worker_->id()],
        snap.backend_states[p][static_cast<size_t>(backend)]);
    const sockaddr_storage& addr =
        snap.backend_addrs[route.pool_index][static_cast<size_t>(backend)];
    if (const auto& tls = snap.pool_tls[p]) {
      up->startTls(tls, pool.backends[static_cast<size_t>(backend)].address.host);
    }
    if (!up->connect(reinterpret_cast<const sockaddr*>(&addr), pool.connect_timeout)) {
      up->close();
      respondLocal(502, "cannot connect to backend", !request_complete_);
      return;
    }
  }
  upstream_ = up;
  up->attach(this, pool.response_timeout, head_request_, websocket_);
  if (in_parse_ && corked_upstream_ == nullptr) {
    corked_upstream_ = &up->stream();
    corked_upstream_->cork();
  }
  sendRequestHeadUpstream();
  if (request_complete_) {
    if (request_framing_.kind == Framing::kChunked) {
      up->write(kLastChunk);
    }
    up->requestSent();
  }
}

int DownstreamConnection::stickyBackend(const Snapshot& snap, size_t pool) const {
  const std::string& name = snap.config->pools[pool].sticky_cookie;
  if (name.empty()) {
    return -1;
  }
  std::string_view token = cookieValue(name);
  if (token.empty()) {
    return -1;
  }
  const auto& tokens = snap.sticky_tokens[pool];
  uint64_t now = upstream::steadyNowMs();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == token) {
      const upstream::BackendState* st = snap.backend_states[pool][i];
      bool ok =
          snap.config->pools[pool].backends[i].weight > 0 && (st == nullptr || st->available(now));
      return ok ? static_cast<int>(i) : -1;  // otherwise choose again and re-issue the cookie
    }
  }
  return -1;
}

std::string_view DownstreamConnection::cookieValue(std::string_view name) const {
  for (const Header& h : request_.headers) {
    if (!iequals(h.name, "cookie")) {
      continue;
    }
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t semi = v.find(';');
      std::string_view pair = v.substr(0, semi);
      while (!pair.empty() && pair.front() == ' ') {
        pair.remove_prefix(1);
      }
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
        return pair.substr(eq + 1);
      }
      if (semi == std::string_view::npos) {
        break;
      }
      v.remove_prefix(semi + 1);
    }
  }
  return {};
}

void DownstreamConnection::balanceKey(const conf::PoolConfig& pool, std::string* key) const {
  if (pool.balance != conf::Balance::kConsistentHash) {
    return;
  }
  std::string_view spec = pool.hash_key;
  if (spec == "source_ip") {
    *key = client_ip_;
  } else if (spec.starts_with("header:")) {
    if (const Header* h = request_.find(spec.substr(7))) {
      *key = h->value;
    }
  } else if (spec.starts_with("cookie:")) {
    *key = cookieValue(spec.substr(7));
  } else if (spec.starts_with("query:")) {
    std::string_view url = request_.url;
    size_t q = url.find('?');
    std::string want = std::string(spec.substr(6)) + "=";
    while (q != std::string_view::npos) {
      std::string_view rest = url.substr(q + 1);
      if (rest.starts_with(want)) {
        rest.remove_prefix(want.size());
        *key = rest.substr(0, rest.find_first_of("&#"));
        return;
      }
      q = url.find('&', q + 1);
    }
  }
  // No key (header, cookie or parameter absent): the balancer falls back to round robin.
}

void DownstreamConnection::logNoBackend(const Snapshot& snap, size_t pool) const {
  const conf::PoolConfig& pc = snap.config->pools[pool];
  uint64_t now = upstream::steadyNowMs();
  std::string why;
  for (size_t i = 0; i < pc.backends.size(); ++i) {
    const upstream::BackendState* st = snap.backend_states[pool][i];
    why += (i ? ", " : "") + pc.backends[i].address.text + " ";
    why += pc.backends[i].weight == 0 ? "weight 0" : st != nullptr ? st->stateName(now) : "?";
  }
  LOG_WARN("pool '%s': no backend can take a connection (%s): answering 503", pc.name.c_str(),
           why.c_str());
}

std::string DownstreamConnection::stickyHeader() const {
  if (route_ < 0 || backend_ < 0 || sticky_hit_) {
    return {};
  }
  size_t p = snapshot_->config->routes[static_cast<size_t>(route_)].pool_index;
  const std::string& name = snapshot_->config->pools[p].sticky_cookie;
  if (name.empty()) {
    return {};
  }
  return "Set-Cookie: " + name + "=" + snapshot_->sticky_tokens[p][static_cast<size_t>(backend_)] +
         "; Path=/; HttpOnly; SameSite=Lax\r\n";
}

upstream::BackendState* DownstreamConnection::backendState() const {
  if (route_ < 0 || backend_ < 0) {
    return nullptr;
  }
  size_t p = snapshot_->config->routes[static_cast<size_t>(route_)].pool_index;
  return snapshot_->backend_states[p][static_cast<size_t>(backend_)];
}

void DownstreamConnection::sendRequestHeadUpstream() {
  if (attempts_ == 1) {
    upstream_head_.clear();
    ForwardInfo info;
    info.client_ip = client_ip_;
    info.proto = tls_ ? "https" : "http";
    info.client_subject = client_subject_;
    info.request_id = request_id_;
    info.upgrade = websocket_;
    info.strip_ws_extensions = websocket_;
    writeUpstreamRequest(request_, info, request_framing_, &upstream_head_);
  }
  upstream_->write(upstream_head_);
  upstream_start_ = uv_hrtime();
  if (expect_continue_ && attempts_ == 1) {
    stream_.write(kContinue);
  }
}

void DownstreamConnection::forwardBody(const char* data, size_t len) {
  body_in_ += len;
  const conf::RouteConfig* route =
      route_ >= 0 ? &snapshot_->config->routes[static_cast<size_t>(route_)] : nullptr;
  if (route != nullptr && route->max_body_bytes > 0 && body_in_ > route->max_body_bytes) {
    respondLocal(413, "request body larger than max_body_bytes", true);
    return;
  }
  if (timer_mode_ == TimerMode::kBody) {
    armTimer(TimerMode::kBody, listener().idle_timeout);  // the gap allowed starts again
  }
  if (upstream_ == nullptr) {
    return;  // answered locally already; the rest of the body is discarded
  }
  if (request_framing_.kind == Framing::kChunked) {
    writeChunk(*upstream_, data, len);
  } else {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    upstream_->write(&b, 1);
  }
  if (upstream_->aboveHighWatermark()) {
    stream_.readStop();
    timer_.disarm();  // the client is not the one being slow now
    upstream_->awaitDrain();
  }
}

void DownstreamConnection::finishRequestBody() {
  request_complete_ = true;
  if (timer_mode_ == TimerMode::kBody) {
    armTimer(TimerMode::kNone, {});
  }
  if (upstream_ != nullptr) {
    if (request_framing_.kind == Framing::kChunked) {
      upstream_->write(kLastChunk);
    }
    upstream_->requestSent();
  }
}

void DownstreamConnection::onUpstreamWritable() {
  if (state_ == State::kProxying && !request_complete_ && !closing_) {
    stream_.readStart();
    if (timer_mode_ == TimerMode::kBody) {
      armTimer(TimerMode::kBody, listener().idle_timeout);  // reading again: the gap starts now
    }
  }
}

void DownstreamConnection::awaitClientDrain() {
  armTimer(TimerMode::kSend, listener().idle_timeout);
}

// ---- from the upstream ---------------------------------------------------------------------

void DownstreamConnection::onUpstreamInformational(const ResponseHead& head) {
  // 100 Continue is sluice's own business (it answered Expect itself); other 1xx are relayed to
  // HTTP/1.1 clients.
  if (head.status == 100 || request_.minor == 0 || response_started_) {
    return;
  }
  head_buffer_.clear();
  writeDownstreamResponse(head, {}, true, {}, &head_buffer_);
  stream_.write(head_buffer_);
}

bool DownstreamConnection::onUpstreamResponseHead(const ResponseHead& head,
                                                  BodyFraming upstream_framing) {
  status_ = head.status;
  response_started_ = true;
  observeUpstreamLatency();
  response_framing_ = upstream_framing;
  if (upstream_framing.kind == Framing::kChunked || upstream_framing.kind == Framing::kClose) {
    // Re-chunked for HTTP/1.1 clients; an HTTP/1.0 client reads until the close.
    response_framing_.kind = request_.minor >= 1 ? Framing::kChunked : Framing::kClose;
  }
  keep_alive_ = keep_alive_ && !websocket_ && clientWantsKeepAlive() && !shutdown_ &&
                !client_eof_ && response_framing_.kind != Framing::kClose &&
                !worker_->shuttingDown();
  if (upstream::BackendState* st = backendState()) {
    if (head.status >= 500) {
      if (st->recordFailure(upstream::steadyNowMs())) {
        LOG_WARN("backend %s ejected after consecutive failures (last: %u)",
                 upstream_ != nullptr ? upstream_->address().c_str() : "?",
                 static_cast<unsigned>(head.status));
      }
    } else {
      st->recordSuccess();
    }
  }
  head_buffer_.clear();
  writeDownstreamResponse(head, response_framing_, keep_alive_, extraResponseHeaders(),
                          &head_buffer_);
  stream_.write(head_buffer_);
  return head_request_;
}

void DownstreamConnection::observeUpstreamLatency() {
  if (upstream_ == nullptr) {
    return;
  }
  double seconds = static_cast<double>(uv_hrtime() - upstream_start_) / 1e9;
  snapshot_->metrics.pools[upstream_->pool()][worker_->id()].upstream_response.observe(seconds);
}

bool DownstreamConnection::onUpstreamUpgrade(const ResponseHead& head) {
  if (!websocket_ || response_started_ || upstream_ == nullptr) {
    return false;
  }
  const Header* accept = head.find("sec-websocket-accept");
  const Header* protocol = head.find("sec-websocket-protocol");
  const Header* offered = request_.find("sec-websocket-protocol");
  const char* bad = nullptr;
  if (!headersHaveToken(head.headers, "upgrade", "websocket")) {
    bad = "101 without 'Upgrade: websocket'";
  } else if (!headersHaveToken(head.headers, "connection", "upgrade")) {
    bad = "101 without 'Connection: Upgrade'";
  } else if (accept == nullptr ||
             accept->value != ws::acceptKey(request_.find("sec-websocket-key")->value)) {
    bad = "101 with a wrong Sec-WebSocket-Accept";
  } else if (protocol != nullptr &&
             (offered == nullptr || protocol->value.find(',') != std::string::npos ||
              !headerHasToken(offered->value, protocol->value))) {
    bad = "101 with a subprotocol the client did not offer";
  } else if (head.find("sec-websocket-extensions") != nullptr) {
    bad = "101 with an extension the client did not offer";
  }
  if (bad != nullptr) {
    LOG_WARN("backend %s: invalid WebSocket handshake: %s", upstream_->address().c_str(), bad);
    return false;
  }
  status_ = 101;
  response_started_ = response_complete_ = true;
  observeUpstreamLatency();
  head_buffer_.clear();
  if (upstream::BackendState* st = backendState()) {
    st->recordSuccess();
  }
  writeDownstreamResponse(head, {}, true,
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n" + extraResponseHeaders(),
                          &head_buffer_);
  stream_.write(head_buffer_);
  return true;
}

void DownstreamConnection::startWebSocket(std::string_view early_upstream) {
  UpstreamConnection* up = upstream_;
  const size_t route = static_cast<size_t>(route_);
  ws::Session::Setup setup;
  setup.worker = worker_;
  setup.snapshot = snapshot_;
  setup.listener = listener_index_;
  setup.route = route;
  setup.pool = snapshot_->config->routes[route].pool_index;
  setup.backend = static_cast<size_t>(backend_);
  setup.filters = std::move(stream_filters_);
  setup.listener_slot = listener_slot_;
  setup.backend_slot = up->slot();
  setup.backend_state = up->state();
  setup.client_ip = client_ip_;
  if (const Header* h = request_.find("host")) {
    setup.host = h->value;
  }
  setup.path = request_.url;
  setup.request_id = request_id_;
  setup.start = request_start_;
  std::string early_client = std::move(pending_input_);
  // The streams, and the counters that last as long as they do, go to the session; this object
  // and the upstream one are retired (freed once their timers have closed).
  handed_over_ = true;
  setup.client = std::move(stream_owner_);
  upstream_ = nullptr;
  setup.upstream = up->handOver();
  state_ = State::kUpgraded;
  closing_ = true;
  stream_closed_ = true;
  timer_.close(&DownstreamConnection::onTimerClosed);
  // The session registers with the worker before this connection leaves it, so that a worker
  // shutting down never sees a moment without either.
  ws::Session::start(std::move(setup), early_client, early_upstream);
  worker_->unregisterConnection(this);
  registered_ = false;
}

void DownstreamConnection::onUpstreamBody(const char* data, size_t len) {
  bytes_out_ += len;
  if (response_framing_.kind == Framing::kChunked) {
    writeChunk(stream_, data, len);
  } else {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    stream_.write(&b, 1);
  }
}

void DownstreamConnection::onWritable() {
  if (timer_mode_ == TimerMode::kSend) {
    if (request_complete_) {
      armTimer(TimerMode::kNone, {});
    } else {
      armTimer(TimerMode::kBody, listener().idle_timeout);
    }
  }
  if (upstream_ != nullptr) {
    upstream_->resumeReading();
  }
}

void DownstreamConnection::onUpstreamComplete() {
  if (response_framing_.kind == Framing::kChunked) {
    stream_.write(kLastChunk);
  }
  response_complete_ = true;
  releaseUpstream(request_complete_);
  if (request_complete_) {
    finishExchange();
  } else {
    // The backend answered before the request body ended: the rest of it is not worth reading.
    keep_alive_ = false;
    writeAccessLog();
    closeSoon();
  }
}

void DownstreamConnection::onUpstreamError(UpstreamError error, int status) {
  upstream_ = nullptr;
  if (error == UpstreamError::kConnectFailed) {
    if (upstream::BackendState* st = backendState();
        st != nullptr && st->recordFailure(upstream::steadyNowMs())) {
      LOG_WARN("backend ejected after consecutive connect failures (route '%s')",
               snapshot_->config->routes[static_cast<size_t>(route_)].name.c_str());
    }
  }
  bool nothing_sent = body_in_ == 0;
  bool retry = false;
  if (error == UpstreamError::kConnectFailed) {
    retry = nothing_sent && attempts_ < 2;
  } else if (error == UpstreamError::kResetBeforeResponse) {
    // A reused keep-alive connection the backend had already closed: safe to send again only
    // when the request is idempotent and no body went out.
    retry = nothing_sent && attempts_ < 2 && idempotent(method_);
  }
  if (retry && !closing_) {
    int failed = backend_;
    const conf::PoolConfig& pool =
        snapshot_->config->pools[snapshot_->config->routes[static_cast<size_t>(route_)].pool_index];
    startUpstream(error == UpstreamError::kConnectFailed && pool.backends.size() > 1 ? failed : -1);
    return;
  }
  const char* detail = "backend connection failed";
  uint16_t code = 502;
  switch (error) {
    case UpstreamError::kConnectFailed:
      detail = status == UV_ETIMEDOUT ? "backend connect timed out" : "cannot connect to backend";
      code = status == UV_ETIMEDOUT ? 504 : 502;
      break;
    case UpstreamError::kTimeout:
      detail = "backend response timed out";
      code = 504;
      break;
    case UpstreamError::kBadResponse:
      detail = "invalid response from backend";
      break;
    case UpstreamError::kResetBeforeResponse:
      detail = "backend closed the connection";
      break;
    case UpstreamError::kTruncated:
      detail = "backend response truncated";
      break;
  }
  respondLocal(code, detail, !request_complete_);
}

void DownstreamConnection::releaseUpstream(bool reusable) {
  UpstreamConnection* up = upstream_;
  if (up == nullptr) {
    return;
  }
  upstream_ = nullptr;
  const conf::PoolConfig& pool = snapshot_->config->pools[up->pool()];
  up->release(reusable, pool.keepalive_connections, pool.keepalive_timeout);
}

// ---- finishing -----------------------------------------------------------------------------

void DownstreamConnection::respondLocal(uint16_t status, std::string_view detail, bool close_after,
                                        std::string_view extra_headers) {
  if (closing_) {
    return;
  }
  releaseUpstream(false);
  if (response_started_) {
    // Part of a response is out already: the only honest signal left is to cut the connection.
    local_error_ = detail;
    writeAccessLog();
    closeNow();
    return;
  }
  status_ = status;
  local_error_ = detail;
  response_started_ = response_complete_ = true;
  keep_alive_ = keep_alive_ && !close_after && !parser_failed_ && clientWantsKeepAlive() &&
                !shutdown_ && !worker_->shuttingDown();
  head_buffer_.clear();
  std::string extra(extra_headers);
  extra += hstsHeader();
  writeLocalResponse(status, detail, keep_alive_, extra, head_request_, &head_buffer_);
  stream_.write(head_buffer_);
  if (!keep_alive_) {
    writeAccessLog();
    closeSoon();
  } else if (request_complete_) {
    finishExchange();
  }
  // Otherwise the request (without body) completes in this parse() call, which then finishes.
}

void DownstreamConnection::writeAccessLog() {
  if (method_.empty()) {
    return;  // nothing to record, or recorded already
  }
  const metrics::Bound& m = snapshot_->metrics;
  metrics::RouteSlot& rs = route_ >= 0 ? m.routes[static_cast<size_t>(route_)][worker_->id()]
                                       : m.unrouted[worker_->id()];
  rs.requests_by_class[status_ / 100 <= 5 ? status_ / 100 : 0].inc();
  AccessLog* log = worker_->accessLog();
  if (log == nullptr || !log->enabled()) {
    method_.clear();
    return;
  }
  AccessLogEntry e;
  const conf::Config& cfg = *snapshot_->config;
  e.listener = cfg.listeners[listener_index_].name;
  if (route_ >= 0) {
    e.route = cfg.routes[static_cast<size_t>(route_)].name;
    if (backend_ >= 0) {
      e.upstream = cfg.pools[cfg.routes[static_cast<size_t>(route_)].pool_index]
                       .backends[static_cast<size_t>(backend_)]
                       .address.text;
    }
  }
  e.client = client_ip_;
  e.method = method_;
  e.path = request_.url;
  if (const Header* h = request_.find("host")) {
    e.host = h->value;
  }
  e.request_id = request_id_;
  e.status = status_;
  e.bytes_in = body_in_;
  e.bytes_out = bytes_out_;
  e.duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - request_start_)
          .count();
  e.error = local_error_;
  log->append(worker_->accessLogBuffer(), e);
  method_.clear();  // logged once
}

void DownstreamConnection::finishExchange() {
  writeAccessLog();
  // A client that half-closed after pipelining still gets answers to what it sent.
  if (!keep_alive_ || shutdown_ || worker_->shuttingDown() ||
      (client_eof_ && pending_input_.empty())) {
    closeSoon();
    return;
  }
  state_ = State::kReadingHead;
  request_complete_ = response_complete_ = response_started_ = false;
  saw_request_bytes_ = false;
  armTimer(TimerMode::kIdle, listener().idle_timeout);
  if (parser_paused_) {
    parser_paused_ = false;
    parser_.resume();
  }
  if (!client_eof_) {
    stream_.readStart();
  }
  processPendingInput();
  if (client_eof_ && state_ == State::kReadingHead && !closing_) {
    closeNow();  // the client's last bytes were an incomplete request
  }
}

void DownstreamConnection::shutdownGracefully() {
  shutdown_ = true;
  if (state_ == State::kReadingHead && !saw_request_bytes_ && pending_input_.empty()) {
    closeNow();
  }
}

void DownstreamConnection::adoptCurrentSnapshot() {
  const SnapshotPtr& next = worker_->snapshot();
  if (next == snapshot_) {
    return;
  }
  const conf::ListenerConfig& mine = listener();
  const auto& listeners = next->config->listeners;
  for (size_t i = 0; i < listeners.size(); ++i) {
    if (listeners[i].name == mine.name && listeners[i].listen.text == mine.listen.text) {
      snapshot_ = next;
      listener_index_ = i;
      parser_.setMaxHeaderBytes(listeners[i].max_header_bytes);
      return;
    }
  }
  listener_gone_ = true;  // the listener was removed: this connection ends after its request
}

void DownstreamConnection::abort() {
  closeNow();
}

void DownstreamConnection::closeSoon() {
  if (closing_ || state_ == State::kClosing) {
    return;
  }
  state_ = State::kClosing;
  releaseUpstream(false);
  // Lingering close: send FIN after the queued response, then read and discard until the client
  // closes (or a short timeout), so that unread request bytes do not turn into an RST that
  // destroys the response on the client's side.
  stream_.shutdown();
  stream_.readStart();
  armTimer(TimerMode::kLinger, kLingerTimeout);
}

void DownstreamConnection::closeNow() {
  if (closing_) {
    return;
  }
  closing_ = true;
  writeAccessLog();
  releaseUpstream(false);
  if (registered_) {
    worker_->unregisterConnection(this);
    registered_ = false;
  }
  stream_.close();
  timer_.close(&DownstreamConnection::onTimerClosed);
}

void DownstreamConnection::onTimerClosed(void* self) {
  auto* d = static_cast<DownstreamConnection*>(self);
  d->timer_closed_ = true;
  d->maybeDelete();
}

void DownstreamConnection::onClosed() {
  stream_closed_ = true;
  if (!closing_) {
    closeNow();  // closed after a flush: release the rest
  }
  maybeDelete();
}

void DownstreamConnection::maybeDelete() {
  if (timer_closed_ && stream_closed_) {
    delete this;
  }
}

void DownstreamConnection::onEof() {
  client_eof_ = true;
  if (state_ == State::kClosing || state_ == State::kReadingHead || !request_complete_) {
    // Nothing in flight, or the client gave up in the middle of its own request.
    closeNow();
  }
  // Otherwise the request is complete: finish sending the response, then close.
}

void DownstreamConnection::onError(int status) {
  LOG_DEBUG("downstream %s: %s", client_ip_.c_str(), uv_strerror(status));
  closeNow();
}

}  // namespace sluice::http
