#include "proxy/net/stream.h"

#include <openssl/err.h>

#include "proxy/net/tls.h"

#include <cstring>
#include <memory>

#include <arpa/inet.h>
#include <netinet/in.h>

namespace sluice::net {

namespace {
constexpr size_t kReadBufferSize = size_t{64} * 1024;
// Kept for reuse per stream: one request whose buffer is small. A burst's large buffers are
// freed, so that an idle connection costs little.
constexpr size_t kMaxFreeReqs = 1;
constexpr size_t kMaxKeptCapacity = size_t{16} * 1024;
}  // namespace

char* threadReadBuffer(size_t* size) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  *size = kReadBufferSize;
  return buffer.get();
}

Stream::Stream(uv_loop_t* loop, Handler* handler) : handler_(handler) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
}

Stream::~Stream() {
  for (WriteReq* r : free_reqs_) {
    delete r;
  }
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
}

namespace {
// Per thread, like the read buffer: plaintext out of TLS (handed to handlers, which may write
// while they still read it), and ciphertext on its way to a socket (copied by writeNow before
// it returns). Two buffers, so that the second never overwrites the first.
char* tlsPlainBuffer(size_t* size) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  *size = kReadBufferSize;
  return buffer.get();
}
char* tlsCipherBuffer(size_t* size) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  *size = kReadBufferSize;
  return buffer.get();
}
}  // namespace

void Stream::startTls(SSL* ssl) {
  ssl_ = ssl;
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  // An empty memory BIO reads as "retry later", not as EOF.
  BIO_set_mem_eof_return(rbio_, -1);
  BIO_set_mem_eof_return(wbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);
}

void Stream::flushTls() {
  size_t size;
  char* buf = tlsCipherBuffer(&size);
  while (BIO_pending(wbio_) > 0 && state_ == State::kOpen) {
    int n = BIO_read(wbio_, buf, static_cast<int>(size));
    if (n <= 0) {
      break;
    }
    uv_buf_t b = uv_buf_init(buf, static_cast<unsigned>(n));
    writeNow(&b, 1);  // copies what the socket does not take at once
  }
}

void Stream::tlsFailed(const char* reason) {
  tls_failed_ = true;
  flushTls();  // the alert, if OpenSSL wrote one
  handler_->onTlsHandshake(reason);
}

void Stream::tlsInput(const char* data, size_t len) {
  if (len > 0) {
    BIO_write(rbio_, data, static_cast<int>(len));
  }
  if (!handshake_done_) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      int e = SSL_get_error(ssl_, rc);
      flushTls();
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        tlsFailed(tlsFailureReason(ssl_, ERR_peek_error()));
      }
      return;
    }
    flushTls();
    handshake_done_ = true;
    handler_->onTlsHandshake(nullptr);
    if (state_ != State::kOpen) {
      return;
    }
    if (!tls_pending_.empty()) {
      std::string pending = std::move(tls_pending_);
      std::string().swap(tls_pending_);  // frees it (assigning "" would not)
      uv_buf_t b = uv_buf_init(pending.data(), static_cast<unsigned>(pending.size()));
      sendPlain(&b, 1);
    }
  }
  // Everything this read decrypts is delivered, even if the handler stops reading meanwhile:
  // like a plain read, it is bounded by one read buffer.
  size_t size;
  char* out = tlsPlainBuffer(&size);
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(ssl_, out, static_cast<int>(size));
    if (n > 0) {
      handler_->onData(out, static_cast<size_t>(n));
      if (state_ != State::kOpen) {
        return;
      }
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    flushTls();  // SSL_read may answer (key updates, session tickets)
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      return;
    }
    readStop();
    tls_failed_ = e != SSL_ERROR_ZERO_RETURN;
    if (e == SSL_ERROR_ZERO_RETURN) {
      handler_->onEof();  // the peer's close_notify
    } else {
      handler_->onError(UV_EPROTO);
    }
    return;
  }
}

void Stream::sendPlain(const uv_buf_t* bufs, unsigned count) {
  if (ssl_ == nullptr) {
    writeNow(bufs, count);
    return;
  }
  if (!handshake_done_) {
    for (unsigned i = 0; i < count; ++i) {
      tls_pending_.append(bufs[i].base, bufs[i].len);
    }
    return;
  }
  for (unsigned i = 0; i < count; ++i) {
    if (bufs[i].len == 0) {
      continue;
    }
    ERR_clear_error();
    // A memory BIO takes everything: SSL_write either writes it all or fails for good.
    if (SSL_write(ssl_, bufs[i].base, static_cast<int>(bufs[i].len)) <= 0) {
      break;
    }
  }
  flushTls();
}

