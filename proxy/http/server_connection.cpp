#include "proxy/http/server_connection.h"

#include <sanitizer/asan_interface.h>

#include <vector>

#include "proxy/http/forwarded.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace sluice::http {

namespace {
constexpr size_t kMaxPendingInput = size_t{64} * 1024;
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";
// On shutdown, a connection that has not sent its first request yet gets this long to send it
// (it was accepted a moment ago: its request is very likely on its way).
constexpr auto kFreshConnectionGrace = std::chrono::seconds(2);

// The blocks of freed ServerConnections, for reuse by the next ones on the same thread. Bounded:
// after a burst of connections the rest goes back to malloc. Cached blocks are poisoned for
// AddressSanitizer, so that a use after free is still caught.
class BlockCache {
 public:
  static constexpr size_t kMaxBlocks = 64;

  BlockCache() { blocks_.reserve(kMaxBlocks); }
  ~BlockCache() {
    for (void* p : blocks_) {
      ASAN_UNPOISON_MEMORY_REGION(p, sizeof(ServerConnection));
      ::operator delete(p);
    }
  }
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  void* take() {
    if (blocks_.empty()) {
      return ::operator new(sizeof(ServerConnection));
    }
    void* p = blocks_.back();
    blocks_.pop_back();
    ASAN_UNPOISON_MEMORY_REGION(p, sizeof(ServerConnection));
    return p;
  }

  void give(void* p) {
    if (blocks_.size() == kMaxBlocks) {
      ::operator delete(p);
      return;
    }
    ASAN_POISON_MEMORY_REGION(p, sizeof(ServerConnection));
    blocks_.push_back(p);
  }

 private:
  std::vector<void*> blocks_;
};

thread_local BlockCache t_block_cache;
}  // namespace

void* ServerConnection::operator new(size_t size) {
  if (size != sizeof(ServerConnection)) {
    return ::operator new(size);  // (a derived class: not cached)
  }
  return t_block_cache.take();
}

void ServerConnection::operator delete(void* p, size_t size) {
  if (size != sizeof(ServerConnection)) {
    ::operator delete(p);
    return;
  }
  t_block_cache.give(p);
}

ServerConnection::ServerConnection(Worker* worker, size_t listener_index)
    : worker_(worker),
      snapshot_(worker->snapshot()),
      listener_index_(listener_index),
      stream_owner_(std::make_unique<net::Stream>(worker->loop(), this)),
      stream_(*stream_owner_),
      timer_(worker->loop(), this, &ServerConnection::onTimer),
      parser_(this, snapshot_->config->listeners[listener_index].max_header_bytes),
      exchange_(*this) {
  worker_->shared()->open_connections.fetch_add(1, std::memory_order_relaxed);
  listener_slot_ = &snapshot_->metrics.listeners[listener_index][worker->id()];
  listener_slot_->connections_open.add(1);
  listener_slot_->connections_accepted.inc();
}

ServerConnection::~ServerConnection() {
  worker_->memoryBudget().release(*this);
  if (!handed_over_) {
    listener_slot_->connections_open.add(-1);
    worker_->shared()->open_connections.fetch_sub(1, std::memory_order_relaxed);
  }
}

const conf::ListenerConfig& ServerConnection::listener() const {
  return snapshot_->config->listeners[listener_index_];
}

