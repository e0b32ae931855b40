#include "proxy/redis/client.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>

#include "conf/config.h"
#include "proxy/log.h"
#include "proxy/net/stream.h"
#include "proxy/net/tls.h"
#include "proxy/redis/resp.h"

namespace sluice::redis {

namespace {

using filters::RedisReply;
using Callback = filters::RedisClient::Callback;

constexpr uint64_t kFirstRetryMs = 50;
constexpr uint64_t kMaxRetryMs = 2000;

class Core;

// One connection attempt's stream. It frees itself once its handle has closed; the core lets go
// of it (core = null) when it gives the connection up, so late events reach nobody.
struct Link : net::Stream::Handler {
  Link(uv_loop_t* loop, Core* c) : core(c), stream(loop, this) {}
  void onData(const char* data, size_t len) override;
  void onEof() override;
  void onError(int status) override;
  void onConnected(int status) override;
  void onTlsHandshake(const char* failure) override;
  void onClosed() override { delete this; }

  Core* core;
  net::Stream stream;
};

// A getaddrinfo under way; its callback frees it.
struct Resolve {
  uv_getaddrinfo_t req;
  Core* core;
};

class Core {
 public:
  Core(uv_loop_t* loop, filters::Dispatcher& dispatcher, const filters::RedisOptions& options);
  void command(const std::vector<std::string>& args, Callback done);
  bool ready() const { return state_ == State::kReady; }
  // The handle is gone: drop every call and go once nothing of ours runs.
  void release();

  void onData(const char* data, size_t len);
  void onLinkDown(const std::string& why) { attemptFailed(why); }
  void onConnected(int status);
  void onTlsHandshake(const char* failure);
  void onResolved(addrinfo* res, int status);

 private:
  enum class State { kDown, kResolving, kConnecting, kReady };
  struct Call {
    Callback done;  // empty for sluice's own AUTH
    uint64_t deadline;
  };
  struct Queued {
    std::string wire;
    Callback done;
    uint64_t deadline;
  };

  // Keeps the core alive while one of its entry points runs; the last one out frees a released
  // core.
  class Busy {
   public:
    explicit Busy(Core* c) : c_(c) { ++c_->busy_; }
    ~Busy() {
      if (--c_->busy_ == 0 && c_->released_) {
        delete c_;
      }
    }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

   private:
    Core* c_;
  };

  void startConnect();
  void connectTo(const sockaddr* addr);
  void linkUp();
  void becomeReady();
  // The connection (or the attempt) failed: every call waiting fails, and a new attempt follows
  // after the retry delay.
  void attemptFailed(const std::string& why);
  void dropLink();
  void fail(Callback& done, const std::string& why);
  void deferFailure(Callback done, std::string why);
  void onDeferTimer();
  void onCallTimer();
  void onStateTimer();
  void armCallTimer();
  uint64_t now() const { return dispatcher_.nowMs(); }