int Stream::connect(const sockaddr* addr) {
  auto* req = new uv_connect_t;
  req->data = this;
  uv_tcp_nodelay(&tcp_, 1);
  int rc = uv_tcp_connect(req, &tcp_, addr, &Stream::onConnect);
  if (rc != 0) {
    delete req;
  }
  return rc;
}

void Stream::onConnect(uv_connect_t* req, int status) {
  auto* self = static_cast<Stream*>(req->data);
  delete req;
  if (status == UV_ECANCELED || self->state_ != State::kOpen) {
    return;
  }
  self->handler_->onConnected(status);
  if (status == 0 && self->ssl_ != nullptr && self->state_ == State::kOpen) {
    self->readStart();
    self->tlsInput(nullptr, 0);  // the ClientHello
  }
}

void Stream::readStart() {
  if (reading_ || state_ != State::kOpen) {
    return;
  }
  if (uv_read_start(uvStream(), &Stream::onAlloc, &Stream::onRead) == 0) {
    reading_ = true;
  }
}

void Stream::readStop() {
  if (!reading_) {
    return;
  }
  uv_read_stop(uvStream());
  reading_ = false;
}

void Stream::onAlloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  size_t size;
  char* base = threadReadBuffer(&size);
  *buf = uv_buf_init(base, static_cast<unsigned>(size));
}

void Stream::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Stream*>(s->data);
  if (self->state_ != State::kOpen) {
    return;
  }
  if (nread > 0) {
    if (self->ssl_ != nullptr) {
      self->tlsInput(buf->base, static_cast<size_t>(nread));
    } else {
      self->handler_->onData(buf->base, static_cast<size_t>(nread));
    }
  } else if (nread == UV_EOF) {
    self->readStop();
    if (self->ssl_ != nullptr && !self->handshake_done_) {
      self->tlsFailed("eof");  // the peer left in the middle of the handshake
      return;
    }
    self->handler_->onEof();
  } else if (nread < 0) {
    self->readStop();
    if (self->ssl_ != nullptr && !self->handshake_done_) {
      self->tlsFailed("eof");  // reset in the middle of the handshake
      return;
    }
    self->handler_->onError(static_cast<int>(nread));
  }
}

void Stream::write(const uv_buf_t* bufs, unsigned count) {
  if (state_ != State::kOpen || shutdown_sent_) {
    return;
  }
  if (cork_depth_ > 0) {
    size_t total = 0;
    for (unsigned i = 0; i < count; ++i) {
      total += bufs[i].len;
    }
    constexpr size_t kMaxCorked = size_t{64} * 1024;
    if (corked_.size() + total <= kMaxCorked) {
      for (unsigned i = 0; i < count; ++i) {
        corked_.append(bufs[i].base, bufs[i].len);
      }
      return;
    }
    // Too much to gather: what is gathered and this write go out together, without a copy.
    uv_buf_t all[8];
    if (count < 8 && !corked_.empty()) {
      all[0] = uv_buf_init(corked_.data(), static_cast<unsigned>(corked_.size()));
      for (unsigned i = 0; i < count; ++i) {
        all[i + 1] = bufs[i];
      }
      sendPlain(all, count + 1);
      corked_.clear();
      return;
    }
    uncorkNow();
  }
  sendPlain(bufs, count);
}

void Stream::releaseBuffers() {
  if (corked_.empty()) {
    std::string().swap(corked_);  // frees it (assigning "" would not)
  }
  for (WriteReq* r : free_reqs_) {
    delete r;
  }
  free_reqs_.clear();
}

void Stream::uncork() {
  if (cork_depth_ > 0 && --cork_depth_ == 0) {
    uncorkNow();
  }
}

void Stream::uncorkNow() {
  if (corked_.empty() || state_ != State::kOpen) {
    corked_.clear();
    return;
  }
  uv_buf_t b = uv_buf_init(corked_.data(), static_cast<unsigned>(corked_.size()));
  sendPlain(&b, 1);
  corked_.clear();
  if (corked_.capacity() > kMaxKeptCapacity) {
    std::string().swap(corked_);  // frees it (assigning "" would not)
  }
}