bool ServerConnection::accept(int fd, const sockaddr_storage& peer) {
  worker_->registerConnection(this);
  registered_ = true;
  connection_id_ = worker_->nextConnectionId();
  if (int rc = stream_.open(fd); rc != 0) {
    LOG_WARN("accept: %s", uv_strerror(rc));
    closeNow();
    return false;
  }
  if (!net::addressText(peer, &client_ip_)) {
    client_ip_ = "unknown";
  }
  LOG_DEBUG("c%u.%llu: accepted %s on listener '%s'", worker_->id(),
            static_cast<unsigned long long>(connection_id_), client_ip_.c_str(),
            listener().name.c_str());
  if (listener().proxy_protocol) {
    // Only the load balancers in trusted_proxies may say who the client is.
    std::optional<IpAddress> ip = IpAddress::parse(client_ip_);
    if (!ip || !snapshot_->trusted_proxies[listener_index_].contains(*ip)) {
      listener_slot_->proxy_protocol_rejected[metrics::kProxyUntrusted].inc();
      LOG_DEBUG(
          "c%u.%llu: %s is not in trusted_proxies: closed (this listener expects a PROXY "
          "protocol header)",
          worker_->id(), static_cast<unsigned long long>(connection_id_), client_ip_.c_str());
      closeNow();
      return false;
    }
    proxy_header_ = std::make_unique<net::ProxyProtocolParser>();
    armTimer(TimerMode::kProxyHeader, listener().header_timeout);
    stream_.readStart();
    return true;
  }
  if (!startTransport()) {
    return false;
  }
  stream_.readStart();
  return true;
}

bool ServerConnection::startTransport() {
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
    armTimer(TimerMode::kHeader, firstHeaderTimeout());
  }
  return true;
}

conf::Duration ServerConnection::firstHeaderTimeout() const {
  conf::Duration t = listener().header_timeout;
  return shutdown_ ? std::min<conf::Duration>(t, kFreshConnectionGrace) : t;
}

void ServerConnection::readProxyHeader(const char* data, size_t len) {
  net::ProxyProtocolParser::Result r = proxy_header_->feed(data, len);
  if (r.status == net::ProxyProtocolParser::Status::kNeedMore) {
    return;
  }
  if (r.status == net::ProxyProtocolParser::Status::kError) {
    listener_slot_->proxy_protocol_rejected[metrics::kProxyInvalid].inc();
    LOG_WARN("listener '%s': invalid PROXY protocol header from %s: %s", listener().name.c_str(),
             client_ip_.c_str(), r.error);
    closeNow();
    return;
  }
  const net::ProxyHeader& h = proxy_header_->header();
  std::string source;
  // LOCAL (the balancer's own health check) and headers without addresses keep the peer.
  if (!h.local && net::addressText(h.source, &source)) {
    client_ip_ = std::move(source);
  }
  LOG_DEBUG("c%u.%llu: PROXY v%u header: client %s%s", worker_->id(),
            static_cast<unsigned long long>(connection_id_), static_cast<unsigned>(h.version),
            client_ip_.c_str(), h.local ? " (LOCAL: the balancer itself)" : "");
  proxy_header_.reset();
  if (!startTransport()) {
    return;
  }
  if (r.consumed < len) {
    if (tls_) {
      stream_.tlsReceive(data + r.consumed, len - r.consumed);
    } else {
      parse(data + r.consumed, len - r.consumed);
    }
  }
}

const char* ServerConnection::tlsVersion() const {
  return tls_ && stream_owner_ && stream_.ssl() != nullptr ? SSL_get_version(stream_.ssl()) : "";
}

const char* ServerConnection::tlsCipher() const {
  if (!tls_ || !stream_owner_ || stream_.ssl() == nullptr) {
    return "";
  }
  const char* name = SSL_get_cipher_name(stream_.ssl());
  return name != nullptr ? name : "";
}

void ServerConnection::onTlsHandshake(const char* failure) {
  listener_slot_->tls_handshakes[metrics::tlsResultIndex(failure != nullptr ? failure : "ok")]
      .inc();
  if (failure != nullptr) {
    LOG_DEBUG("c%u.%llu: TLS handshake with %s failed: %s", worker_->id(),
              static_cast<unsigned long long>(connection_id_), client_ip_.c_str(), failure);
    closeNow();
    return;
  }
  if (log::enabled(log::Level::kDebug)) {
    const char* sni = SSL_get_servername(stream_.ssl(), TLSEXT_NAMETYPE_host_name);
    LOG_DEBUG("c%u.%llu: TLS handshake done: %s %s, SNI '%s'", worker_->id(),
              static_cast<unsigned long long>(connection_id_), tlsVersion(), tlsCipher(),
              sni != nullptr ? sni : "");
  }
  if (X509* peer = SSL_get1_peer_certificate(stream_.ssl())) {
    if (SSL_get_verify_result(stream_.ssl()) == X509_V_OK) {
      char subject[512];
      X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
      client_subject_ = subject;
    }
    X509_free(peer);
  }
  armTimer(TimerMode::kHeader, firstHeaderTimeout());
}