  uv_loop_t* loop_;
  filters::Dispatcher& dispatcher_;
  filters::RedisOptions options_;
  conf::Address address_;
  bool address_ok_ = false;
  std::shared_ptr<net::ClientTls> tls_;
  State state_ = State::kDown;
  Link* link_ = nullptr;
  Resolve* resolve_ = nullptr;
  ReplyParser parser_;
  bool auth_pending_ = false;
  std::deque<Call> pending_;                               // sent, awaiting replies in order
  std::deque<Queued> queued_;                              // waiting for the connection
  std::deque<std::pair<Callback, std::string>> deferred_;  // failures to report from the loop
  std::string out_;  // commands of this loop turn, written together
  std::unique_ptr<filters::Timer> defer_timer_;
  std::unique_ptr<filters::Timer> call_timer_;
  std::unique_ptr<filters::Timer> state_timer_;  // connect timeout, or the retry delay
  uint64_t retry_ms_ = kFirstRetryMs;
  bool ever_ready_ = false;
  bool down_logged_ = false;  // the outage has been logged (once per outage)
  std::string last_error_ = "connecting";
  int busy_ = 0;
  bool released_ = false;
};

void Link::onData(const char* data, size_t len) {
  if (core != nullptr) {
    core->onData(data, len);
  }
}
void Link::onEof() {
  if (core != nullptr) {
    core->onLinkDown("connection closed by Redis");
  }
}
void Link::onError(int status) {
  if (core != nullptr) {
    core->onLinkDown(uv_strerror(status));
  }
}
void Link::onConnected(int status) {
  if (core != nullptr) {
    core->onConnected(status);
  }
}
void Link::onTlsHandshake(const char* failure) {
  if (core != nullptr) {
    core->onTlsHandshake(failure);
  }
}

Core::Core(uv_loop_t* loop, filters::Dispatcher& dispatcher, const filters::RedisOptions& options)
    : loop_(loop), dispatcher_(dispatcher), options_(options) {
  defer_timer_ = dispatcher_.createTimer([this] { onDeferTimer(); });
  call_timer_ = dispatcher_.createTimer([this] { onCallTimer(); });
  state_timer_ = dispatcher_.createTimer([this] { onStateTimer(); });
  std::string why;
  if (auto a = conf::parseAddress(options_.address, &why)) {
    address_ = *a;
    address_ok_ = true;
  } else {
    last_error_ = "bad address '" + options_.address + "': " + why;
    LOG_ERROR("redis: %s", last_error_.c_str());
  }
  if (address_ok_ && options_.tls) {
    conf::PoolTls t;
    t.ca = options_.ca_file;
    t.verify = options_.verify;
    t.sni = options_.sni;
    conf::Diagnostics diagnostics;
    tls_ = net::ClientTls::build(t, &diagnostics);
    if (!tls_) {
      address_ok_ = false;
      last_error_ = "TLS setup failed";
      for (const conf::Diagnostic& d : diagnostics) {
        last_error_ += ": " + d.message;
      }
      LOG_ERROR("redis %s: %s", options_.address.c_str(), last_error_.c_str());
    }
  }
  startConnect();
}

void Core::release() {
  released_ = true;
  pending_.clear();
  queued_.clear();
  deferred_.clear();
  dropLink();
  if (resolve_ != nullptr) {
    resolve_->core = nullptr;
    resolve_ = nullptr;
  }
  defer_timer_.reset();
  call_timer_.reset();
  state_timer_.reset();
  if (busy_ == 0) {
    delete this;
  }
}

void Core::startConnect() {
  if (!address_ok_ || released_) {
    return;  // stays down: the configuration cannot work
  }
  state_timer_->arm(options_.connect_timeout);
  in6_addr a6;
  in_addr a4;
  if (inet_pton(AF_INET, address_.host.c_str(), &a4) == 1) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(address_.port);
    sa.sin_addr = a4;
    connectTo(reinterpret_cast<sockaddr*>(&sa));
    return;
  }
  if (inet_pton(AF_INET6, address_.host.c_str(), &a6) == 1) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(address_.port);
    sa.sin6_addr = a6;
    connectTo(reinterpret_cast<sockaddr*>(&sa));
    return;
  }
  // A name: resolved on libuv's thread pool, never on the worker.
  state_ = State::kResolving;
  resolve_ = new Resolve{};
  resolve_->core = this;
  resolve_->req.data = resolve_;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = std::to_string(address_.port);
  int rc = uv_getaddrinfo(
      loop_, &resolve_->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* r = static_cast<Resolve*>(req->data);
        if (r->core != nullptr) {
          r->core->onResolved(res, status);
        }
        uv_freeaddrinfo(res);
        delete r;
      },
      address_.host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    delete resolve_;
    resolve_ = nullptr;
    attemptFailed(std::string("resolve: ") + uv_strerror(rc));
  }
}

void Core::onResolved(addrinfo* res, int status) {
  Busy busy(this);
  resolve_ = nullptr;
  if (released_ || state_ != State::kResolving) {
    return;
  }
  if (status != 0 || res == nullptr) {
    attemptFailed("cannot resolve '" + address_.host + "': " + uv_strerror(status));
    return;
  }
  connectTo(res->ai_addr);
}

