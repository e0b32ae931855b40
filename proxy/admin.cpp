#include "proxy/admin.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "proxy/http/request_parser.h"
#include "proxy/log.h"
#include "proxy/net/listen.h"
#include "proxy/net/stream.h"
#include "proxy/ws/codec.h"

namespace sluice {

namespace {
constexpr size_t kMaxHead = 16 * 1024;
constexpr size_t kMaxBody = 64 * 1024;
constexpr uint64_t kRequestTimeoutMs = 10000;
constexpr uint64_t kLiveCloseTimeoutMs = 1000;
}  // namespace

class AdminServer::Connection : public net::Stream::Handler,
                                public http::RequestParser::Handler,
                                public ws::FrameParser::Handler {
 public:
  Connection(AdminServer* server)
      : server_(server),
        stream_(server->loop_, this),
        parser_(this, kMaxHead),
        frames_(/*from_client=*/true) {
    uv_timer_init(server->loop_, &timer_);
    timer_.data = this;
  }

  bool accept(int fd) {
    if (stream_.open(fd) != 0) {
      finish();
      return false;
    }
    stream_.readStart();
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<Connection*>(t->data)->finish(); },
        kRequestTimeoutMs, 0);
    return true;
  }

  // net::Stream::Handler
  void onData(const char* data, size_t len) override {
    if (live_) {
      readFrames(data, len);
      return;
    }
    if (answered_) {
      return;
    }
    http::RequestParser::Result r = parser_.execute(data, len);
    if (live_ && r.consumed < len) {
      readFrames(data + r.consumed, len - r.consumed);  // frames sent right behind the request
    }
    if (r.status == http::RequestParser::Status::kError) {
      AdminResponse resp;
      resp.status = r.error_status;
      resp.content_type = "text/plain; charset=utf-8";
      resp.body = std::string(r.error_reason) + "\n";
      respond(resp);
    }
  }
  void onEof() override { finish(); }
  void onError(int) override { finish(); }
  void onClosed() override {
    stream_closed_ = true;
    finish();
  }

  // http::RequestParser::Handler
  http::RequestParser::HeadAction onHead() override {
    if (parser_.hasContentLength() && parser_.contentLength() > kMaxBody) {
      AdminResponse resp;
      resp.status = 413;
      resp.content_type = "text/plain; charset=utf-8";
      resp.body = "request body too large\n";
      respond(resp);
      return http::RequestParser::HeadAction::kStop;
    }
    return http::RequestParser::HeadAction::kContinue;
  }
  bool onBody(const char*, size_t len) override {
    body_bytes_ += len;
    return body_bytes_ <= kMaxBody;
  }
  void onMessageComplete() override { respond(server_->handler_(parser_.head())); }

  // ws::FrameParser::Handler: a page's frames. Only control frames matter; data frames are
  // counted against a small budget and dropped.
  bool onFrameHeader(const ws::FrameHeader& h, const uint8_t*) override {
    if (ws::isControl(h.opcode)) {
      control_.clear();
      return true;
    }
    if (closing_) {
      return true;  // waiting for the page's close: anything else is dropped
    }
    client_data_ += h.length;
    if (h.length > kLiveMaxClientFrame) {
      fail(ws::kMessageTooBig, "this endpoint reads no messages");
      return true;  // parsing goes on, dropping everything until the page's close
    }
    if (client_data_ > kLiveMaxClientData) {
      fail(ws::kPolicyViolation, "this endpoint reads no messages");
      return true;
    }
    return true;
  }
  bool onFramePayload(const ws::FrameHeader& h, const uint8_t* data, size_t len,
                      uint64_t offset) override {
    if (ws::isControl(h.opcode)) {
      size_t start = control_.size();
      control_.append(reinterpret_cast<const char*>(data), len);  // at most 125 bytes in all
      ws::applyMask(reinterpret_cast<uint8_t*>(control_.data()) + start, len, h.mask, offset % 4);
    }
    return true;
  }
  bool onFrameEnd(const ws::FrameHeader& h) override {
    if (h.opcode == ws::kPing && !closing_) {
      std::string pong;
      ws::writeControlFrame(&pong, ws::kPong, control_, nullptr);
      send(pong);
    } else if (h.opcode == ws::kClose) {
      if (!closing_) {
        // The page closes: echo its code (1000 when it sent none).
        uint16_t code = ws::kNormal;
        if (control_.size() >= 2) {
          code = static_cast<uint16_t>(static_cast<uint8_t>(control_[0]) << 8 |
                                       static_cast<uint8_t>(control_[1]));
          if (!ws::validCloseCode(code)) {
            code = ws::kProtocolError;
          }
        }
        fail(code, "");
      }
      closed_frames_ = true;
      stream_.closeAfterFlush();  // both closes exchanged
      return false;
    }
    return true;
  }

  // The live feed: one frame, the same bytes for every page. A page that has not taken the
  // previous ones is closed.
  void push(const uv_buf_t* frame, unsigned count) {
    if (closing_) {
      return;
    }
    if (stream_.queuedBytes() > kLiveMaxQueued) {
      fail(ws::kPolicyViolation, "too slow: updates not taken");
      return;
    }
    stream_.write(frame, count);
  }

  // Closes a live page: a close frame, then the socket once the page's close comes (or after a
  // second without it).
  void closeLive(uint16_t code, std::string_view reason) { fail(code, reason); }

 private:
  void readFrames(const char* data, size_t len) {
    if (closed_frames_) {
      return;
    }
    size_t used = frames_.feed(reinterpret_cast<const uint8_t*>(data), len, *this);
    if (used < len) {
      // A protocol error, the budget spent, or the closes exchanged: read no further frames.
      closed_frames_ = true;
      if (frames_.error() != ws::FrameError::kNone) {
        fail(ws::kProtocolError, ws::frameErrorName(frames_.error()));
      }
    }
  }

  void send(std::string_view bytes) {
    if (!closing_ && stream_.queuedBytes() <= kLiveMaxQueued) {
      stream_.write(bytes);
    }
  }

  void fail(uint16_t code, std::string_view reason) {
    if (closing_) {
      return;
    }
    closing_ = true;
    server_->removeLive(this);
    std::string frame;
    ws::writeCloseFrame(&frame, code, reason, nullptr);
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<Connection*>(t->data)->finish(); },
        kLiveCloseTimeoutMs, 0);
    stream_.write(frame);
  }

  void respond(const AdminResponse& resp) {
    if (answered_) {
      return;
    }
    answered_ = true;
    if (resp.live && resp.status == 101) {
      stream_.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\n" +
          resp.headers + "\r\n");
      uv_timer_stop(&timer_);  // a page stays as long as it likes
      live_ = true;
      server_->addLive(this);
      return;
    }
    std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " " +
                      http::reasonPhrase(resp.status) + "\r\nContent-Type: " + resp.content_type +
                      "\r\nContent-Length: " + std::to_string(resp.body.size()) +
                      "\r\nCache-Control: no-store\r\nConnection: close\r\n" + resp.headers +
                      "\r\n";
    if (parser_.head().method != "HEAD") {
      out += resp.body;
    }
    stream_.write(out);
    stream_.closeAfterFlush();
  }

  void finish() {
    if (live_ && !closing_) {
      closing_ = true;
      server_->removeLive(this);
    }
    if (!stream_closed_) {
      stream_.close();  // onClosed() calls finish() again
      return;
    }
    if (!timer_closing_) {
      timer_closing_ = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&timer_),
               [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
    }
  }

  AdminServer* server_;
  net::Stream stream_;
  http::RequestParser parser_;
  ws::FrameParser frames_;
  std::string control_;       // the payload of the control frame being read
  uint64_t client_data_ = 0;  // data frame bytes a live page sent
  uv_timer_t timer_;
  size_t body_bytes_ = 0;
  bool answered_ = false;
  bool live_ = false;
  bool closing_ = false;        // a live page's close frame is sent
  bool closed_frames_ = false;  // no more frames are read
  bool stream_closed_ = false;
  bool timer_closing_ = false;
};