std::string ServerConnection::hstsHeader() const {
  if (!tls_ || listener().tls->hsts.empty()) {
    return {};
  }
  return "Strict-Transport-Security: " + listener().tls->hsts + "\r\n";
}

void ServerConnection::armTimer(TimerMode mode, conf::Duration d) {
  timer_mode_ = mode;
  if (mode == TimerMode::kNone || d.count() <= 0) {
    timer_.disarm();
    return;
  }
  timer_.arm(d);
}

void ServerConnection::onTimer(void* self) {
  auto* c = static_cast<ServerConnection*>(self);
  switch (c->timer_mode_) {
    case TimerMode::kProxyHeader:
      c->listener_slot_->proxy_protocol_rejected[metrics::kProxyTimeout].inc();
      LOG_DEBUG("c%u.%llu: no PROXY protocol header within header_timeout: closed",
                c->worker_->id(), static_cast<unsigned long long>(c->connection_id_));
      c->closeNow();
      return;
    case TimerMode::kHeader:
      if (c->state_ == State::kReadingHead && c->saw_request_bytes_) {
        c->answer(408, "request head not received in time");
      } else {
        c->closeNow();  // a connection that never sent a byte gets no answer
      }
      return;
    case TimerMode::kBody:
      c->answer(408, "request body not received in time");
      return;
    case TimerMode::kSend:
      LOG_INFO("client %s not reading the response: closing", c->client_ip_.c_str());
      c->answer(408, "client not reading the response");
      return;
    case TimerMode::kHandshake:
      c->listener_slot_->tls_handshakes[metrics::tlsResultIndex("timeout")].inc();
      c->closeNow();
      return;
    case TimerMode::kIdle:
    case TimerMode::kLinger:
    case TimerMode::kNone:
      c->closeNow();
      return;
  }
}

void ServerConnection::answer(uint16_t status, const char* detail) {
  if (exchange_.active()) {
    exchange_.respondLocal(status, detail, true);
  } else if (!closing()) {
    sendLocalReply(status, detail, true, {});
  }
}

// ---- reading and parsing -------------------------------------------------------------------

void ServerConnection::onData(const char* data, size_t len) {
  if (closing()) {
    return;  // lingering close: discard what the client still sends
  }
  if (proxy_header_) {
    readProxyHeader(data, len);
    return;
  }
  if (parser_paused_) {
    // A request is in flight; keep the next ones (pipelining) but bounded.
    pending_input_.append(data, len);
    if (pending_input_.size() > kMaxPendingInput) {
      setReadDisabled(kPipelineFull, true);
    }
    return;
  }
  parse(data, len);
}

void ServerConnection::parse(const char* data, size_t len) {
  if (state_ == State::kReadingHead) {
    saw_request_bytes_ = true;
    if (timer_mode_ == TimerMode::kIdle) {
      armTimer(TimerMode::kHeader, listener().header_timeout);
    }
  }
  in_parse_ = true;
  RequestParser::Result r = parser_.execute(data, len);
  in_parse_ = false;
  if (closing()) {
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
      if (done_pending_) {
        done_pending_ = false;
        finishExchange();
      }
      return;
    case RequestParser::Status::kError:
      parser_failed_ = true;
      LOG_DEBUG("c%u.%llu: bad request from %s: %u %s", worker_->id(),
                static_cast<unsigned long long>(connection_id_), client_ip_.c_str(),
                static_cast<unsigned>(r.error_status), r.error_reason);
      answer(r.error_status, r.error_reason);
      return;
  }
}

