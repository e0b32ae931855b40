#include "proxy/http/exchange.h"

#include "proxy/http/path.h"

#include <charconv>

#include "filters/request_key.h"
#include "proxy/access_log.h"
#include "proxy/http/forwarded.h"
#include "proxy/log.h"
#include "proxy/worker.h"
#include "proxy/ws/codec.h"
#include "proxy/ws/session.h"

namespace sluice::http {

namespace {
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";

bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" ||
         method == "PUT" || method == "DELETE";
}

bool hasBody(BodyFraming f) {
  return f.kind == Framing::kChunked || (f.kind == Framing::kContentLength && f.length > 0);
}

// A client's X-Request-Id is kept when it looks like an id: up to 128 characters of letters,
// digits and -_.:+=/ (anything else could carry log injection or a header's worth of junk).
bool plausibleRequestId(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':' || c == '+' || c == '=' || c == '/';
  });
}

// RFC 7239 node: IPv6 addresses are quoted and bracketed.
void appendForwardedNode(std::string* out, std::string_view ip) {
  if (ip.find(':') != std::string_view::npos) {
    out->append("\"[").append(ip).append("]\"");
  } else {
    out->append(ip);
  }
}

void applyRules(std::vector<Header>* headers, const conf::HeaderRules& rules) {
  if (!rules.remove.empty() || !rules.set.empty()) {
    std::erase_if(*headers, [&](const Header& h) {
      for (const std::string& name : rules.remove) {
        if (iequals(h.name, name)) {
          return true;
        }
      }
      for (const auto& [name, value] : rules.set) {
        if (iequals(h.name, name)) {
          return true;
        }
      }
      return false;
    });
  }
  for (const auto& [name, value] : rules.set) {
    headers->push_back({name, value});
  }
  for (const auto& [name, value] : rules.add) {
    headers->push_back({name, value});
  }
}

std::string_view withoutQuery(std::string_view target) {
  return target.substr(0, target.find('?'));
}
}  // namespace

// Writes `data` as one chunk of a chunked body: size line, data, CRLF, in one writev.
void writeChunk(net::Transport& out, const char* data, size_t len) {
  char size_line[24];
  char* end = std::to_chars(size_line, size_line + sizeof size_line - 2, len, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  uv_buf_t bufs[3] = {uv_buf_init(size_line, static_cast<unsigned>(end - size_line)),
                      uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len)),
                      uv_buf_init(const_cast<char*>(kCrlf.data()), 2)};
  out.write(bufs, 3);
}

namespace {
SlashAction slashAction(conf::SlashPolicy p) {
  switch (p) {
    case conf::SlashPolicy::kReject:
      return SlashAction::kReject;
    case conf::SlashPolicy::kDecode:
      return SlashAction::kDecode;
    case conf::SlashPolicy::kKeep:
      break;
  }
  return SlashAction::kKeep;
}

// False for the common target that normalising would leave as it is: origin-form, with no
// escape, dot segment, backslash or (when merged) double slash. Such a target skips the work.
bool needsNormalizing(std::string_view url, const conf::ListenerConfig& listener) {
  if (url.empty() || url.front() != '/') {
    return true;
  }
  std::string_view path = url.substr(0, url.find('?'));
  if (path.find_first_of("%\\#") != std::string_view::npos ||
      path.find("/.") != std::string_view::npos) {
    return true;
  }
  return listener.merge_slashes && path.find("//") != std::string_view::npos;
}
}  // namespace

Exchange::~Exchange() {
  releaseUpstream(false);
}

const conf::RouteConfig& Exchange::route() const {
  return snapshot_->config->routes[*route_];
}

size_t Exchange::heldBytes() const {
  return (filters_ ? filters_->bufferedBytes() : 0) + held_body_.capacity();
}

void Exchange::begin() {
  reset();
  route_.reset();
  request_id_.clear();
  client_ip_.clear();
  active_ = true;
  start_ = std::chrono::steady_clock::now();
}

void Exchange::reset() {
  // The filter instances go before the snapshot that made them (they hold their Filter anyway).
  filters_.reset();
  encoder_.reset();
  if (held_body_.capacity() != 0) {
    std::string().swap(held_body_);
  }
  down_.heldBytesChanged(0);
  held_head_.reset();
  held_complete_ = false;
  std::string().swap(held_body_);
  releaseUpstream(false);
  active_ = false;
  request_ = nullptr;
}

// ---- the request ---------------------------------------------------------------------------

