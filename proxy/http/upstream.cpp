#include "proxy/http/connection.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace sluice::http {

namespace {
UpstreamConnection* self(llhttp_t* p) {
  return static_cast<UpstreamConnection*>(p->data);
}
}  // namespace

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
      slot_(slot),
      state_(state) {
  slot_->connections_open.add(1);
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
}

UpstreamConnection::~UpstreamConnection() {
  if (!handed_over_) {
    setInUse(false);
    slot_->connections_open.add(-1);
  }
}

std::unique_ptr<net::Stream> UpstreamConnection::handOver() {
  handed_over_ = true;  // the session now counts this connection and owns its stream
  down_ = nullptr;
  closing_ = true;
  stream_closed_ = true;
  timer_.close(&UpstreamConnection::onTimerClosed);
  return std::move(stream_owner_);
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

const llhttp_settings_t& UpstreamConnection::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = &UpstreamConnection::cbMessageBegin;
    st.on_status = &UpstreamConnection::cbStatus;
    st.on_header_field = &UpstreamConnection::cbHeaderField;
    st.on_header_value = &UpstreamConnection::cbHeaderValue;
    st.on_headers_complete = &UpstreamConnection::cbHeadersComplete;
    st.on_body = &UpstreamConnection::cbBody;
    st.on_message_complete = &UpstreamConnection::cbMessageComplete;
    return st;
  }();
  return s;
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
  if (request_sent_) {
    requestSent();
  }
}

bool UpstreamConnection::connect(const sockaddr* addr, conf::Duration timeout) {
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
  stream_.readStart();
  if (request_sent_) {
    requestSent();  // the whole request was queued before the connection was up
  }
}