void ServerConnection::processPendingInput() {
  if (pending_input_.empty()) {
    return;
  }
  std::string data = std::move(pending_input_);
  pending_input_.clear();
  parse(data.data(), data.size());
}

void ServerConnection::onMessageBegin() {
  ++requests_begun_;
  adoptCurrentSnapshot();  // each request sees the latest config, also on old connections
  exchange_.begin();
}

RequestParser::HeadAction ServerConnection::onHead() {
  state_ = State::kProxying;
  keep_alive_ = !listener_gone_;
  done_pending_ = false;
  armTimer(TimerMode::kNone, {});
  BodyFraming framing = parser_.chunked() ? BodyFraming{Framing::kChunked}
                        : parser_.hasContentLength()
                            ? BodyFraming{Framing::kContentLength, parser_.contentLength()}
                            : BodyFraming{};
  RequestHead& head = parser_.mutableHead();
  switch (exchange_.onRequestHead(head, framing, head.minor >= 1)) {
    case Exchange::HeadAction::kContinue:
      return closing() ? RequestParser::HeadAction::kStop : RequestParser::HeadAction::kContinue;
    case Exchange::HeadAction::kPause:
      return RequestParser::HeadAction::kPause;
    case Exchange::HeadAction::kStop:
      break;
  }
  return RequestParser::HeadAction::kStop;
}

bool ServerConnection::onBody(const char* data, size_t len) {
  if (timer_mode_ == TimerMode::kBody) {
    armTimer(TimerMode::kBody, idleTimeout());  // the gap allowed starts again
  }
  return exchange_.onRequestBody(data, len) && !closing();
}

void ServerConnection::onMessageComplete() {
  if (timer_mode_ == TimerMode::kBody) {
    armTimer(TimerMode::kNone, {});
  }
  exchange_.onRequestComplete();
}

void ServerConnection::expectBody() {
  armTimer(TimerMode::kBody, idleTimeout());
}

void ServerConnection::resumeRequest() {
  // The parser stopped after the head; let it read the body (or the next request) now.
  parser_paused_ = false;
  parser_.resume();
  setReadDisabled(0, false);
  if (pending_input_.empty()) {
    parse("", 0);  // lets the parser finish a request without a body
  } else {
    processPendingInput();
  }
}

void ServerConnection::setReadDisabled(uint8_t reason, bool disable) {
  read_disabled_ = disable ? (read_disabled_ | reason) : (read_disabled_ & ~reason);
  if (read_disabled_ != 0) {
    stream_.readStop();
  } else if (!client_eof_ && !closing()) {
    stream_.readStart();
  }
}

void ServerConnection::readDisable(ReadReason reason, bool disable) {
  if (reason == kUpstreamFull) {
    if (disable) {
      timer_.disarm();  // the client is not the one being slow now
    } else if (state_ != State::kProxying || exchange_.requestComplete() || closing()) {
      return;
    } else if (timer_mode_ == TimerMode::kBody) {
      armTimer(TimerMode::kBody, idleTimeout());  // reading again: the gap starts now
    }
  }
  setReadDisabled(reason, disable);
}

void ServerConnection::awaitClientDrain() {
  armTimer(TimerMode::kSend, idleTimeout());
}

void ServerConnection::onWritable() {
  if (timer_mode_ == TimerMode::kSend) {
    if (exchange_.requestComplete()) {
      armTimer(TimerMode::kNone, {});
    } else {
      armTimer(TimerMode::kBody, idleTimeout());
    }
  }
  exchange_.onDownstreamWritable();
}

// ---- the response --------------------------------------------------------------------------

void ServerConnection::sendInformational(const ResponseHead& head) {
  head_buffer_.clear();
  writeDownstreamResponse(head, {}, true, {}, &head_buffer_);
  stream_.write(head_buffer_);
}