Exchange::HeadAction Exchange::onRequestHead(RequestHead& head, BodyFraming framing, bool http11) {
  request_ = &head;
  snapshot_ = down_.snapshot();
  method_ = head.method;
  head_request_ = head.method == "HEAD";
  http11_ = http11;
  websocket_ = sticky_hit_ = expect_continue_ = false;
  request_complete_ = response_started_ = response_complete_ = head_stopped_ = false;
  body_in_ = bytes_out_ = 0;
  status_ = 0;
  attempts_ = 0;
  backend_.reset();
  route_.reset();
  local_error_.clear();
  request_id_.clear();
  log_ = true;
  health_check_ = false;
  upstream_connect_ms_ = upstream_response_ms_ = -1;
  request_framing_ = framing;
  // Local answers to requests with an unread body close the connection: the body is never
  // read, so the stream cannot be resynchronised.
  const bool has_body = hasBody(framing);
  const HeadAction after_local = has_body ? HeadAction::kStop : HeadAction::kContinue;

  const conf::ListenerConfig& listener = snapshot_->config->listeners[down_.listenerIndex()];
  // What routes, filters, logs and the backend see: the normalised target, and an absolute-form
  // target's authority instead of Host (RFC 9112 3.2.2), so that a request is never routed on
  // one name or path and forwarded with another.
  std::string_view path = head.url;
  std::string_view host = head.get("host").value_or(std::string_view());
  std::optional<NormalizedTarget> target;
  if (needsNormalizing(head.url, listener)) {
    PathPolicy policy{listener.merge_slashes, slashAction(listener.encoded_slashes),
                      slashAction(listener.backslashes)};
    TargetResult r = normalizeTarget(head.method, head.url, host, policy);
    if (!r.ok()) {
      respondLocal(r.status, r.reason, has_body);
      return after_local;
    }
    target = std::move(r.target);
    if (target->form == TargetForm::kAbsolute) {
      head.set("Host", target->host);
    }
    host = target->host;
    path = target->path;
  }
  resolveClient(head, host);
  if (const Header* id = head.find("x-request-id");
      id != nullptr && plausibleRequestId(id->value)) {
    request_id_ = id->value;
  } else {
    down_.worker().newRequestId(&request_id_);
  }
  if (!listener.health_path.empty() && withoutQuery(path) == listener.health_path &&
      (head.method == "GET" || head.method == "HEAD")) {
    // The load balancer's check: not logged, not counted as traffic.
    health_check_ = true;
    bool stopping = down_.worker().shared()->stopping.load(std::memory_order_relaxed);
    respondLocal(stopping ? 503 : 200, stopping ? "shutting down" : "ok", has_body);
    return after_local;
  }
  if (listener.redirect_to_https) {
    std::string_view authority = host;
    if (!authority.empty() && authority.front() == '[') {
      authority = authority.substr(0, authority.find(']') + 1);  // "[::1]:8080" -> "[::1]"
    } else {
      authority = authority.substr(0, authority.rfind(':'));
    }
    std::string location = "Location: https://" + std::string(authority);
    if (listener.https_port != 443) {
      location += ":" + std::to_string(listener.https_port);
    }
    location += std::string(head.url.starts_with("/") ? std::string_view(head.url) : path) + "\r\n";
    respondLocal(308, "use https", has_body, location);
    return after_local;
  }
  if (int r = snapshot_->router.match(down_.listenerIndex(), host, path); r >= 0) {
    route_ = static_cast<size_t>(r);
    log_ = route().access_log;
  } else {
    respondLocal(404, "no route", has_body);
    return after_local;
  }
  if (target && !route().forward_original_target) {
    head.url = target->path + target->query;
  }
  LOG_DEBUG("c%u.%llu: %s %.*s host '%.*s' -> route '%s' (client %s, request %s)",
            down_.worker().id(), static_cast<unsigned long long>(down_.connectionId()),
            head.method.c_str(), static_cast<int>(std::min<size_t>(head.url.size(), 200)),
            head.url.data(), static_cast<int>(host.size()), host.data(), route().name.c_str(),
            client_ip_.c_str(), request_id_.c_str());

  // Upgrades other than WebSocket (h2c, ...) are not offered: those requests are proxied as plain
  // HTTP/1.1 with the Upgrade header removed.
  if (headersHaveToken(head.headers, "upgrade", "websocket")) {
    if (!route().websocket.enabled) {
      respondLocal(403, "WebSocket upgrades are not enabled on this route", true);
      return HeadAction::kStop;
    }
    if (!checkWebSocketHandshake()) {
      return HeadAction::kStop;
    }
    websocket_ = true;
    negotiateDeflate();
  }
  if (framing.kind == Framing::kContentLength && route().max_body_bytes > 0 &&
      framing.length > route().max_body_bytes) {
    respondLocal(413, "request body larger than max_body_bytes", true);
    return HeadAction::kStop;
  }
  if (const Header* expect = head.find("expect")) {
    if (!iequals(expect->value, "100-continue")) {
      respondLocal(417, "unsupported Expect", true);
      return HeadAction::kStop;
    }
    expect_continue_ = http11 && has_body;
  }

  if (!snapshot_->route_filters[*route_].empty() && !setUpFilters()) {
    if (filters_ && filters_->buffering()) {
      // The filter reads the whole body first: the client may send it now.
      if (expect_continue_) {
        down_.send100Continue();
        expect_continue_ = false;
      }
      down_.expectBody();
      return HeadAction::kContinue;
    }
    if (head_stopped_) {
      return HeadAction::kPause;  // the body waits (unparsed) until the filter resumes
    }
    return down_.closing() ? HeadAction::kStop : HeadAction::kContinue;
  }
  afterHeadFilters();
  return down_.closing() ? HeadAction::kStop : HeadAction::kContinue;
}

bool Exchange::checkWebSocketHandshake() {
  const RequestHead& req = *request_;
  // The first line and the number of lines of both names in one pass over the head (a find and
  // a count each were four passes).
  const Header* key = nullptr;
  const Header* version = nullptr;
  size_t keys = 0;
  size_t versions = 0;
  for (const Header& h : req.headers) {
    if (iequals(h.name, "sec-websocket-key")) {
      if (keys++ == 0) {
        key = &h;
      }
    } else if (iequals(h.name, "sec-websocket-version")) {
      if (versions++ == 0) {
        version = &h;
      }
    }
  }
  const char* bad = nullptr;
  if (req.method != "GET") {
    bad = "WebSocket upgrade must use GET";
  } else if (!http11_) {
    bad = "WebSocket upgrade needs HTTP/1.1";
  } else if (!headersHaveToken(req.headers, "connection", "upgrade")) {
    bad = "WebSocket upgrade without 'Connection: Upgrade'";
  } else if (hasBody(request_framing_)) {
    bad = "WebSocket upgrade with a body";
  } else if (keys != 1 || !ws::validClientKey(key->value)) {
    bad = "missing or invalid Sec-WebSocket-Key";
  }
  if (bad != nullptr) {
    respondLocal(400, bad, true);
    return false;
  }
  if (versions != 1 || version->value != "13") {
    respondLocal(426, "unsupported Sec-WebSocket-Version", true, "Sec-WebSocket-Version: 13\r\n");
    return false;
  }
  return true;
}