AdminServer::AdminServer(uv_loop_t* loop, Handler handler)
    : loop_(loop), handler_(std::move(handler)) {}

AdminServer::~AdminServer() = default;

bool AdminServer::adopt(int fd, std::string* error) {
  fd_ = fd;
  int rc = uv_poll_init(loop_, &poll_, fd_);
  if (rc == 0) {
    open_ = true;
    poll_.data = this;
    rc = uv_poll_start(&poll_, UV_READABLE, &AdminServer::onReadable);
  }
  if (rc != 0) {
    *error = std::string("admin listener: ") + uv_strerror(rc);
    if (!open_) {
      ::close(fd_);
      fd_ = -1;
    }
    return false;
  }
  return true;
}

bool AdminServer::listen(const conf::Address& address, std::string* error) {
  std::string why;
  fd_ = net::listenSocket(address, false, &why);
  int rc = 0;
  if (fd_ >= 0) {
    rc = ::listen(fd_, 128) == 0 ? 0 : -errno;
    if (rc == 0) {
      rc = uv_poll_init(loop_, &poll_, fd_);
    }
    if (rc == 0) {
      open_ = true;
      poll_.data = this;
      rc = uv_poll_start(&poll_, UV_READABLE, &AdminServer::onReadable);
    }
    if (rc != 0) {
      why = uv_strerror(rc);
    }
  }
  if (fd_ < 0 || rc != 0) {
    *error = "admin listener " + address.text + ": " + why;
    if (!open_ && fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    return false;
  }
  return true;
}

AdminResponse AdminServer::liveHandshake(const http::RequestHead& req, std::string_view protocol) {
  AdminResponse r;
  r.content_type = "text/plain; charset=utf-8";
  const http::Header* key = req.find("sec-websocket-key");
  const char* bad = nullptr;
  if (req.method != "GET") {
    bad = "a WebSocket upgrade must use GET";
  } else if (req.major != 1 || req.minor < 1) {
    bad = "a WebSocket upgrade needs HTTP/1.1";
  } else if (!http::headersHaveToken(req.headers, "upgrade", "websocket")) {
    bad = "this endpoint is a WebSocket: 'Upgrade: websocket' expected";
  } else if (!http::headersHaveToken(req.headers, "connection", "upgrade")) {
    bad = "a WebSocket upgrade without 'Connection: Upgrade'";
  } else if (key == nullptr || req.count("sec-websocket-key") != 1 ||
             !ws::validClientKey(key->value)) {
    bad = "missing or invalid Sec-WebSocket-Key";
  }
  if (bad != nullptr) {
    r.status = 400;
    r.body = std::string(bad) + "\n";
    return r;
  }
  const http::Header* version = req.find("sec-websocket-version");
  if (version == nullptr || req.count("sec-websocket-version") != 1 || version->value != "13") {
    r.status = 426;
    r.body = "unsupported Sec-WebSocket-Version\n";
    r.headers = "Sec-WebSocket-Version: 13\r\n";
    return r;
  }
  r.status = 101;
  r.live = true;
  r.headers = "Sec-WebSocket-Accept: " + ws::acceptKey(key->value) + "\r\n";
  if (!protocol.empty()) {
    r.headers += "Sec-WebSocket-Protocol: " + std::string(protocol) + "\r\n";
  }
  return r;
}

void AdminServer::addLive(Connection* page) {
  if (!open_) {
    page->closeLive(ws::kGoingAway, "sluice is stopping");  // upgraded after close()
    return;
  }
  live_.insert(page);
  if (live_timer_ == nullptr) {
    live_timer_ = new uv_timer_t;
    uv_timer_init(loop_, live_timer_);
    live_timer_->data = this;
  }
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(live_timer_))) {
    uv_timer_start(
        live_timer_, [](uv_timer_t* t) { static_cast<AdminServer*>(t->data)->pushLive(); },
        kLiveIntervalMs, kLiveIntervalMs);
  }
  // The first document at once, so that a page shows something before the first tick.
  if (live_source_) {
    std::string doc = live_source_();
    std::string head;
    ws::writeFrameHeader(&head, true, ws::kText, doc.size(), nullptr);
    uv_buf_t bufs[2] = {uv_buf_init(head.data(), static_cast<unsigned>(head.size())),
                        uv_buf_init(doc.data(), static_cast<unsigned>(doc.size()))};
    page->push(bufs, 2);
  }
}

