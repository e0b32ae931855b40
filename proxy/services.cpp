#include "proxy/services.h"

#include <netdb.h>

#include <cstring>

#include "proxy/http/response_parser.h"
#include "proxy/log.h"
#include "proxy/net/stream.h"

namespace sluice {

// ---- URLs ----------------------------------------------------------------------------------

std::optional<FetchUrl> parseFetchUrl(std::string_view url, std::string* why) {
  FetchUrl out;
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      *why = "the URL holds spaces or control characters";
      return std::nullopt;
    }
  }
  std::string_view rest;
  if (url.starts_with("https://")) {
    out.tls = true;
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else {
    *why = "the URL must start with https:// or http://";
    return std::nullopt;
  }
  size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view target = slash == std::string_view::npos ? "/" : rest.substr(slash);
  target = target.substr(0, target.find('#'));
  if (target.empty() || target.front() == '?') {
    out.target = "/" + std::string(target);
  } else {
    out.target = target;
  }
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    *why = "the URL needs a host (and no user info)";
    return std::nullopt;
  }
  out.authority = authority;
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      *why = "unclosed '[' in the URL's host";
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        *why = "bad characters after the URL's IPv6 host";
        return std::nullopt;
      }
      port = after.substr(1);
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    *why = "the URL needs a host";
    return std::nullopt;
  }
  out.host = host;
  out.port = out.tls ? 443 : 80;
  if (!port.empty()) {
    unsigned p = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || p > 65535) {
        p = 70000;
        break;
      }
      p = p * 10 + static_cast<unsigned>(c - '0');
    }
    if (p == 0 || p > 65535) {
      *why = "bad port in the URL";
      return std::nullopt;
    }
    out.port = static_cast<uint16_t>(p);
  }
  return out;
}

// ---- one fetch -----------------------------------------------------------------------------

// Resolves, connects (each address in turn until one answers), sends the GET, reads the
// response, then ends: finish() runs the caller's callback once, and the object frees itself
// once its timer, its name lookup and its connections have all closed.
class ProcessServices::Fetch : public http::ResponseParser::Handler {
 public:
  Fetch(ProcessServices* owner, filters::FetchRequest request,
        std::function<void(filters::FetchResult)> done)
      : owner_(owner), request_(std::move(request)), done_(std::move(done)), parser_(this) {
    uv_timer_init(owner_->loop_, &timer_);
    timer_.data = this;
  }

  void start(std::shared_ptr<const net::ClientTls> tls, const std::string& error) {
    std::string why = error;
    std::optional<FetchUrl> url = why.empty() ? parseFetchUrl(request_.url, &why) : std::nullopt;
    if (!url) {
      // The callback runs later, never inside fetch().
      failSoon(why);
      return;
    }
    url_ = std::move(*url);
    tls_ = std::move(tls);
    uv_timer_start(
        &timer_,
        [](uv_timer_t* t) {
          auto* f = static_cast<Fetch*>(t->data);
          f->fail("timed out after " + std::to_string(f->request_.timeout.count()) + " ms");
        },
        static_cast<uint64_t>(std::max<int64_t>(request_.timeout.count(), 1)), 0);
    gai_.data = this;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string port = std::to_string(url_.port);
    int rc = uv_getaddrinfo(owner_->loop_, &gai_, &Fetch::onResolved, url_.host.c_str(),
                            port.c_str(), &hints);
    if (rc != 0) {
      fail(std::string("cannot resolve ") + url_.host + ": " + uv_strerror(rc));
      return;
    }
    resolving_ = true;
  }

  // From ProcessServices::close().
  void fail(const std::string& why) {
    filters::FetchResult r;
    r.error = why;
    finish(std::move(r));
  }

  // ResponseParser::Handler
  void onInformational(const http::ResponseHead&) override {}
  bool onUpgrade(const http::ResponseHead&) override { return false; }
  bool onHead(const http::ResponseHead& head, http::BodyFraming) override {
    status_ = head.status;
    return true;
  }
  void onBody(const char* data, size_t len) override {
    if (body_.size() + len > request_.max_body_bytes) {
      too_large_ = true;
      return;
    }
    body_.append(data, len);
  }