// Runs the route's filters over the head. Returns true when every one passed at once.
bool Exchange::setUpFilters() {
  const auto& chain = snapshot_->route_filters[*route_];
  Worker& w = down_.worker();
  std::vector<metrics::FilterSlot*> slots;
  std::vector<std::shared_ptr<filters::WorkerState>> states;
  slots.reserve(chain.size());
  states.reserve(chain.size());
  for (size_t i = 0; i < chain.size(); ++i) {
    size_t f = route().filter_indices[i];
    slots.push_back(snapshot_->metrics.filters.empty() ? nullptr
                                                       : &snapshot_->metrics.filters[f][w.id()]);
    states.push_back(w.filterState(chain[i]));
  }
  filters_ = std::make_unique<FilterManager>(*this, w.dispatcher(), chain, std::move(slots),
                                             std::move(states), route().max_body_bytes);
  filters::StreamInfo& info = filters_->info();
  info.client_ip = clientIp();
  info.listener = snapshot_->config->listeners[down_.listenerIndex()].name;
  info.route = route().name;
  info.request_id = request_id_;
  info.tls = down_.tls();
  info.websocket = websocket_;
  info.connection_id = down_.connectionId();
  info.connection_request = down_.requestsBegun();
  FilterManager::Result res = filters_->requestHead(*request_, hasBody(request_framing_));
  if (res == FilterManager::Result::kStopped && !filters_->buffering()) {
    head_stopped_ = true;
  }
  return res == FilterManager::Result::kContinue;
}

void Exchange::onPhaseResumed(FilterOwner::Phase phase) {
  if (!active_ || response_started_) {
    return;
  }
  if (phase == FilterOwner::Phase::kResponseHead) {
    sendResponseHead();
    return;
  }
  bool was_stopped = head_stopped_;
  head_stopped_ = false;
  afterHeadFilters();
  if (was_stopped && !down_.closing()) {
    down_.resumeRequest();  // the parser stopped after the head: read the body (or next request)
  }
}

void Exchange::afterHeadFilters() {
  if (request_framing_.kind != Framing::kNone && !request_complete_) {
    down_.expectBody();
  }
  startUpstream(std::nullopt);
}

bool Exchange::onRequestBody(const char* data, size_t len) {
  body_in_ += len;
  if (route_ && route().max_body_bytes > 0 && body_in_ > route().max_body_bytes) {
    respondLocal(413, "request body larger than max_body_bytes", true);
    return false;
  }
  if (filters_ && (filters_->buffering() || filters_->has(filters::Filter::kRequestBody))) {
    bool buffering = filters_->buffering();
    FilterManager::Result r = filters_->requestBody(std::string_view(data, len), false);
    down_.heldBytesChanged(heldBytes());
    if (r == FilterManager::Result::kEnded) {
      return false;
    }
    if (buffering) {
      return !down_.closing();  // kept by the filter manager (the phase cannot end before the end)
    }
  }
  forwardBody(data, len);
  return !down_.closing();
}

void Exchange::forwardBody(const char* data, size_t len) {
  if (upstream_ == nullptr) {
    return;  // answered locally already; the rest of the body is discarded
  }
  if (request_framing_.kind == Framing::kChunked) {
    writeChunk(upstream_->stream(), data, len);
  } else {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    upstream_->write(&b, 1);
  }
  if (upstream_->aboveHighWatermark()) {
    down_.readDisable(Downstream::kUpstreamFull, true);
    upstream_->awaitDrain();
  }
}

void Exchange::onRequestComplete() {
  request_complete_ = true;
  if (filters_ && !response_started_ &&
      (filters_->buffering() || filters_->has(filters::Filter::kRequestBody))) {
    bool buffering = filters_->buffering();
    FilterManager::Result r = filters_->requestBody({}, true);
    if (r == FilterManager::Result::kEnded) {
      if (response_complete_) {
        finish();  // answered by a filter (or 413)
      }
      return;
    }
    if (buffering) {
      if (r == FilterManager::Result::kContinue) {
        afterHeadFilters();  // the buffering filter and the rest of the head phase passed
      }
      return;  // or a verdict to come (onPhaseResumed)
    }
  }
  finishRequestBody();
  if (response_complete_) {
    finish();
  }
}

void Exchange::finishRequestBody() {
  if (upstream_ != nullptr) {
    if (request_framing_.kind == Framing::kChunked) {
      upstream_->write(kLastChunk);
    }
    upstream_->requestSent();
  }
}

void Exchange::onDownstreamWritable() {
  if (upstream_ != nullptr) {
    upstream_->resumeReading();
  }
}

// ---- toward the upstream -------------------------------------------------------------------