void AdminServer::removeLive(Connection* page) {
  live_.erase(page);
  if (live_.empty() && live_timer_ != nullptr) {
    uv_timer_stop(live_timer_);  // no page open: no work at all
  }
}

void AdminServer::pushLive() {
  if (live_.empty() || !live_source_) {
    return;
  }
  std::string doc = live_source_();
  std::string head;
  ws::writeFrameHeader(&head, true, ws::kText, doc.size(), nullptr);
  uv_buf_t bufs[2] = {uv_buf_init(head.data(), static_cast<unsigned>(head.size())),
                      uv_buf_init(doc.data(), static_cast<unsigned>(doc.size()))};
  // push() may close a page (and so remove it from live_): iterate over a copy.
  std::vector<Connection*> pages(live_.begin(), live_.end());
  for (Connection* page : pages) {
    page->push(bufs, 2);
  }
}

void AdminServer::close() {
  std::vector<Connection*> pages(live_.begin(), live_.end());
  for (Connection* page : pages) {
    page->closeLive(ws::kGoingAway, "sluice is stopping");
  }
  if (live_timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(live_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    live_timer_ = nullptr;
  }
  if (open_) {
    open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), [](uv_handle_t* h) {
      auto* self = static_cast<AdminServer*>(h->data);
      ::close(self->fd_);
      self->fd_ = -1;
    });
  }
}

void AdminServer::onReadable(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<AdminServer*>(poll->data);
  if (status < 0) {
    return;
  }
  for (int i = 0; i < 16 && self->open_; ++i) {
    int fd = net::acceptSocket(self->fd_, nullptr);
    if (fd < 0) {
      if (errno == ECONNABORTED || errno == EINTR) {
        continue;
      }
      return;  // EAGAIN, or out of descriptors: the poll comes back
    }
    auto* conn = new Connection(self);
    conn->accept(fd);
  }
}

}  // namespace sluice
