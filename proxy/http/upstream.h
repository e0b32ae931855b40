#pragma once

// One connection to a backend, serving one request at a time for an Exchange, then idle in the
// worker's keep-alive pool (or handed to a WebSocket session after a 101). It writes what the
// exchange gives it, parses the response (ResponseParser) and reports it back, and keeps the
// response timeout: the time to the response head, the longest pause between response reads, and
// the longest the backend may leave the request body unread.

#include <cstdint>
#include <memory>
#include <string>

#include "conf/config.h"
#include "proxy/http/response_parser.h"
#include "proxy/metrics.h"
#include "proxy/net/deadline.h"
#include "proxy/net/open_handles.h"
#include "proxy/net/stream.h"
#include "proxy/net/tls.h"
#include "proxy/upstream/backend_state.h"
#include "proxy/upstream/keepalive_pool.h"

namespace sluice {
class Worker;
}

namespace sluice::http {

// What went wrong toward a backend.
enum class UpstreamError {
  kConnectFailed,        // refused, unreachable, or connect_timeout
  kResetBeforeResponse,  // closed or reset before any response byte
  kTimeout,              // response_timeout
  kBadResponse,          // unparsable or refused response head
  kTruncated,            // closed in the middle of the response
};

// The exchange an upstream connection serves.
class UpstreamCallbacks {
 public:
  virtual ~UpstreamCallbacks() = default;
  virtual void onUpstreamInformational(const ResponseHead& head) = 0;
  // The final head; returns false when the exchange is done with it (the connection is released).
  virtual bool onUpstreamHead(const ResponseHead& head, BodyFraming framing) = 0;
  virtual void onUpstreamBody(const char* data, size_t len) = 0;
  // The response is complete; the exchange releases the connection.
  virtual void onUpstreamComplete() = 0;
  // The connection failed (it is closed already and no longer the exchange's).
  virtual void onUpstreamError(UpstreamError error, int status) = 0;
  // The request body may flow again (the backend took what was queued).
  virtual void onUpstreamWritable() = 0;
  // The response reads are held back because the client does not take them.
  virtual void onUpstreamHeldBack() = 0;
  // A 101: returns false (then 502) when it is not a valid answer to the handshake.
  virtual bool onUpstreamUpgrade(const ResponseHead& head) = 0;
  // After the 101 is parsed: the exchange takes the stream over (handOver()) with the bytes that
  // followed the 101's head.
  virtual void onUpstreamUpgraded(std::string_view early) = 0;
  // The client's side, corked while a read of the response is parsed (head and body in one write).
  virtual net::Transport& downstreamTransport() = 0;
};

class UpstreamConnection : public net::Stream::Handler,
                           public ResponseParser::Handler,
                           public upstream::Pooled {
 public:
  UpstreamConnection(Worker* worker, std::string key, std::string address, size_t pool,
                     metrics::BackendSlot* slot, upstream::BackendState* state);
  ~UpstreamConnection() override;
  upstream::BackendState* state() const { return state_; }

  // Runs TLS toward the backend (before connect()).
  void startTls(std::shared_ptr<const net::ClientTls> tls, const std::string& host);
  // Starts connecting to `addr`. Returns false when the connect could not even start.
  bool connect(const sockaddr* addr, conf::Duration timeout);
  // Binds this connection to a request.
  void attach(UpstreamCallbacks* exchange, conf::Duration response_timeout, bool head_request,
              bool upgrade);
  void write(std::string_view data) { stream_.write(data); }
  void write(const uv_buf_t* bufs, unsigned n) { stream_.write(bufs, n); }
  net::Stream& stream() { return stream_; }
  // The whole request is queued: response_timeout may start.
  void requestSent();
  // Backpressure. The time a peer takes is the peer's: while sluice holds back its reads from
  // one side because the other side does not keep up, the slow side's timeout runs, not the
  // held-back side's. The client does not take the response: the response timeout stops (the
  // client's runs). The backend does not take the request body: the response timeout runs
  // (awaitDrain) until it does.
  void pauseReading();
  void resumeReading();
  void awaitDrain();
  bool aboveHighWatermark() const { return stream_.aboveHighWatermark(); }
  // After an upgrade: gives the stream (and its counters) to a ws::Session and retires.
  std::unique_ptr<net::Stream> handOver();
  metrics::BackendSlot* slot() const { return slot_; }
  // Goes idle in the worker's pool when `reusable` and nothing about the connection is in doubt,
  // otherwise closes.
  void release(bool reusable, uint32_t max_idle, conf::Duration idle_timeout);
  void close();
  const std::string& address() const { return address_; }
  size_t pool() const { return pool_; }
  // How long this connection took to connect (and shake hands), in ms; -1 when it served a
  // request before the current one (reused from the keep-alive pool) or is not up yet.
  double connectMs() const { return reused_ ? -1 : connect_ms_; }

  // upstream::Pooled
  const std::string& poolKey() const override { return key_; }
  bool backendAvailable(uint64_t now_ms) const override;
  void closeIdle() override;

  // net::Stream::Handler
  void onConnected(int status) override;
  void onData(const char* data, size_t len) override;
  void onEof() override;
  void onError(int status) override;
  void onWritable() override;
  void onClosed() override;
  void onTlsHandshake(const char* failure) override;

  // ResponseParser::Handler
  void onInformational(const ResponseHead& head) override;
  bool onUpgrade(const ResponseHead& head) override;
  bool onHead(const ResponseHead& head, BodyFraming framing) override;
  void onBody(const char* data, size_t len) override;

 private:
  static void onTimer(void* self);
  static void onTimerClosed(void* self);
  // response_timeout from now (when it is on).
  void armResponseTimeout();
  void fail(UpstreamError error, int status);
  void setInUse(bool in_use);
  void handleClosed();

  Worker* worker_;
  std::string key_;      // the keep-alive pool key (BackendRuntime::upstream_key)
  std::string address_;  // the backend address, for logs
  size_t pool_;
  std::unique_ptr<net::Stream> stream_owner_;
  net::Stream& stream_;
  net::Deadline timer_;
  ResponseParser parser_;
  net::OpenHandles handles_{2};  // the stream and the timer
  bool closing_ = false;
  bool handed_over_ = false;
  bool connected_ = false;
  bool idle_ = false;
  bool upgrade_ = false;       // the request asks for an upgrade
  bool message_done_ = false;  // the response is complete
  bool request_sent_ = false;  // the whole request is queued (response_timeout may start)
  bool keep_alive_ = false;
  bool in_use_ = false;  // counted in state_->active
  uint64_t response_bytes_ = 0;
  uint64_t connect_start_ = 0;  // uv_hrtime()
  double connect_ms_ = -1;
  bool attached_before_ = false;
  bool reused_ = false;
  conf::Duration response_timeout_{0};
  UpstreamCallbacks* exchange_ = nullptr;
  metrics::BackendSlot* slot_;
  upstream::BackendState* state_;  // may be null (no shared state bound)
  std::shared_ptr<const net::ClientTls> tls_;
};

}  // namespace sluice::http