void Exchange::startUpstream(std::optional<size_t> exclude_backend) {
  const Snapshot& snap = *snapshot_;
  const conf::RouteConfig& rc = route();
  const conf::PoolConfig& pool = snap.config->pools[rc.pool_index];
  const size_t p = rc.pool_index;
  Worker& w = down_.worker();
  std::optional<size_t> backend;
  if (attempts_ == 0) {
    backend = stickyBackend(snap, p);
    sticky_hit_ = backend.has_value();
  } else {
    sticky_hit_ = false;  // a retry chose another backend: the client needs a new cookie
  }
  if (!backend) {
    std::string_view key;
    if (pool.balance == conf::Balance::kConsistentHash) {
      // No key (header, cookie or parameter absent): the balancer falls back to round robin.
      key = filters::requestKey(pool.hash_key, *request_, clientIp());
    }
    backend = w.pickBackend(snap, p, key, exclude_backend);
  }
  if (!backend) {
    logNoBackend(snap, p);
    respondLocal(503, "no backend available", !request_complete_);
    return;
  }
  backend_ = backend;
  ++attempts_;
  const size_t b = *backend;
  const BackendRuntime& target = snap.backend(p, b);
  // A retry after a stale keep-alive connection always opens a fresh one.
  // A WebSocket gets a dedicated connection.
  UpstreamConnection* up = nullptr;
  if (attempts_ == 1 && !websocket_) {
    up = static_cast<UpstreamConnection*>(
        w.keepalivePool().take(target.upstream_key, upstream::steadyNowMs()));
  }
  if (up != nullptr) {
    upstream_connect_ms_ = -1;
    LOG_DEBUG("c%u.%llu: request %s -> %s (pool '%s', reused connection)", w.id(),
              static_cast<unsigned long long>(down_.connectionId()), request_id_.c_str(),
              pool.backends[b].address.text.c_str(), pool.name.c_str());
  } else {
    LOG_DEBUG("c%u.%llu: request %s -> %s (pool '%s', new connection)", w.id(),
              static_cast<unsigned long long>(down_.connectionId()), request_id_.c_str(),
              pool.backends[b].address.text.c_str(), pool.name.c_str());
    up = new UpstreamConnection(&w, target.upstream_key, pool.backends[b].address.text, p,
                                &target.slots[w.id()], target.state);
    if (const auto& tls = snap.pool(p).tls) {
      up->startTls(tls, pool.backends[b].address.host);
    }
    if (!up->connect(reinterpret_cast<const sockaddr*>(&target.addr), pool.connect_timeout)) {
      up->close();
      respondLocal(502, "cannot connect to backend", !request_complete_);
      return;
    }
  }
  upstream_ = up;
  up->attach(this, rc.response_timeout.value_or(pool.response_timeout), head_request_, websocket_);
  // The request head and the body bytes of this read go upstream in one write.
  up->stream().cork();
  sendRequestHead();
  bool buffered_complete = false;
  if (filters_ && attempts_ == 1) {
    std::string body = filters_->takeBufferedBody(&buffered_complete);
    if (!body.empty()) {
      forwardBody(body.data(), body.size());
    }
  }
  if (request_complete_) {
    finishRequestBody();
  }
  if (upstream_ != nullptr) {
    upstream_->stream().uncork();
  }
}

void Exchange::sendRequestHead() {
  if (attempts_ == 1) {
    upstream_head_.clear();
    if (!route().request_headers.empty()) {
      applyRules(&request_->headers, route().request_headers);
    }
    ForwardInfo info;
    info.x_forwarded_for = x_forwarded_for_;
    info.x_forwarded_proto = x_forwarded_proto_;
    info.x_forwarded_host = x_forwarded_host_;
    info.forwarded = forwarded_;
    info.client_subject = down_.clientSubject();
    info.request_id = request_id_;
    info.upgrade = websocket_;
    info.strip_ws_extensions = websocket_;
    info.ws_extensions = backend_offer_;
    writeUpstreamRequest(*request_, info, request_framing_, &upstream_head_);
  }
  upstream_->write(upstream_head_);
  upstream_start_ = uv_hrtime();
  if (expect_continue_ && attempts_ == 1) {
    down_.send100Continue();
  }
}

std::optional<size_t> Exchange::stickyBackend(const Snapshot& snap, size_t pool) const {
  const std::string& name = snap.config->pools[pool].sticky_cookie;
  if (name.empty()) {
    return std::nullopt;
  }
  std::string_view token = filters::cookieValue(*request_, name);
  if (token.empty()) {
    return std::nullopt;
  }
  const PoolRuntime& pr = snap.pool(pool);
  uint64_t now = upstream::steadyNowMs();
  for (size_t i = 0; i < pr.backends.size(); ++i) {
    if (pr.backends[i].sticky_token == token) {
      const upstream::BackendState* st = pr.backends[i].state;
      if (snap.config->pools[pool].backends[i].weight > 0 &&
          (st == nullptr || st->available(now))) {
        return i;
      }
      return std::nullopt;  // choose again and re-issue the cookie
    }
  }
  return std::nullopt;
}

void Exchange::logNoBackend(const Snapshot& snap, size_t pool) const {
  const conf::PoolConfig& pc = snap.config->pools[pool];
  uint64_t now = upstream::steadyNowMs();
  std::string why;
  for (size_t i = 0; i < pc.backends.size(); ++i) {
    const upstream::BackendState* st = snap.backend(pool, i).state;
    why += (i ? ", " : "") + pc.backends[i].address.text + " ";
    why += pc.backends[i].weight == 0 ? "weight 0" : st != nullptr ? st->stateName(now) : "?";
  }
  LOG_WARN("pool '%s': no backend can take a connection (%s): answering 503%s", pc.name.c_str(),
           why.c_str(), logContext().c_str());
}

void Exchange::appendStickyHeader(std::string* out) const {
  if (!route_ || !backend_ || sticky_hit_) {
    return;
  }
  size_t p = route().pool_index;
  const conf::PoolConfig& pool = snapshot_->config->pools[p];
  if (pool.sticky_cookie.empty()) {
    return;
  }
  *out += "Set-Cookie: ";
  *out += pool.sticky_cookie;
  *out += '=';
  *out += snapshot_->backend(p, *backend_).sticky_token;
  *out += "; Path=/";
  if (pool.sticky_cookie_httponly) {
    *out += "; HttpOnly";
  }
  *out += "; SameSite=";
  *out += pool.sticky_cookie_samesite;
  // A cookie set over TLS is Secure unless the operator says otherwise: sent in clear it would
  // tell an eavesdropper which backend a client uses (SameSite=None needs it in any case).
  if (pool.sticky_cookie_secure.value_or(down_.tls() || x_forwarded_proto_ == "https")) {
    *out += "; Secure";
  }
  *out += "\r\n";
}