void ServerConnection::sendHead(const ResponseHead& head, BodyFraming framing,
                                std::string_view extra_headers, bool close_after) {
  if (framing.kind == Framing::kChunked || framing.kind == Framing::kClose) {
    // Re-chunked for HTTP/1.1 clients; an HTTP/1.0 client reads until the close.
    framing.kind = parser_.head().minor >= 1 ? Framing::kChunked : Framing::kClose;
  }
  response_framing_ = framing.kind;
  served_ = true;
  keep_alive_ = keep_alive_ && !close_after && clientWantsKeepAlive() && !shutdown_ &&
                !client_eof_ && framing.kind != Framing::kClose && !worker_->shuttingDown() &&
                !worker_->shared()->stopping.load(std::memory_order_relaxed);
  // Copied only when HSTS adds to it: most responses pass the exchange's lines as they are.
  std::string with_hsts;
  std::string_view extra = extra_headers;
  if (std::string hsts = hstsHeader(); !hsts.empty()) {
    with_hsts.reserve(extra_headers.size() + hsts.size());
    with_hsts.append(extra_headers).append(hsts);
    extra = with_hsts;
  }
  head_buffer_.clear();
  writeDownstreamResponse(head, framing, keep_alive_, extra, &head_buffer_);
  stream_.write(head_buffer_);
}

void ServerConnection::sendBody(const char* data, size_t len) {
  if (response_framing_ == Framing::kChunked) {
    writeChunk(stream_, data, len);
  } else {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    stream_.write(&b, 1);
  }
}

void ServerConnection::endBody() {
  if (response_framing_ == Framing::kChunked) {
    stream_.write(kLastChunk);
  }
}

void ServerConnection::send100Continue() {
  stream_.write(kContinue);
}

bool ServerConnection::sendLocalReply(uint16_t status, std::string_view detail, bool close_after,
                                      std::string_view extra_headers) {
  served_ = true;
  keep_alive_ = keep_alive_ && !close_after && !parser_failed_ && clientWantsKeepAlive() &&
                !shutdown_ && !worker_->shuttingDown() &&
                !worker_->shared()->stopping.load(std::memory_order_relaxed);
  std::string extra(extra_headers);
  extra += hstsHeader();
  head_buffer_.clear();
  writeLocalResponse(status, detail, keep_alive_, extra, parser_.head().method == "HEAD",
                     &head_buffer_);
  stream_.write(head_buffer_);
  if (!keep_alive_) {
    closeSoon();
    return false;
  }
  return true;
}

void ServerConnection::heldBytesChanged(size_t bytes) {
  worker_->memoryBudget().update(*this, bytes);
}

void ServerConnection::shed() {
  LOG_WARN("downstream %s: the worker holds more than server.max_held_bytes: closing",
           client_ip_.c_str());
  if (exchange_.active() && !exchange_.responseStarted()) {
    exchange_.respondLocal(503, "sluice is short of memory", true);
  } else {
    closeNow();
  }
}

void ServerConnection::abandonRequest() {
  keep_alive_ = false;
  closeSoon();
}

// ---- between requests ----------------------------------------------------------------------

void ServerConnection::exchangeDone() {
  if (in_parse_) {
    done_pending_ = true;  // finished once the parser has returned
    return;
  }
  finishExchange();
}

void ServerConnection::finishExchange() {
  // A client that half-closed after pipelining still gets answers to what it sent.
  if (!keep_alive_ || shutdown_ || worker_->shuttingDown() ||
      (client_eof_ && pending_input_.empty())) {
    closeSoon();
    return;
  }
  state_ = State::kReadingHead;
  saw_request_bytes_ = false;
  exchange_.reset();
  armTimer(TimerMode::kIdle, listener().idle_timeout);
  if (parser_paused_) {
    parser_paused_ = false;
    parser_.resume();
  }
  read_disabled_ = 0;
  setReadDisabled(0, false);
  processPendingInput();
  if (client_eof_ && state_ == State::kReadingHead && !closing_) {
    closeNow();  // the client's last bytes were an incomplete request
  }
}