 private:
  // One connection attempt. It outlives a fetch that ended (its handle closes later), so it
  // reports to the fetch only while it is the current one.
  struct Conn : net::Stream::Handler {
    explicit Conn(Fetch* f) : fetch(f), stream(f->owner_->loop_, this) {}
    void onData(const char* data, size_t len) override {
      if (current()) {
        fetch->onData(data, len);
      }
    }
    void onEof() override {
      if (current()) {
        fetch->onEof();
      }
    }
    void onError(int status) override {
      if (current()) {
        fetch->onConnFailed(uv_strerror(status));
      }
    }
    void onConnected(int status) override {
      if (current()) {
        fetch->onConnected(status);
      }
    }
    void onTlsHandshake(const char* failure) override {
      if (current() && failure != nullptr) {
        fetch->onConnFailed(std::string("TLS handshake: ") + failure);
      }
    }
    void onClosed() override {
      Fetch* f = fetch;
      if (f->conn_ == this) {
        f->conn_ = nullptr;
      }
      --f->open_conns_;
      delete this;
      f->maybeFree();
    }
    bool current() const { return fetch->conn_ == this && !fetch->finished_; }

    Fetch* fetch;
    net::Stream stream;
  };

  static void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* f = static_cast<Fetch*>(req->data);
    f->resolving_ = false;
    if (f->finished_) {
      uv_freeaddrinfo(res);
      f->maybeFree();
      return;
    }
    if (status != 0) {
      uv_freeaddrinfo(res);
      f->fail("cannot resolve " + f->url_.host + ": " + uv_strerror(status));
      return;
    }
    f->addrs_ = res;
    f->next_addr_ = res;
    f->connectNext();
  }

  void connectNext() {
    if (conn_ != nullptr) {
      Conn* old = conn_;
      conn_ = nullptr;
      old->stream.close();
    }
    while (next_addr_ != nullptr) {
      addrinfo* a = next_addr_;
      next_addr_ = a->ai_next;
      if (a->ai_family != AF_INET && a->ai_family != AF_INET6) {
        continue;
      }
      auto* c = new Conn(this);
      ++open_conns_;
      conn_ = c;
      if (tls_ != nullptr) {
        SSL* ssl = tls_->newSession(url_.host);
        if (ssl == nullptr) {
          fail("cannot make a TLS session");
          return;
        }
        c->stream.startTls(ssl);
      }
      int rc = c->stream.connect(a->ai_addr);
      if (rc == 0) {
        return;
      }
      conn_ = nullptr;
      c->stream.close();
      last_error_ = uv_strerror(rc);
    }
    fail("cannot connect to " + url_.authority + ": " +
         (last_error_.empty() ? "no address" : last_error_));
  }

  void onConnFailed(const std::string& why) {
    if (status_ == 0 && body_.empty() && next_addr_ != nullptr) {
      last_error_ = why;
      connectNext();
      return;
    }
    fail(why);
  }

  void onConnected(int status) {
    if (status < 0) {
      onConnFailed(uv_strerror(status));
      return;
    }
    std::string head = "GET " + url_.target + " HTTP/1.1\r\nHost: " + url_.authority +
                       "\r\nUser-Agent: sluice/" SLUICE_VERSION
                       "\r\nAccept: application/json, */*;q=0.5\r\nConnection: close\r\n\r\n";
    parser_.reset(false, false);
    conn_->stream.readStart();
    conn_->stream.write(head);
  }

  void onData(const char* data, size_t len) {
    http::ResponseParser::Result r = parser_.execute(data, len);
    afterParse(r);
  }

  void onEof() { afterParse(parser_.finish(), true); }

  void afterParse(http::ResponseParser::Result r, bool eof = false) {
    if (too_large_) {
      fail("response body larger than " + std::to_string(request_.max_body_bytes) + " bytes");
      return;
    }
    switch (r.status) {
      case http::ResponseParser::Status::kComplete: {
        filters::FetchResult out;
        out.status = status_;
        out.body = std::move(body_);
        finish(std::move(out));
        return;
      }
      case http::ResponseParser::Status::kError:
        fail(std::string("invalid HTTP response: ") + (r.reason != nullptr ? r.reason : "?"));
        return;
      case http::ResponseParser::Status::kUpgraded:
      case http::ResponseParser::Status::kStopped:
        fail("unexpected response");
        return;
      case http::ResponseParser::Status::kNeedMore:
        if (eof) {
          fail("connection closed before the response ended");
        }
        return;
    }
  }

  void failSoon(const std::string& why) {
    early_error_ = why;
    uv_timer_start(
        &timer_,
        [](uv_timer_t* t) {
          auto* f = static_cast<Fetch*>(t->data);
          f->fail(f->early_error_);
        },
        0, 0);
  }

  void finish(filters::FetchResult result) {
    if (finished_) {
      return;
    }
    finished_ = true;
    owner_->fetchDone(this);
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* f = static_cast<Fetch*>(h->data);
      f->timer_closed_ = true;
      f->maybeFree();
    });
    if (resolving_) {
      uv_cancel(reinterpret_cast<uv_req_t*>(&gai_));  // onResolved still runs (UV_ECANCELED)
    }
    if (conn_ != nullptr) {
      Conn* c = conn_;
      conn_ = nullptr;
      c->stream.close();
    }
    auto done = std::move(done_);
    done(std::move(result));  // may start another fetch; this one is out of the set already
  }

  void maybeFree() {
    if (finished_ && timer_closed_ && !resolving_ && open_conns_ == 0) {
      delete this;
    }
  }

  ~Fetch() override {
    if (addrs_ != nullptr) {
      uv_freeaddrinfo(addrs_);
    }
  }

  ProcessServices* owner_;
  filters::FetchRequest request_;
  std::function<void(filters::FetchResult)> done_;
  FetchUrl url_;
  std::shared_ptr<const net::ClientTls> tls_;
  uv_timer_t timer_;
  uv_getaddrinfo_t gai_;
  addrinfo* addrs_ = nullptr;
  addrinfo* next_addr_ = nullptr;
  Conn* conn_ = nullptr;
  int open_conns_ = 0;
  http::ResponseParser parser_;
  uint16_t status_ = 0;
  std::string body_;
  std::string early_error_;
  std::string last_error_;
  bool too_large_ = false;
  bool resolving_ = false;
  bool finished_ = false;
  bool timer_closed_ = false;
};