void Exchange::appendResponseHeaders(const ResponseHead* head, std::string* out) const {
  appendStickyHeader(out);
  if (!request_id_.empty() && (head == nullptr || head->find("x-request-id") == nullptr)) {
    out->reserve(out->size() + request_id_.size() + 16);  // one allocation, not one per append
    *out += "X-Request-Id: ";
    *out += request_id_;
    *out += "\r\n";
  }
}

std::string_view Exchange::responseHeaders(const ResponseHead* head) {
  extra_headers_.clear();
  appendResponseHeaders(head, &extra_headers_);
  return extra_headers_;
}

const ResponseHead& Exchange::editedResponse(const ResponseHead& head) {
  if (!route_ || route().response_headers.empty()) {
    return head;
  }
  held_head_ = head;
  applyRules(&held_head_->headers, route().response_headers);
  return *held_head_;
}

conf::Duration Exchange::idleTimeout(conf::Duration listener_default) const {
  if (route_ && snapshot_ && route().idle_timeout) {
    return *route().idle_timeout;
  }
  return listener_default;
}

void Exchange::resolveClient(const RequestHead& head, std::string_view host) {
  const size_t l = down_.listenerIndex();
  const conf::ListenerConfig& listener = snapshot_->config->listeners[l];
  const TrustedProxies& trusted = snapshot_->trusted_proxies[l];
  std::string_view scheme = down_.tls() ? "https" : "http";
  forwarded_.clear();
  if (trusted.empty()) {
    // Nobody's forwarding headers are believed: the peer is the client.
    client_ip_.assign(down_.clientIp());
    x_forwarded_for_.assign(down_.clientIp());
    x_forwarded_proto_.assign(scheme);
    x_forwarded_host_.assign(host);
  } else {
    std::optional<IpAddress> peer = IpAddress::parse(down_.clientIp());
    if (!peer) {
      peer = IpAddress::parse("0.0.0.0");  // (a peer without an IP address: never trusted)
    }
    bool rfc7239 = listener.forwarded_header == "forwarded";
    ClientInfo info = http::resolveClient(
        *peer, trusted, rfc7239 ? ForwardedSource::kForwarded : ForwardedSource::kXForwardedFor,
        head.headers, scheme, host);
    client_ip_ = std::move(info.client_ip);
    x_forwarded_for_ = std::move(info.x_forwarded_for);
    x_forwarded_proto_ = std::move(info.x_forwarded_proto);
    x_forwarded_host_ = std::move(info.x_forwarded_host);
  }
  if (listener.forwarded_header == "forwarded") {
    // The believed chain again, as RFC 7239 says it: for= per hop, proto and host on the last.
    std::string_view chain = x_forwarded_for_;
    while (!chain.empty()) {
      size_t comma = chain.find(", ");
      if (!forwarded_.empty()) {
        forwarded_ += ", ";
      }
      forwarded_ += "for=";
      appendForwardedNode(&forwarded_, chain.substr(0, comma));
      chain = comma == std::string_view::npos ? std::string_view() : chain.substr(comma + 2);
    }
    forwarded_ += ";proto=" + x_forwarded_proto_;
    if (!x_forwarded_host_.empty()) {
      forwarded_ += ";host=\"" + x_forwarded_host_ + "\"";
    }
  }
}

std::string Exchange::logContext() const {
  std::string out = " [listener=";
  out += down_.snapshot()->config->listeners[down_.listenerIndex()].name;
  if (route_) {
    out += " route=" + route().name;
  }
  out += " client=";
  out += clientIp();
  if (!request_id_.empty()) {
    out += " request_id=" + request_id_;
  }
  return out + "]";
}

upstream::BackendState* Exchange::backendState() const {
  if (!route_ || !backend_) {
    return nullptr;
  }
  return snapshot_->backend(route().pool_index, *backend_).state;
}

void Exchange::releaseUpstream(bool reusable) {
  UpstreamConnection* up = upstream_;
  if (up == nullptr) {
    return;
  }
  upstream_ = nullptr;
  const conf::PoolConfig& pool = snapshot_->config->pools[up->pool()];
  up->release(reusable, pool.keepalive_connections, pool.keepalive_timeout);
}

// ---- from the upstream ---------------------------------------------------------------------

void Exchange::onUpstreamInformational(const ResponseHead& head) {
  // 100 Continue is sluice's own business (it answered Expect itself); other 1xx are relayed to
  // HTTP/1.1 clients.
  if (head.status == 100 || !http11_ || response_started_) {
    return;
  }
  down_.sendInformational(head);
}

bool Exchange::onUpstreamHead(const ResponseHead& raw_head, BodyFraming framing) {
  status_ = raw_head.status;
  observeUpstreamLatency();
  LOG_DEBUG("c%u.%llu: request %s <- %u from %s", down_.worker().id(),
            static_cast<unsigned long long>(down_.connectionId()), request_id_.c_str(),
            static_cast<unsigned>(raw_head.status),
            upstream_ != nullptr ? upstream_->address().c_str() : "?");
  if (upstream::BackendState* st = backendState()) {
    if (raw_head.status >= 500) {
      if (st->recordFailure(upstream::steadyNowMs())) {
        LOG_WARN("backend %s ejected after consecutive failures (last: %u)%s",
                 upstream_ != nullptr ? upstream_->address().c_str() : "?",
                 static_cast<unsigned>(raw_head.status), logContext().c_str());
      }
    } else {
      st->recordSuccess();
    }
  }
  held_framing_ = framing;
  const ResponseHead& head = editedResponse(raw_head);
  if (filters_ && filters_->has(filters::Filter::kResponseHead)) {
    if (!held_head_ || &head != &*held_head_) {
      held_head_ = head;
    }
    switch (filters_->responseHead(*held_head_)) {
      case FilterManager::Result::kContinue:
        break;
      case FilterManager::Result::kStopped:
        upstream_->stream().readStop();  // the body waits until the filter resumes
        return true;
      case FilterManager::Result::kEnded:
        return false;  // answered locally (the upstream connection is gone)
    }
  }
  startResponse(held_head_ ? *held_head_ : head, framing);
  return true;
}