void Core::connectTo(const sockaddr* addr) {
  state_ = State::kConnecting;
  parser_.reset();
  link_ = new Link(loop_, this);
  if (tls_) {
    SSL* ssl = tls_->newSession(address_.host);
    if (ssl == nullptr) {
      attemptFailed("TLS session setup failed");
      return;
    }
    link_->stream.startTls(ssl);
  }
  if (int rc = link_->stream.connect(addr); rc != 0) {
    attemptFailed(std::string("connect: ") + uv_strerror(rc));
    return;
  }
  auth_pending_ = !options_.password.empty();
  if (auth_pending_) {
    // Queued by the stream until the connection (and TLS) is up; first on the wire.
    std::vector<std::string> auth{"AUTH"};
    if (!options_.username.empty()) {
      auth.push_back(options_.username);
    }
    auth.push_back(options_.password);
    std::string wire;
    appendCommand(&wire, auth);
    link_->stream.write(wire);
    pending_.push_back(Call{nullptr, now() + static_cast<uint64_t>(options_.timeout.count()) +
                                         static_cast<uint64_t>(options_.connect_timeout.count())});
  }
}

void Core::onConnected(int status) {
  Busy busy(this);
  if (status < 0) {
    attemptFailed(std::string("connect: ") + uv_strerror(status));
    return;
  }
  link_->stream.readStart();
  if (!tls_) {
    linkUp();
  }
}

void Core::onTlsHandshake(const char* failure) {
  Busy busy(this);
  if (failure != nullptr) {
    attemptFailed(std::string("TLS handshake failed: ") + failure);
    return;
  }
  linkUp();
}

void Core::linkUp() {
  if (!auth_pending_) {
    becomeReady();
  }
  // Otherwise ready once AUTH is answered.
}

void Core::becomeReady() {
  state_ = State::kReady;
  state_timer_->disarm();
  retry_ms_ = kFirstRetryMs;
  if (down_logged_) {
    LOG_WARN("redis %s: connected again", options_.address.c_str());
  } else if (!ever_ready_) {
    LOG_INFO("redis %s: connected", options_.address.c_str());
  }
  down_logged_ = false;
  ever_ready_ = true;
  for (Queued& q : queued_) {
    out_.append(q.wire);
    pending_.push_back(Call{std::move(q.done), q.deadline});
  }
  queued_.clear();
  if (!out_.empty()) {
    defer_timer_->arm(std::chrono::milliseconds(0));
  }
  armCallTimer();
}

void Core::command(const std::vector<std::string>& args, Callback done) {
  if (released_) {
    return;
  }
  uint64_t deadline = now() + static_cast<uint64_t>(options_.timeout.count());
  switch (state_) {
    case State::kReady:
      appendCommand(&out_, args);
      pending_.push_back(Call{std::move(done), deadline});
      if (!defer_timer_->armed()) {
        defer_timer_->arm(std::chrono::milliseconds(0));
      }
      if (!call_timer_->armed()) {
        armCallTimer();
      }
      return;
    case State::kResolving:
    case State::kConnecting:
      if (queued_.size() >= options_.max_queued) {
        deferFailure(std::move(done), "too many calls waiting for the connection");
        return;
      }
      queued_.push_back(Queued{{}, std::move(done), deadline});
      appendCommand(&queued_.back().wire, args);
      if (!call_timer_->armed()) {
        armCallTimer();
      }
      return;
    case State::kDown:
      deferFailure(std::move(done), "not connected (" + last_error_ + ")");
      return;
  }
}

void Core::deferFailure(Callback done, std::string why) {
  deferred_.emplace_back(std::move(done), std::move(why));
  if (!defer_timer_->armed()) {
    defer_timer_->arm(std::chrono::milliseconds(0));
  }
}

void Core::fail(Callback& done, const std::string& why) {
  if (done) {
    done(RedisReply::failure(why));
  }
}

void Core::onDeferTimer() {
  Busy busy(this);
  if (!out_.empty() && link_ != nullptr && state_ == State::kReady) {
    link_->stream.write(out_);
    out_.clear();
  }
  // Failures found inside command(), reported from here; callbacks may call command() again
  // (whose failures wait for the next turn).
  std::deque<std::pair<Callback, std::string>> failures = std::move(deferred_);
  deferred_.clear();
  for (auto& [done, why] : failures) {
    if (released_) {
      return;
    }
    fail(done, why);
  }
}