// ---- the services --------------------------------------------------------------------------

ProcessServices::ProcessServices(uv_loop_t* loop)
    : loop_(loop),
      async_(new uv_async_t),
      dispatcher_(loop, 0, [this](std::function<void()> task) { post(std::move(task)); }) {
  uv_async_init(loop_, async_, &ProcessServices::onAsync);
  async_->data = this;
}

ProcessServices::~ProcessServices() {
  close();
}

void ProcessServices::post(std::function<void()> task) {
  std::lock_guard lock(mutex_);
  if (closed_) {
    return;  // shutting down: the main loop is ending
  }
  tasks_.push_back(std::move(task));
  uv_async_send(async_);
}

void ProcessServices::onAsync(uv_async_t* async) {
  auto* self = static_cast<ProcessServices*>(async->data);
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(self->mutex_);
    tasks.swap(self->tasks_);
  }
  for (auto& t : tasks) {
    t();
  }
}

std::shared_ptr<const net::ClientTls> ProcessServices::clientTls(
    const filters::FetchRequest& request, std::string* error) {
  auto key = std::make_pair(request.ca_file, request.verify);
  auto it = tls_.find(key);
  if (it != tls_.end()) {
    return it->second;
  }
  conf::PoolTls config;
  config.ca = request.ca_file;
  config.verify = request.verify;
  config.pos = conf::SourcePos{request.ca_file, 0, 0};
  conf::Diagnostics diagnostics;
  std::shared_ptr<const net::ClientTls> tls = net::ClientTls::build(config, &diagnostics);
  if (tls == nullptr) {
    *error = diagnostics.empty() ? "cannot build a TLS context" : diagnostics.front().message;
    return nullptr;
  }
  tls_.emplace(key, tls);
  return tls;
}

void ProcessServices::fetch(const filters::FetchRequest& request,
                            std::function<void(filters::FetchResult)> done) {
  auto* f = new Fetch(this, request, std::move(done));
  fetches_.insert(f);
  std::string error;
  std::shared_ptr<const net::ClientTls> tls;
  if (closed_) {
    error = "sluice is shutting down";
  } else if (request.url.starts_with("https://")) {
    tls = clientTls(request, &error);
  }
  f->start(std::move(tls), error);
}

void ProcessServices::fetchDone(void* fetch) {
  fetches_.erase(static_cast<Fetch*>(fetch));
}

void ProcessServices::close() {
  {
    std::lock_guard lock(mutex_);
    if (closed_) {
      return;
    }
    closed_ = true;
    tasks_.clear();
  }
  std::vector<Fetch*> running(fetches_.begin(), fetches_.end());
  for (Fetch* f : running) {
    f->fail("sluice is shutting down");
  }
  uv_close(reinterpret_cast<uv_handle_t*>(async_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
}

}  // namespace sluice
