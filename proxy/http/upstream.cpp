#include "proxy/http/upstream.h"

#include "proxy/log.h"
#include "proxy/worker.h"

namespace sluice::http {

UpstreamConnection::UpstreamConnection(Worker* worker, std::string key, std::string address,
                                       size_t pool, metrics::BackendSlot* slot,
                                       upstream::BackendState* state)
    : worker_(worker),
      key_(std::move(key)),
      address_(std::move(address)),
      pool_(pool),
      stream_owner_(std::make_unique<net::Stream>(worker->loop(), this)),
      stream_(*stream_owner_),
      timer_(worker->loop(), this, &UpstreamConnection::onTimer),
      parser_(this),
      slot_(slot),
      state_(state) {
  slot_->connections_open.add(1);
}

UpstreamConnection::~UpstreamConnection() {
  if (!handed_over_) {
    setInUse(false);
    slot_->connections_open.add(-1);
  }
}

std::unique_ptr<net::Stream> UpstreamConnection::handOver() {
  handed_over_ = true;  // the session now counts this connection and owns its stream
  exchange_ = nullptr;
  closing_ = true;
  std::unique_ptr<net::Stream> stream = std::move(stream_owner_);
  (void)handles_.closed();  // the stream is the session's now (the timer is still open)
  timer_.close(&UpstreamConnection::onTimerClosed);
  return stream;
}

void UpstreamConnection::setInUse(bool in_use) {
  if (in_use == in_use_) {
    return;
  }
  in_use_ = in_use;
  if (state_ != nullptr) {
    state_->active.fetch_add(in_use ? 1 : -1, std::memory_order_relaxed);
  }
}

void UpstreamConnection::startTls(std::shared_ptr<const net::ClientTls> tls,
                                  const std::string& host) {
  SSL* ssl = tls->newSession(host);
  if (ssl == nullptr) {
    return;
  }
  tls_ = std::move(tls);
  stream_.startTls(ssl);
}

void UpstreamConnection::onTlsHandshake(const char* failure) {
  if (failure != nullptr) {
    LOG_WARN("upstream %s: TLS handshake failed: %s", address_.c_str(), failure);
    fail(UpstreamError::kConnectFailed, UV_EPROTO);
    return;
  }
  // connect_timeout covered the handshake too; from here on the request's own timers apply.
  timer_.disarm();
  connect_ms_ = static_cast<double>(uv_hrtime() - connect_start_) / 1e6;
  if (request_sent_) {
    requestSent();
  }
}

bool UpstreamConnection::connect(const sockaddr* addr, conf::Duration timeout) {
  connect_start_ = uv_hrtime();
  int rc = stream_.connect(addr);
  if (rc != 0) {
    LOG_WARN("upstream %s: connect: %s", address_.c_str(), uv_strerror(rc));
    return false;
  }
  timer_.arm(timeout);
  return true;
}

void UpstreamConnection::onConnected(int status) {
  if (tls_ == nullptr) {
    timer_.disarm();  // with TLS, connect_timeout runs on until the handshake is done
  }
  if (status < 0) {
    LOG_WARN("upstream %s: connect failed: %s", address_.c_str(), uv_strerror(status));
    fail(UpstreamError::kConnectFailed, status);
    return;
  }
  connected_ = true;
  if (tls_ == nullptr) {
    connect_ms_ = static_cast<double>(uv_hrtime() - connect_start_) / 1e6;
  }
  stream_.readStart();
  if (request_sent_) {
    requestSent();  // the whole request was queued before the connection was up
  }
}

void UpstreamConnection::attach(UpstreamCallbacks* exchange, conf::Duration response_timeout,
                                bool head_request, bool upgrade) {
  upgrade_ = upgrade;
  reused_ = attached_before_;
  attached_before_ = true;
  if (idle_) {
    idle_ = false;
    timer_.disarm();
  }
  exchange_ = exchange;
  setInUse(true);
  response_timeout_ = response_timeout;
  message_done_ = false;
  request_sent_ = false;
  keep_alive_ = false;
  response_bytes_ = 0;
  parser_.reset(head_request, upgrade);
  if (connected_) {
    stream_.readStart();
  }
}

void UpstreamConnection::requestSent() {
  request_sent_ = true;
  if (connected_ && stream_.tlsReady() && !message_done_) {
    armResponseTimeout();
  }
}

void UpstreamConnection::armResponseTimeout() {
  if (response_timeout_.count() > 0) {
    timer_.arm(response_timeout_);
  }
}

bool UpstreamConnection::backendAvailable(uint64_t now_ms) const {
  return state_ == nullptr || state_->available(now_ms);
}

void UpstreamConnection::release(bool reusable, uint32_t max_idle, conf::Duration idle_timeout) {
  exchange_ = nullptr;
  setInUse(false);
  // A draining or failing backend keeps no idle connections: they close after their request.
  bool backend_ok = backendAvailable(upstream::steadyNowMs());
  // A connection in doubt is never reused: the response is not known to be complete and alone
  // (bytes after it, no keep-alive), or part of the request is still queued here (the backend
  // answered before reading it all, so what it reads next is not known).
  bool in_doubt = !message_done_ || !keep_alive_ || stream_.queuedBytes() != 0;
  if (!reusable || closing_ || in_doubt || max_idle == 0 || upgrade_ || !backend_ok ||
      worker_->shuttingDown()) {
    close();
    return;
  }
  idle_ = true;
  // Keep reading: a backend that closes an idle connection frees it at once.
  stream_.readStart();
  timer_.arm(idle_timeout);
  worker_->keepalivePool().put(this, max_idle);
}

void UpstreamConnection::closeIdle() {
  idle_ = false;  // the pool has let go of it already
  close();
}

void UpstreamConnection::close() {
  if (closing_) {
    return;
  }
  closing_ = true;
  if (idle_) {
    worker_->keepalivePool().remove(this);
    idle_ = false;
  }
  exchange_ = nullptr;
  setInUse(false);
  stream_.close();
  timer_.close(&UpstreamConnection::onTimerClosed);
}

void UpstreamConnection::onTimerClosed(void* self) {
  static_cast<UpstreamConnection*>(self)->handleClosed();
}

void UpstreamConnection::onClosed() {
  if (!closing_) {
    // The stream closed on its own: the timer still has to go.
    closing_ = true;
    timer_.close(&UpstreamConnection::onTimerClosed);
  }
  handleClosed();
}

void UpstreamConnection::handleClosed() {
  if (handles_.closed()) {
    delete this;
  }
}

void UpstreamConnection::fail(UpstreamError error, int status) {
  UpstreamCallbacks* e = exchange_;
  close();
  if (e != nullptr) {
    e->onUpstreamError(error, status);
  }
}

void UpstreamConnection::onTimer(void* self) {
  auto* u = static_cast<UpstreamConnection*>(self);
  if (u->idle_ || u->exchange_ == nullptr) {
    u->close();
  } else if (!u->connected_ || !u->stream_.tlsReady()) {
    LOG_WARN("upstream %s: connect%s timed out", u->address_.c_str(),
             u->connected_ ? " (TLS handshake)" : "");
    u->fail(UpstreamError::kConnectFailed, UV_ETIMEDOUT);
  } else {
    LOG_WARN("upstream %s: %s timed out", u->address_.c_str(),
             u->request_sent_ ? "response" : "sending the request body");
    u->fail(UpstreamError::kTimeout, UV_ETIMEDOUT);
  }
}

void UpstreamConnection::onData(const char* data, size_t len) {
  if (idle_ || exchange_ == nullptr || message_done_) {
    // Bytes nobody asked for: the connection is no longer in a known state.
    close();
    return;
  }
  response_bytes_ += len;
  if (timer_.armed()) {
    armResponseTimeout();  // the gap allowed starts again
  }
  // The response head and the body in this read leave toward the client in one write.
  UpstreamCallbacks* e = exchange_;
  net::Transport& down = e->downstreamTransport();
  down.cork();
  ResponseParser::Result r = parser_.execute(data, len);
  down.uncork();
  if (closing_) {
    return;
  }
  switch (r.status) {
    case ResponseParser::Status::kNeedMore:
      if (exchange_ != nullptr && down.aboveHighWatermark()) {
        pauseReading();
      }
      return;
    case ResponseParser::Status::kUpgraded:
      // Switched protocols: what follows the 101 head is already WebSocket data, for the
      // session that takes over (and retires this object).
      e->onUpstreamUpgraded(std::string_view(data + r.consumed, len - r.consumed));
      return;
    case ResponseParser::Status::kComplete:
      message_done_ = true;
      timer_.disarm();
      // Anything after the response is unsolicited: the connection is not reusable.
      keep_alive_ = parser_.keepAlive() && r.consumed == len;
      if (exchange_ != nullptr) {
        exchange_->onUpstreamComplete();
      }
      return;
    case ResponseParser::Status::kStopped:
      return;  // the exchange is done with this response (it released the connection)
    case ResponseParser::Status::kError:
      break;
  }
  LOG_WARN("upstream %s: bad response: %s", address_.c_str(), r.reason);
  bool head_done = parser_.headDone();
  fail(head_done ? UpstreamError::kTruncated : UpstreamError::kBadResponse, 0);
}

void UpstreamConnection::onInformational(const ResponseHead& head) {
  exchange_->onUpstreamInformational(head);
}

bool UpstreamConnection::onUpgrade(const ResponseHead& head) {
  if (!exchange_->onUpstreamUpgrade(head)) {
    return false;
  }
  timer_.disarm();
  return true;
}

bool UpstreamConnection::onHead(const ResponseHead& head, BodyFraming framing) {
  return exchange_->onUpstreamHead(head, framing);
}

void UpstreamConnection::onBody(const char* data, size_t len) {
  if (exchange_ != nullptr) {
    exchange_->onUpstreamBody(data, len);
  }
}

void UpstreamConnection::pauseReading() {
  stream_.readStop();
  timer_.disarm();
  if (exchange_ != nullptr) {
    exchange_->onUpstreamHeldBack();
  }
}

void UpstreamConnection::resumeReading() {
  stream_.readStart();
  if (request_sent_ && !message_done_ && !upgrade_) {
    armResponseTimeout();
  }
}

void UpstreamConnection::awaitDrain() {
  // While connecting, connect_timeout runs; the body waits in the queue meanwhile.
  if (connected_ && stream_.tlsReady()) {
    armResponseTimeout();
  }
}

void UpstreamConnection::onEof() {
  if (idle_ || exchange_ == nullptr) {
    close();
    return;
  }
  if (response_bytes_ > 0) {
    ResponseParser::Result r = parser_.finish();
    if (r.status == ResponseParser::Status::kComplete) {
      message_done_ = true;
      keep_alive_ = false;
      UpstreamCallbacks* e = exchange_;
      e->onUpstreamComplete();
      close();
      return;
    }
  }
  fail(response_bytes_ == 0 ? UpstreamError::kResetBeforeResponse : UpstreamError::kTruncated,
       UV_EOF);
}

void UpstreamConnection::onError(int status) {
  if (idle_ || exchange_ == nullptr) {
    close();
    return;
  }
  if (!connected_) {
    fail(UpstreamError::kConnectFailed, status);
  } else {
    fail(response_bytes_ == 0 ? UpstreamError::kResetBeforeResponse : UpstreamError::kTruncated,
         status);
  }
}

void UpstreamConnection::onWritable() {
  if (!request_sent_ && connected_ && stream_.tlsReady()) {
    timer_.disarm();  // the backend took the request body it was holding up (see awaitDrain)
  }
  if (exchange_ != nullptr) {
    exchange_->onUpstreamWritable();
  }
}

}  // namespace sluice::http