void Core::onData(const char* data, size_t len) {
  Busy busy(this);
  std::vector<RedisReply> replies;
  bool ok = parser_.feed(data, len, &replies);
  for (RedisReply& r : replies) {
    if (released_ || link_ == nullptr) {
      return;
    }
    if (pending_.empty()) {
      attemptFailed("a reply nobody asked for");
      return;
    }
    Call call = std::move(pending_.front());
    pending_.pop_front();
    if (!call.done) {  // our AUTH
      auth_pending_ = false;
      if (r.type == RedisReply::Type::kError) {
        attemptFailed("AUTH refused: " + r.str);
        return;
      }
      becomeReady();
      continue;
    }
    call.done(std::move(r));
  }
  if (!ok && !released_ && link_ != nullptr) {
    attemptFailed("bad reply: " + parser_.error());
    return;
  }
  if (!released_) {
    armCallTimer();
  }
}

void Core::armCallTimer() {
  if (call_timer_ == nullptr) {
    return;
  }
  uint64_t first = UINT64_MAX;
  if (!pending_.empty()) {
    first = pending_.front().deadline;
  }
  if (!queued_.empty()) {
    first = std::min(first, queued_.front().deadline);
  }
  if (first == UINT64_MAX) {
    call_timer_->disarm();
    return;
  }
  uint64_t t = now();
  call_timer_->arm(std::chrono::milliseconds(first > t ? first - t : 0));
}

void Core::onCallTimer() {
  Busy busy(this);
  uint64_t t = now();
  // Calls still waiting for the connection fail one by one (all have the same timeout, so the
  // queue is in deadline order).
  while (!queued_.empty() && queued_.front().deadline <= t && !released_) {
    Queued q = std::move(queued_.front());
    queued_.pop_front();
    fail(q.done, "timed out waiting for the connection");
  }
  if (released_) {
    return;
  }
  if (!pending_.empty() && pending_.front().deadline <= t) {
    attemptFailed("timed out after " + std::to_string(options_.timeout.count()) + " ms");
    return;
  }
  armCallTimer();
}

void Core::onStateTimer() {
  Busy busy(this);
  if (state_ == State::kDown) {
    startConnect();
  } else if (state_ != State::kReady) {
    attemptFailed("connect timed out");
  }
}

void Core::dropLink() {
  if (link_ != nullptr) {
    link_->core = nullptr;
    link_->stream.close();  // the link frees itself once closed
    link_ = nullptr;
  }
  out_.clear();
  auth_pending_ = false;
}

void Core::attemptFailed(const std::string& why) {
  bool was_ready = state_ == State::kReady;
  dropLink();
  if (resolve_ != nullptr) {
    resolve_->core = nullptr;
    resolve_ = nullptr;
  }
  state_ = State::kDown;
  last_error_ = why;
  if (!down_logged_) {
    LOG_WARN("redis %s: %s%s; retrying", options_.address.c_str(),
             was_ready ? "connection lost: " : "", why.c_str());
    down_logged_ = true;
  } else {
    LOG_DEBUG("redis %s: %s", options_.address.c_str(), why.c_str());
  }
  state_timer_->arm(std::chrono::milliseconds(retry_ms_));
  retry_ms_ = std::min(retry_ms_ * 2, kMaxRetryMs);
  // Every call in flight or waiting fails: their replies can never be matched now.
  std::deque<Call> pending = std::move(pending_);
  std::deque<Queued> queued = std::move(queued_);
  pending_.clear();
  queued_.clear();
  call_timer_->disarm();
  std::string reason = "connection lost (" + why + ")";
  for (Call& c : pending) {
    if (released_) {
      return;
    }
    fail(c.done, reason);
  }
  for (Queued& q : queued) {
    if (released_) {
      return;
    }
    fail(q.done, reason);
  }
}

class Handle : public filters::RedisClient {
 public:
  explicit Handle(Core* core) : core_(core) {}
  ~Handle() override { core_->release(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  void command(std::vector<std::string> args, Callback done) override {
    core_->command(args, std::move(done));
  }
  bool connected() const override { return core_->ready(); }

 private:
  Core* core_;
};

}  // namespace

std::unique_ptr<filters::RedisClient> connect(uv_loop_t* loop, filters::Dispatcher& dispatcher,
                                              const filters::RedisOptions& options) {
  return std::make_unique<Handle>(new Core(loop, dispatcher, options));
}

}  // namespace sluice::redis