void Exchange::startResponse(const ResponseHead& head, BodyFraming framing) {
  response_started_ = true;
  const auto& compression = snapshot_->route_compression[*route_];
  if (!compression || websocket_ || framing.kind == Framing::kNone) {
    down_.sendHead(head, framing, responseHeaders(&head), websocket_);
    return;
  }
  const CompressPolicy& policy = compression->policy;
  Skip skip = compressionSkip(*request_, head, policy);
  Coding coding =
      skip == Skip::kNone ? chooseCoding(request_->headers, policy.codings) : Coding::kIdentity;
  if (skip != Skip::kNone && skip != Skip::kSmall) {
    down_.sendHead(head, framing, responseHeaders(&head), websocket_);
    return;
  }
  // The response depends on Accept-Encoding from here on, compressed or not.
  ResponseHead out = head;
  if (coding != Coding::kIdentity) {
    encoder_ = makeEncoder(coding, compression->options);
  }
  if (encoder_ != nullptr) {
    encodeResponseHead(&out, coding);
    framing = {Framing::kChunked};  // the compressed length is not known in advance
  } else {
    addVaryAcceptEncoding(&out);
  }
  down_.sendHead(out, framing, responseHeaders(&out), websocket_);
}

void Exchange::sendBody(const char* data, size_t len) {
  bytes_out_ += len;
  if (encoder_ == nullptr) {
    down_.sendBody(data, len);
    return;
  }
  // Each piece the backend sent is flushed through, so a streamed response keeps streaming.
  std::string out;
  if (!encoder_->write(std::string_view(data, len), &out) || !encoder_->flush(&out)) {
    LOG_WARN("response compression failed: cutting the response");
    respondLocal(500, "response compression failed", true);
    return;
  }
  if (!out.empty()) {
    down_.sendBody(out.data(), out.size());
  }
}

void Exchange::sendResponseHead() {
  // A response filter resumed: the held head, then the body that came meanwhile.
  startResponse(*held_head_, held_framing_);
  if (!held_body_.empty()) {
    sendBody(held_body_.data(), held_body_.size());
    std::string().swap(held_body_);
  }
  if (held_complete_) {
    onUpstreamComplete();
  } else if (upstream_ != nullptr) {
    upstream_->stream().readStart();
  }
}

void Exchange::observeUpstreamLatency() {
  if (upstream_ == nullptr) {
    return;
  }
  double seconds = static_cast<double>(uv_hrtime() - upstream_start_) / 1e9;
  upstream_response_ms_ = seconds * 1000;
  upstream_connect_ms_ = upstream_->connectMs();
  snapshot_->pool(upstream_->pool()).slots[down_.worker().id()].upstream_response.observe(seconds);
}

void Exchange::onUpstreamBody(const char* data, size_t len) {
  if (!response_started_) {
    held_body_.append(data, len);  // a response filter holds the head
    down_.heldBytesChanged(heldBytes());
    return;
  }
  sendBody(data, len);
}

void Exchange::onUpstreamComplete() {
  if (!response_started_) {
    held_complete_ = true;  // sent when the response filter resumes
    releaseUpstream(request_complete_);
    return;
  }
  if (encoder_ != nullptr) {
    std::string out;
    bool ok = encoder_->finish(&out);
    encoder_.reset();
    if (ok && !out.empty()) {
      down_.sendBody(out.data(), out.size());
    }
  }
  down_.endBody();
  response_complete_ = true;
  releaseUpstream(request_complete_);
  if (request_complete_) {
    finish();
  } else {
    // The backend answered before the request body ended: the rest of it is not worth reading.
    writeAccessLog();
    down_.abandonRequest();
  }
}

void Exchange::onUpstreamWritable() {
  if (!request_complete_) {
    down_.readDisable(Downstream::kUpstreamFull, false);
  }
}

void Exchange::onUpstreamHeldBack() {
  down_.awaitClientDrain();
}

