#include "proxy/admin.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/http/request_parser.h"
#include "proxy/log.h"
#include "proxy/net/listen.h"
#include "proxy/net/stream.h"

namespace sluice {

namespace {
constexpr size_t kMaxHead = 16 * 1024;
constexpr size_t kMaxBody = 64 * 1024;
constexpr uint64_t kRequestTimeoutMs = 10000;
}  // namespace

class AdminServer::Connection : public net::Stream::Handler, public http::RequestParser::Handler {
 public:
  Connection(AdminServer* server)
      : server_(server), stream_(server->loop_, this), parser_(this, kMaxHead) {
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
    if (answered_) {
      return;
    }
    http::RequestParser::Result r = parser_.execute(data, len);
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

 private:
  void respond(const AdminResponse& resp) {
    if (answered_) {
      return;
    }
    answered_ = true;
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
  uv_timer_t timer_;
  size_t body_bytes_ = 0;
  bool answered_ = false;
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

void AdminServer::close() {
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