void Stream::writeNow(const uv_buf_t* bufs, unsigned count) {
  unsigned first = 0;
  size_t offset = 0;
  if (pending_reqs_ == 0) {
    int n = uv_try_write(uvStream(), bufs, count);
    if (n > 0) {
      size_t written = static_cast<size_t>(n);
      while (first < count && written >= bufs[first].len) {
        written -= bufs[first].len;
        ++first;
      }
      offset = written;
    }
    // Hard errors (EPIPE, ECONNRESET) fall through: uv_write reports them in its callback, so the
    // handler is never re-entered from inside write().
  }
  if (first == count) {
    return;
  }
  size_t total = 0;
  for (unsigned i = first; i < count; ++i) {
    total += bufs[i].len;
  }
  total -= offset;
  WriteReq* req;
  if (!free_reqs_.empty()) {
    req = free_reqs_.back();
    free_reqs_.pop_back();
  } else {
    req = new WriteReq;
    req->stream = this;
  }
  req->data.clear();
  req->data.reserve(total);
  req->data.append(bufs[first].base + offset, bufs[first].len - offset);
  for (unsigned i = first + 1; i < count; ++i) {
    req->data.append(bufs[i].base, bufs[i].len);
  }
  req->req.data = req;
  uv_buf_t b = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
  int rc = uv_write(&req->req, uvStream(), &b, 1, &Stream::onWrite);
  if (rc != 0) {
    delete req;
    return;
  }
  ++pending_reqs_;
  queued_bytes_ += total;
  if (queued_bytes_ >= kHighWatermark) {
    above_high_ = true;
  }
}

void Stream::onWrite(uv_write_t* r, int status) {
  auto* req = static_cast<WriteReq*>(r->data);
  Stream* self = req->stream;
  self->queued_bytes_ -= req->data.size();
  --self->pending_reqs_;
  if (self->free_reqs_.size() < kMaxFreeReqs && req->data.capacity() <= kMaxKeptCapacity) {
    self->free_reqs_.push_back(req);
  } else {
    delete req;
  }
  if (self->state_ != State::kOpen) {
    return;
  }
  if (status < 0) {
    self->handler_->onError(status);
    return;
  }
  if (self->above_high_ && self->queued_bytes_ <= kLowWatermark) {
    self->above_high_ = false;
    self->handler_->onWritable();
    if (self->state_ != State::kOpen) {
      return;
    }
  }
  if (self->pending_reqs_ == 0 && self->close_when_flushed_) {
    self->close();
  }
}

void Stream::shutdown() {
  if (state_ != State::kOpen || shutdown_sent_) {
    return;
  }
  uncorkNow();
  shutdown_sent_ = true;
  if (ssl_ != nullptr && handshake_done_) {
    SSL_shutdown(ssl_);  // our close_notify; the peer's is not waited for
    flushTls();
  }
  auto* req = new uv_shutdown_t;
  req->data = this;
  if (uv_shutdown(req, uvStream(), &Stream::onShutdown) != 0) {
    delete req;
  }
}

void Stream::onShutdown(uv_shutdown_t* req, int) {
  delete req;
}

void Stream::closeAfterFlush() {
  uncorkNow();
  if (pending_reqs_ == 0) {
    close();
  } else {
    close_when_flushed_ = true;
    readStop();
  }
}

void Stream::close() {
  if (state_ != State::kOpen) {
    return;
  }
  if (ssl_ != nullptr && handshake_done_ && !tls_failed_) {
    // Closing without a close_notify is how HTTP ends connections; it must not make OpenSSL drop
    // the session as "bad", or the next connection could not resume it.
    SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN);
  }
  state_ = State::kClosing;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Stream::onClose);
}

void Stream::onClose(uv_handle_t* h) {
  auto* self = static_cast<Stream*>(h->data);
  self->state_ = State::kClosed;
  self->handler_->onClosed();
}

bool Stream::peerAddress(std::string* ip) const {
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return false;
  }
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), buf, sizeof buf);
    // Report IPv4-mapped addresses in their IPv4 form.
    if (strncmp(buf, "::ffff:", 7) == 0 && strchr(buf + 7, '.') != nullptr) {
      memmove(buf, buf + 7, strlen(buf + 7) + 1);
    }
  } else {
    return false;
  }
  *ip = buf;
  return true;
}

}  // namespace sluice::net