void Exchange::onUpstreamError(UpstreamError error, int status) {
  upstream_ = nullptr;
  if (error == UpstreamError::kConnectFailed) {
    if (upstream::BackendState* st = backendState();
        st != nullptr && st->recordFailure(upstream::steadyNowMs())) {
      LOG_WARN("backend ejected after consecutive connect failures%s", logContext().c_str());
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
  if (retry && !down_.closing()) {
    const conf::PoolConfig& pool = snapshot_->config->pools[route().pool_index];
    startUpstream(error == UpstreamError::kConnectFailed && pool.backends.size() > 1
                      ? backend_
                      : std::nullopt);
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

bool Exchange::onUpstreamUpgrade(const ResponseHead& head) {
  if (!websocket_ || response_started_ || upstream_ == nullptr) {
    return false;
  }
  const RequestHead& req = *request_;
  const Header* accept = head.find("sec-websocket-accept");
  const Header* protocol = head.find("sec-websocket-protocol");
  const Header* offered = req.find("sec-websocket-protocol");
  const char* bad = nullptr;
  if (!headersHaveToken(head.headers, "upgrade", "websocket")) {
    bad = "101 without 'Upgrade: websocket'";
  } else if (!headersHaveToken(head.headers, "connection", "upgrade")) {
    bad = "101 without 'Connection: Upgrade'";
  } else if (accept == nullptr ||
             accept->value != ws::acceptKey(req.find("sec-websocket-key")->value)) {
    bad = "101 with a wrong Sec-WebSocket-Accept";
  } else if (protocol != nullptr &&
             (offered == nullptr || protocol->value.find(',') != std::string::npos ||
              !headerHasToken(offered->value, protocol->value))) {
    bad = "101 with a subprotocol the client did not offer";
  }
  std::string client_extensions;
  if (bad == nullptr && !checkBackendDeflate(head, &client_extensions)) {
    bad = "101 with an extension that was not offered";
  }
  if (bad != nullptr) {
    LOG_WARN("backend %s: invalid WebSocket handshake: %s%s", upstream_->address().c_str(), bad,
             logContext().c_str());
    return false;
  }
  status_ = 101;
  response_started_ = response_complete_ = true;
  observeUpstreamLatency();
  if (upstream::BackendState* st = backendState()) {
    st->recordSuccess();
  }
  const ResponseHead& edited = editedResponse(head);
  std::string& extra = extra_headers_;
  constexpr std::string_view kUpgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
  // Room for every line below, so that the buffer is allocated once.
  extra.reserve(kUpgrade.size() + request_id_.size() + client_extensions.size() + 64);
  extra.assign(kUpgrade);
  appendResponseHeaders(&edited, &extra);
  if (!client_extensions.empty()) {
    extra += "Sec-WebSocket-Extensions: ";
    extra += client_extensions;
    extra += "\r\n";
  }
  if (edited.find("sec-websocket-extensions") != nullptr) {
    // The backend's answer was for sluice's offer: the client gets sluice's own answer.
    ResponseHead answer = edited;
    answer.remove("sec-websocket-extensions");
    down_.sendHead(answer, {}, extra, false);
  } else {
    down_.sendHead(edited, {}, extra, false);
  }
  return true;
}

void Exchange::negotiateDeflate() {
  deflate_offers_.clear();
  deflate_answer_.reset();
  backend_offer_.clear();
  compression_ = {};
  const conf::WebSocketConfig& ws = route().websocket;
  if (ws.compression == conf::WsCompression::kOff) {
    return;  // the offers are removed on the way to the backend
  }
  deflate_offers_ = ws::parseDeflateOffers(request_->headers);
  if (ws.compression == conf::WsCompression::kPassthrough) {
    // The backend answers the client's own (valid) offers; sluice only checks the answer.
    backend_offer_ = ws::formatDeflateOffers(deflate_offers_);
    return;
  }
  ws::DeflateConfig cfg;
  cfg.deflate_window_bits = ws.compression_window_bits;
  deflate_answer_ = ws::answerDeflateOffers(deflate_offers_, cfg);
  if (ws.compression == conf::WsCompression::kTerminateBoth) {
    ws::DeflateParams offer = ws::backendDeflateOffer(cfg);
    backend_offer_ = ws::formatDeflateParams(offer);
    deflate_offers_ = {offer};  // what the backend's answer is checked against now
  }
}

// Checks a 101's Sec-WebSocket-Extensions against what sluice sent the backend, and settles
// each leg's compression; `client_answer` is the value the client's 101 carries (empty: none).
bool Exchange::checkBackendDeflate(const ResponseHead& head, std::string* client_answer) {
  const conf::WsCompression mode = route().websocket.compression;
  ws::BackendDeflateAnswer check;
  if (!backend_offer_.empty()) {
    check = ws::checkBackendDeflateAnswer(head.headers, deflate_offers_);
    if (check.error != nullptr) {
      LOG_WARN("backend %s: permessage-deflate answer refused: %s",
               upstream_ != nullptr ? upstream_->address().c_str() : "?", check.error);
      return false;
    }
  } else if (head.find("sec-websocket-extensions") != nullptr) {
    return false;  // nothing was offered to it
  }
  if (mode == conf::WsCompression::kPassthrough) {
    if (check.accepted) {
      compression_.client = compression_.backend = check.negotiated;
      compression_.passthrough = true;
      *client_answer = ws::formatDeflateParams(check.response);
    }
    return true;
  }
  if (check.accepted) {
    compression_.backend = check.negotiated;  // terminate_both
  }
  if (deflate_answer_) {
    compression_.client = deflate_answer_->negotiated;
    *client_answer = ws::formatDeflateParams(deflate_answer_->response);
  }
  return true;
}

void Exchange::onUpstreamUpgraded(std::string_view early_upstream) {
  UpstreamConnection* up = upstream_;
  const size_t r = *route_;
  ws::Session::Setup setup;
  setup.worker = &down_.worker();
  setup.snapshot = snapshot_;
  setup.listener = down_.listenerIndex();
  setup.route = r;
  setup.pool = route().pool_index;
  setup.backend = *backend_;
  setup.filters = std::move(filters_);
  setup.compression = compression_;
  setup.listener_slot = down_.listenerSlot();
  setup.backend_slot = up->slot();
  setup.backend_state = up->state();
  setup.client_ip = clientIp();
  setup.host = request_->get("host").value_or(std::string_view());
  const std::string* log_path = setup.filters ? setup.filters->logPath() : nullptr;
  setup.path = log_path != nullptr ? std::string_view(*log_path) : std::string_view(request_->url);
  setup.request_id = request_id_;
  setup.user_agent = request_->get("user-agent").value_or(std::string_view());
  setup.referer = request_->get("referer").value_or(std::string_view());
  setup.tls_version = down_.tlsVersion();
  setup.tls_cipher = down_.tlsCipher();
  setup.access_log = log_;
  setup.upstream_connect_ms = upstream_connect_ms_;
  setup.upstream_response_ms = upstream_response_ms_;
  setup.start = start_;
  LOG_DEBUG("c%u.%llu: request %s upgraded to a WebSocket with %s", down_.worker().id(),
            static_cast<unsigned long long>(down_.connectionId()), request_id_.c_str(),
            up->address().c_str());
  std::string early_client;
  // The streams, and the counters that last as long as they do, go to the session; the codec and
  // the upstream connection are retired (freed once their timers have closed).
  setup.client = down_.takeOver(&early_client);
  upstream_ = nullptr;
  setup.upstream = up->handOver();
  method_.clear();  // the session logs the exchange when it ends
  active_ = false;
  ws::Session::start(std::move(setup), early_client, early_upstream);
}

// ---- filters -------------------------------------------------------------------------------

void Exchange::filterLocalReply(uint16_t status, std::string_view reason, std::string_view headers,
                                bool close_connection) {
  // The body is not read (the parser stopped after the head) or only in part: the connection
  // cannot be resynchronised.
  bool unread_body = !request_complete_ && request_framing_.kind != Framing::kNone;
  respondLocal(status, reason, unread_body || head_stopped_ || close_connection, headers);
}

void Exchange::filterCloseWebSocket(filters::Direction, uint16_t, std::string_view reason) {
  // Before the 101 there is no WebSocket to close: refuse the upgrade instead.
  respondLocal(403, reason, true);
}

void Exchange::filterReadDisable(filters::Direction direction, bool disable) {
  if (direction == filters::Direction::kDownstreamToUpstream) {
    down_.readDisable(Downstream::kFilter, disable);
  } else if (upstream_ != nullptr) {
    if (disable) {
      upstream_->stream().readStop();
    } else {
      upstream_->stream().readStart();
    }
  }
}

// ---- finishing -----------------------------------------------------------------------------

void Exchange::respondLocal(uint16_t status, std::string_view detail, bool close_after,
                            std::string_view extra_headers) {
  if (!active_ || down_.closing()) {
    return;
  }
  releaseUpstream(false);
  local_error_ = detail;
  if (response_started_) {
    // Part of a response is out already: the only honest signal left is to cut the connection.
    writeAccessLog();
    down_.resetStream();
    return;
  }
  status_ = status;
  response_started_ = response_complete_ = true;
  if ((status == 500 || status == 502 || status == 504) && !health_check_) {
    LOG_WARN("%u %.*s%s", static_cast<unsigned>(status), static_cast<int>(detail.size()),
             detail.data(), logContext().c_str());
  } else {
    LOG_DEBUG("c%u.%llu: answered %u %.*s%s", down_.worker().id(),
              static_cast<unsigned long long>(down_.connectionId()), static_cast<unsigned>(status),
              static_cast<int>(detail.size()), detail.data(), logContext().c_str());
  }
  std::string extra(extra_headers);
  if (!request_id_.empty()) {
    extra += "X-Request-Id: " + request_id_ + "\r\n";
  }
  if (!down_.sendLocalReply(status, detail, close_after, extra)) {
    writeAccessLog();  // the connection closes after it
  } else if (request_complete_) {
    finish();
  }
  // Otherwise the request (without body) completes in this parse() call, which then finishes.
}

void Exchange::finish() {
  writeAccessLog();
  down_.exchangeDone();
}

void Exchange::abort(std::string_view why) {
  if (!active_) {
    return;
  }
  if (local_error_.empty() && !response_complete_) {
    local_error_ = why;
  }
  releaseUpstream(false);
  writeAccessLog();
  active_ = false;
}

void Exchange::writeAccessLog() {
  if (method_.empty()) {
    return;  // nothing to record, or recorded already
  }
  Worker& w = down_.worker();
  const metrics::Bound& m = snapshot_->metrics;
  metrics::RouteSlot& rs = route_ ? m.routes[*route_][w.id()] : m.unrouted[w.id()];
  if (health_check_) {
    method_.clear();  // neither traffic nor logged
    return;
  }
  rs.requests_by_class[status_ / 100 <= 5 ? status_ / 100 : 0].inc();
  AccessLog* log = w.accessLog();
  if (log == nullptr || !log->enabled() || !log_) {
    method_.clear();
    return;
  }
  AccessLogEntry e;
  const conf::Config& cfg = *snapshot_->config;
  e.listener = cfg.listeners[down_.listenerIndex()].name;
  if (route_) {
    e.route = route().name;
    if (backend_) {
      e.upstream = cfg.pools[route().pool_index].backends[*backend_].address.text;
    }
  }

  e.client = clientIp();
  e.method = method_;
  if (request_ != nullptr) {
    e.path = request_->url;
    e.host = request_->get("host").value_or(std::string_view());
    e.user_agent = request_->get("user-agent").value_or(std::string_view());
    e.referer = request_->get("referer").value_or(std::string_view());
    e.http_minor = static_cast<uint8_t>(request_->minor);
  }
  e.tls_version = down_.tlsVersion();
  e.tls_cipher = down_.tlsCipher();
  e.upstream_connect_ms = upstream_connect_ms_;
  e.upstream_response_ms = upstream_response_ms_;
  e.request_id = request_id_;
  e.status = status_;
  e.bytes_in = body_in_;
  e.bytes_out = bytes_out_;
  e.duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  e.error = local_error_;
  if (filters_) {
    e.auth = filters_->logAuth();
    if (const std::string* path = filters_->logPath()) {
      e.path = *path;
    }
  }
  log->append(w.id(), e);
  method_.clear();  // logged once
}

}  // namespace sluice::http