void UpstreamConnection::attach(DownstreamConnection* down, conf::Duration response_timeout,
                                bool head_request, bool upgrade) {
  upgrade_ = upgrade;
  if (idle_) {
    idle_ = false;
    timer_.disarm();
  }
  down_ = down;
  setInUse(true);
  response_timeout_ = response_timeout;
  head_request_ = head_request;
  message_done_ = false;
  request_sent_ = false;
  keep_alive_ = false;
  response_bytes_ = 0;
  bad_response_ = nullptr;
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
  response_.clear();
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

void UpstreamConnection::release(bool reusable, uint32_t max_idle, conf::Duration idle_timeout) {
  down_ = nullptr;
  setInUse(false);
  // A draining or failing backend keeps no idle connections: they close after their request.
  bool backend_ok = state_ == nullptr || state_->available(upstream::steadyNowMs());
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
  worker_->putIdleUpstream(this, max_idle);
}

void UpstreamConnection::close() {
  if (closing_) {
    return;
  }
  closing_ = true;
  if (idle_) {
    worker_->removeIdleUpstream(this);
    idle_ = false;
  }
  down_ = nullptr;
  setInUse(false);
  stream_.close();
  timer_.close(&UpstreamConnection::onTimerClosed);
}

void UpstreamConnection::onTimerClosed(void* self) {
  auto* u = static_cast<UpstreamConnection*>(self);
  u->timer_closed_ = true;
  u->maybeDelete();
}

void UpstreamConnection::onClosed() {
  stream_closed_ = true;
  if (!closing_) {
    // The stream closed on its own: the timer still has to go.
    closing_ = true;
    timer_.close(&UpstreamConnection::onTimerClosed);
  }
  maybeDelete();
}

void UpstreamConnection::maybeDelete() {
  if (timer_closed_ && stream_closed_) {
    delete this;
  }
}

void UpstreamConnection::fail(UpstreamError error, int status) {
  DownstreamConnection* d = down_;
  close();
  if (d != nullptr) {
    d->onUpstreamError(error, status);
  }
}

void UpstreamConnection::onTimer(void* self) {
  auto* u = static_cast<UpstreamConnection*>(self);
  if (u->idle_ || u->down_ == nullptr) {
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
  if (idle_ || down_ == nullptr || message_done_) {
    // Bytes nobody asked for: the connection is no longer in a known state.
    close();
    return;
  }
  response_bytes_ += len;
  if (timer_.armed()) {
    armResponseTimeout();  // the gap allowed starts again
  }
  // The response head and the body in this read leave toward the client in one write.
  DownstreamConnection* d = down_;
  d->stream().cork();
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  d->stream().uncork();
  if (closing_) {
    return;
  }
  if (upgraded_ && (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)) {
    // Switched protocols: what follows the 101 head is already WebSocket data, for the session
    // that takes over (and retires this object).
    const char* pos = llhttp_get_error_pos(&parser_);
    size_t used = pos != nullptr ? static_cast<size_t>(pos - data) : len;
    d->startWebSocket(std::string_view(data + used, len - used));
    return;
  }
  if (err == HPE_PAUSED) {
    // The response ended; anything after it is unsolicited, so the connection is not reusable.
    if (llhttp_get_error_pos(&parser_) != data + len) {
      keep_alive_ = false;
    }
    DownstreamConnection* d = down_;
    if (d != nullptr) {
      d->onUpstreamComplete();
    }
    return;
  }
  if (err != HPE_OK) {
    const char* reason =
        bad_response_ != nullptr ? bad_response_ : llhttp_get_error_reason(&parser_);
    LOG_WARN("upstream %s: bad response: %s (%s)", address_.c_str(), llhttp_errno_name(err),
             reason != nullptr ? reason : "");
    bool head_done = response_.status != 0 && bad_response_ == nullptr;
    fail(head_done ? UpstreamError::kTruncated : UpstreamError::kBadResponse, 0);
    return;
  }
  if (down_ != nullptr && down_->stream().aboveHighWatermark()) {
    pauseReading();
  }
}

void UpstreamConnection::pauseReading() {
  stream_.readStop();
  timer_.disarm();
  if (down_ != nullptr) {
    down_->awaitClientDrain();
  }
}

void UpstreamConnection::resumeReading() {
  stream_.readStart();
  if (request_sent_ && !message_done_ && !upgraded_) {
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
  if (idle_ || down_ == nullptr) {
    close();
    return;
  }
  if (response_bytes_ > 0 && llhttp_message_needs_eof(&parser_) != 0) {
    message_done_ = false;
    llhttp_errno_t err = llhttp_finish(&parser_);
    if (err == HPE_OK || err == HPE_PAUSED) {
      keep_alive_ = false;
      DownstreamConnection* d = down_;
      if (d != nullptr && message_done_) {
        d->onUpstreamComplete();
      }
      close();
      return;
    }
  }
  fail(response_bytes_ == 0 ? UpstreamError::kResetBeforeResponse : UpstreamError::kTruncated,
       UV_EOF);
}

void UpstreamConnection::onError(int status) {
  if (idle_ || down_ == nullptr) {
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
  if (down_ != nullptr) {
    down_->onUpstreamWritable();
  }
}

int UpstreamConnection::cbMessageBegin(llhttp_t* p) {
  UpstreamConnection* u = self(p);
  u->response_.clear();
  u->last_was_value_ = false;
  return 0;
}

int UpstreamConnection::cbStatus(llhttp_t* p, const char* at, size_t len) {
  self(p)->response_.reason.append(at, len);
  return 0;
}

int UpstreamConnection::cbHeaderField(llhttp_t* p, const char* at, size_t len) {
  UpstreamConnection* u = self(p);
  if (u->last_was_value_ || u->response_.headers.empty()) {
    u->response_.headers.emplace_back();
    u->last_was_value_ = false;
  }
  u->response_.headers.back().name.append(at, len);
  return 0;
}

int UpstreamConnection::cbHeaderValue(llhttp_t* p, const char* at, size_t len) {
  UpstreamConnection* u = self(p);
  u->last_was_value_ = true;
  if (!u->response_.headers.empty()) {
    u->response_.headers.back().value.append(at, len);
  }
  return 0;
}

int UpstreamConnection::cbHeadersComplete(llhttp_t* p) {
  UpstreamConnection* u = self(p);
  ResponseHead& r = u->response_;
  r.status = static_cast<uint16_t>(llhttp_get_status_code(p));
  r.major = llhttp_get_http_major(p);
  r.minor = llhttp_get_http_minor(p);
  if (u->down_ == nullptr) {
    return -1;
  }
  if (r.status == 101) {
    // Only an upgrade request may be answered with 101, and only with a valid handshake.
    if (!u->upgrade_ || !u->down_->onUpstreamUpgrade(r)) {
      return -1;
    }
    u->upgraded_ = true;
    u->timer_.disarm();
    return 0;
  }
  if (r.status >= 100 && r.status < 200) {
    u->down_->onUpstreamInformational(r);
    return 0;
  }
  // sluice decides the framing here and writes it itself toward the client.
  BodyFraming framing;
  if (u->head_request_ || r.status == 204 || r.status == 304) {
    framing.kind = Framing::kNone;
  } else if ((p->flags & F_TRANSFER_ENCODING) != 0) {
    // As nginx does: no transfer coding but chunked alone, which sluice re-frames (another
    // coding would reach the client undeclared, or make the body close-delimited).
    if ((p->flags & F_CHUNKED) == 0 || !onlyChunked(r.headers)) {
      u->bad_response_ = "unsupported Transfer-Encoding";
      return -1;
    }
    framing.kind = Framing::kChunked;
  } else if ((p->flags & F_CONTENT_LENGTH) != 0) {
    framing = {Framing::kContentLength, p->content_length};
  } else {
    framing.kind = Framing::kClose;
  }
  return u->down_->onUpstreamResponseHead(r, framing) ? 1 : 0;
}

int UpstreamConnection::cbBody(llhttp_t* p, const char* at, size_t len) {
  UpstreamConnection* u = self(p);
  if (u->down_ != nullptr) {
    u->down_->onUpstreamBody(at, len);
  }
  return 0;
}

int UpstreamConnection::cbMessageComplete(llhttp_t* p) {
  UpstreamConnection* u = self(p);
  if (u->upgraded_) {
    return HPE_PAUSED;
  }
  if (u->response_.status >= 100 && u->response_.status < 200) {
    return 0;  // an informational response; the final one follows
  }
  u->message_done_ = true;
  u->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  u->timer_.disarm();
  return HPE_PAUSED;
}

}  // namespace sluice::http