void ServerConnection::shutdownGracefully() {
  shutdown_ = true;
  if (state_ == State::kReadingHead && !saw_request_bytes_ && pending_input_.empty()) {
    if (!served_ && (timer_mode_ == TimerMode::kHeader || timer_mode_ == TimerMode::kProxyHeader)) {
      // Accepted but silent so far: its first request is likely on the way (closing now would
      // fail it). It is answered, with Connection: close, if it comes soon.
      armTimer(timer_mode_,
               std::min<conf::Duration>(listener().header_timeout, kFreshConnectionGrace));
      return;
    }
    if (timer_mode_ == TimerMode::kHandshake) {
      return;  // the handshake timeout bounds it; then the same as above
    }
    closeNow();
  }
}

void ServerConnection::adoptCurrentSnapshot() {
  const SnapshotPtr& next = worker_->snapshot();
  if (next == snapshot_) {
    return;
  }
  const conf::ListenerConfig& mine = listener();
  const auto& listeners = next->config->listeners;
  for (size_t i = 0; i < listeners.size(); ++i) {
    if (listeners[i].name == mine.name && listeners[i].listen.text == mine.listen.text) {
      exchange_.reset();  // the last request's filters go before the snapshot that made them
      snapshot_ = next;
      listener_index_ = i;
      parser_.setMaxHeaderBytes(listeners[i].max_header_bytes);
      return;
    }
  }
  listener_gone_ = true;  // the listener was removed: this connection ends after its request
}

std::unique_ptr<net::Stream> ServerConnection::takeOver(std::string* early_input) {
  // The stream and the counters that last as long as it does go to the WebSocket session; this
  // object leaves the worker once its timer has closed (after the session has registered).
  *early_input = std::move(pending_input_);
  handed_over_ = true;
  state_ = State::kUpgraded;
  closing_ = true;
  std::unique_ptr<net::Stream> stream = std::move(stream_owner_);
  (void)handles_.closed();  // the stream is the session's now (the timer is still open)
  timer_.close(&ServerConnection::onTimerClosed);
  return stream;
}

// ---- closing -------------------------------------------------------------------------------

void ServerConnection::abort() {
  closeNow();
}

void ServerConnection::closeSoon() {
  if (closing()) {
    return;
  }
  state_ = State::kClosing;
  exchange_.abort("connection closing");
  // Lingering close: send FIN after the queued response, then read and discard until the client
  // closes (or a short timeout), so that unread request bytes do not turn into an RST that
  // destroys the response on the client's side.
  stream_.shutdown();
  stream_.readStart();
  armTimer(TimerMode::kLinger, kLingerTimeout);
}

void ServerConnection::closeNow() {
  if (closing_) {
    return;
  }
  closing_ = true;
  LOG_DEBUG("c%u.%llu: closed", worker_->id(), static_cast<unsigned long long>(connection_id_));
  exchange_.abort(client_eof_ ? "client closed the connection" : "connection closed");
  exchange_.reset();
  if (registered_) {
    worker_->unregisterConnection(this);
    registered_ = false;
  }
  stream_.close();
  timer_.close(&ServerConnection::onTimerClosed);
}

void ServerConnection::onTimerClosed(void* self) {
  static_cast<ServerConnection*>(self)->handleClosed();
}

void ServerConnection::onClosed() {
  if (!closing_) {
    closeNow();  // closed after a flush: release the rest
  }
  handleClosed();
}

void ServerConnection::handleClosed() {
  if (!handles_.closed()) {
    return;
  }
  if (registered_) {
    worker_->unregisterConnection(this);  // handed over: the session is registered by now
  }
  delete this;
}

void ServerConnection::onEof() {
  client_eof_ = true;
  if (closing() || state_ == State::kReadingHead || !exchange_.requestComplete()) {
    // Nothing in flight, or the client gave up in the middle of its own request.
    closeNow();
  }
  // Otherwise the request is complete: finish sending the response, then close.
}

void ServerConnection::onError(int status) {
  LOG_DEBUG("c%u.%llu: %s: %s", worker_->id(), static_cast<unsigned long long>(connection_id_),
            client_ip_.c_str(), uv_strerror(status));
  closeNow();
}

}  // namespace sluice::http
