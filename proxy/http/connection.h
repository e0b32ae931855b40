#pragma once

// The HTTP/1.1 data path. A DownstreamConnection is one client connection: it parses requests
// with llhttp (strict), routes them, and relays each to an UpstreamConnection, one request at a
// time (pipelined requests wait their turn, so responses keep their order). Bodies stream in both
// directions with watermark backpressure; nothing is buffered whole.

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <llhttp.h>
#include <uv.h>

#include "filters/filter.h"
#include "proxy/client_session.h"
#include "proxy/http/message.h"
#include "proxy/http/request_parser.h"
#include "proxy/metrics.h"
#include "proxy/net/deadline.h"
#include "proxy/net/stream.h"
#include "proxy/snapshot.h"

namespace sluice {
class Worker;
}

namespace sluice::http {

class UpstreamConnection;

// What went wrong toward a backend, as seen by the downstream side.
enum class UpstreamError {
  kConnectFailed,        // refused, unreachable, or connect_timeout
  kResetBeforeResponse,  // closed or reset before any response byte
  kTimeout,              // response_timeout
  kBadResponse,          // unparsable response
  kTruncated,            // closed in the middle of the response
};

class DownstreamConnection : public ClientSession,
                             public net::Stream::Handler,
                             public RequestParser::Handler,
                             public filters::HeadCallbacks,
                             public filters::RequestView {
 public:
  DownstreamConnection(Worker* worker, size_t listener_index);
  ~DownstreamConnection() override;

  // Accepts from `server` and starts reading. Returns false (and closes) on failure.
  // Takes an accepted socket; `peer` is the client's address.
  bool accept(int fd, const sockaddr_storage& peer);
  // ClientSession (an HTTP connection; its WebSocket, if any, is a ws::Session of its own)
  void shutdownGracefully() override;
  void abort() override;
  void onSnapshotChanged(const Snapshot&) override {}  // takes the new config per request
  void drainNow() override {}
  bool webSocketTo(const std::string&, const std::string&) const override { return false; }

  // --- called by the UpstreamConnection serving this request ---
  void onUpstreamInformational(const ResponseHead& head);
  // `framing` is how the backend delimits the body. Returns true when the response has no
  // body (HEAD request).
  bool onUpstreamResponseHead(const ResponseHead& head, BodyFraming framing);
  void onUpstreamBody(const char* data, size_t len);
  void onUpstreamComplete();
  void onUpstreamError(UpstreamError error, int status);
  void onUpstreamWritable();
  // The upstream stopped reading the response because the client does not take it as fast.
  void awaitClientDrain();
  // The backend answered an upgrade with 101. Returns false (the caller answers 502) when the
  // answer is not a valid WebSocket handshake for this request.
  bool onUpstreamUpgrade(const ResponseHead& head);
  // After the 101 has been parsed (and relayed): hands both streams to a ws::Session, with the
  // bytes that followed the backend's 101 head, and retires this connection.
  void startWebSocket(std::string_view early_upstream);
  net::Stream& stream() { return stream_; }

  // net::Stream::Handler
  void onData(const char* data, size_t len) override;
  void onEof() override;
  void onError(int status) override;
  void onWritable() override;
  void onClosed() override;
  void onTlsHandshake(const char* failure) override;

 private:
  enum class State {
    kReadingHead,  // waiting for (the rest of) a request head
    kProxying,     // a request is being relayed
    kUpgraded,     // handed over to a ws::Session; this object is being retired
    kClosing,      // sending the last bytes, then closing
  };
  // kBody: the longest pause inside the request body (idle_timeout); kSend: the longest the
  // client may leave a response unread while sluice holds the backend back (idle_timeout).
  enum class TimerMode { kNone, kHandshake, kHeader, kIdle, kBody, kSend, kLinger };

  static void onTimer(void* self);
  static void onTimerClosed(void* self);

  // RequestParser::Handler
  void onMessageBegin() override;
  RequestParser::HeadAction onHead() override;
  bool onBody(const char* data, size_t len) override;
  void onMessageComplete() override;

  // filters::HeadCallbacks
  void resume(filters::HeadDecision decision) override;
  // filters::RequestView
  std::string_view method() const override { return request_.method; }
  std::string_view path() const override { return request_.url; }
  std::string_view host() const override;
  std::optional<std::string_view> header(std::string_view name) const override;
  std::string_view clientIp() const override { return client_ip_; }
  bool webSocketUpgrade() const override { return websocket_; }

  void parse(const char* data, size_t len);
  // Runs the route's head filters from `from`; returns false when the request was answered or
  // a filter paused it.
  bool runHeadFilters(size_t from);
  void afterHeadFilters();
  bool checkWebSocketHandshake();
  metrics::FilterSlot& filterSlot(size_t chain_index) const;
  void observeUpstreamLatency();
  void adoptCurrentSnapshot();
  int stickyBackend(const Snapshot& snap, size_t pool) const;
  std::string_view cookieValue(std::string_view name) const;
  void balanceKey(const conf::PoolConfig& pool, std::string* key) const;
  void logNoBackend(const Snapshot& snap, size_t pool) const;
  std::string stickyHeader() const;
  std::string extraResponseHeaders() const;  // sticky cookie, HSTS
  std::string hstsHeader() const;
  upstream::BackendState* backendState() const;
  void processPendingInput();
  void startUpstream(int exclude_backend);
  void sendRequestHeadUpstream();
  void forwardBody(const char* data, size_t len);
  void finishRequestBody();
  void respondLocal(uint16_t status, std::string_view detail, bool close_after,
                    std::string_view extra_headers = {});
  void finishExchange();
  void writeAccessLog();
  void releaseUpstream(bool reusable);
  void closeSoon();
  void closeNow();
  void maybeDelete();
  void armTimer(TimerMode mode, conf::Duration d);
  const conf::ListenerConfig& listener() const;
  bool clientWantsKeepAlive() const;

  Worker* worker_;
  SnapshotPtr snapshot_;
  size_t listener_index_;
  std::unique_ptr<net::Stream> stream_owner_;  // handed to a ws::Session after an upgrade
  net::Stream& stream_;
  net::Deadline timer_;
  TimerMode timer_mode_ = TimerMode::kNone;
  bool timer_closed_ = false;
  bool stream_closed_ = false;
  bool closing_ = false;
  bool registered_ = false;
  State state_ = State::kReadingHead;

  RequestParser parser_;
  std::string pending_input_;  // bytes read while a request was in flight
  bool parser_paused_ = false;
  bool parser_failed_ = false;
  bool client_eof_ = false;
  bool shutdown_ = false;
  bool saw_request_bytes_ = false;  // some byte of the next request has arrived

  // The current request (its head lives in parser_).
  const RequestHead& request_;
  std::string method_;  // kept for the access log
  std::string client_ip_;
  std::string request_id_;
  int route_ = -1;
  int backend_ = -1;
  int attempts_ = 0;
  BodyFraming request_framing_;
  BodyFraming response_framing_;
  bool head_request_ = false;
  bool websocket_ = false;      // a valid WebSocket upgrade request
  bool sticky_hit_ = false;     // the sticky cookie chose the backend
  bool listener_gone_ = false;  // a reload removed this connection's listener
  bool in_parse_ = false;
  bool tls_ = false;                        // a TLS listener's connection
  std::string client_subject_;              // verified client certificate's subject
  net::Stream* corked_upstream_ = nullptr;  // corked during parse(), uncorked at its end
  bool expect_continue_ = false;
  bool filter_paused_ = false;  // a head filter paused; resume() continues
  bool in_head_filters_ = false;
  size_t filter_index_ = 0;
  std::optional<filters::HeadDecision> inline_resume_;
  std::vector<std::unique_ptr<filters::StreamFilter>> stream_filters_;

  bool request_complete_ = false;
  bool response_started_ = false;
  bool response_complete_ = false;
  bool keep_alive_ = true;
  uint16_t status_ = 0;
  uint64_t body_in_ = 0;
  uint64_t bytes_out_ = 0;
  std::string local_error_;
  std::chrono::steady_clock::time_point request_start_;
  std::string head_buffer_;    // scratch for building heads
  std::string upstream_head_;  // the request head sent upstream, kept for a retry
  UpstreamConnection* upstream_ = nullptr;
  uint64_t upstream_start_ = 0;  // uv_hrtime() when the request head went upstream
  metrics::ListenerSlot* listener_slot_ = nullptr;
  bool handed_over_ = false;  // counters and streams now belong to a ws::Session
};

class UpstreamConnection : public net::Stream::Handler {
 public:
  UpstreamConnection(Worker* worker, std::string key, std::string address, size_t pool,
                     metrics::BackendSlot* slot, upstream::BackendState* state);
  upstream::BackendState* state() const { return state_; }
  ~UpstreamConnection() override;

  // Runs TLS toward the backend (before connect()).
  void startTls(std::shared_ptr<const net::ClientTls> tls, const std::string& host);
  void onTlsHandshake(const char* failure) override;
  // Starts connecting to `addr`. Returns false when the connect could not even start.
  bool connect(const sockaddr* addr, conf::Duration timeout);
  // Binds this connection to a request. `reused` = it came from the keep-alive pool.
  void attach(DownstreamConnection* down, conf::Duration response_timeout, bool head_request,
              bool upgrade);
  void write(std::string_view data) { stream_.write(data); }
  void write(const uv_buf_t* bufs, unsigned n) { stream_.write(bufs, n); }
  void requestSent();
  // Backpressure. The time a peer takes is the peer's: while sluice holds back its reads from
  // one side because the other side does not keep up, the slow side's timeout runs, not the
  // held-back side's. The client does not take the response: the response timeout stops (the
  // client's runs). The backend does not take the request body: the response timeout runs
  // (awaitDrain) until it does.
  void pauseReading();
  void resumeReading();
  void awaitDrain();
  // After an upgrade: gives the stream (and its counters) to a ws::Session and retires.
  std::unique_ptr<net::Stream> handOver();
  metrics::BackendSlot* slot() const { return slot_; }
  bool aboveHighWatermark() const { return stream_.aboveHighWatermark(); }
  // Goes idle in the worker's pool when `reusable`, otherwise closes.
  void release(bool reusable, uint32_t max_idle, conf::Duration idle_timeout);
  void close();
  const std::string& key() const { return key_; }
  const std::string& address() const { return address_; }
  size_t pool() const { return pool_; }
  net::Stream& stream() { return stream_; }

  // net::Stream::Handler
  void onConnected(int status) override;
  void onData(const char* data, size_t len) override;
  void onEof() override;
  void onError(int status) override;
  void onWritable() override;
  void onClosed() override;

 private:
  static int cbMessageBegin(llhttp_t* p);
  static int cbStatus(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderField(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int cbHeadersComplete(llhttp_t* p);
  static int cbBody(llhttp_t* p, const char* at, size_t len);
  static int cbMessageComplete(llhttp_t* p);
  static const llhttp_settings_t& settings();
  static void onTimer(void* self);
  static void onTimerClosed(void* self);
  // response_timeout from now (when it is on).
  void armResponseTimeout();
  void fail(UpstreamError error, int status);
  void maybeDelete();

  Worker* worker_;
  std::string key_;      // the keep-alive pool key (Snapshot::upstream_keys)
  std::string address_;  // the backend address, for logs
  size_t pool_;
  std::unique_ptr<net::Stream> stream_owner_;
  net::Stream& stream_;
  net::Deadline timer_;
  bool timer_closed_ = false;
  bool stream_closed_ = false;
  bool closing_ = false;
  bool handed_over_ = false;
  bool connected_ = false;
  bool idle_ = false;
  bool head_request_ = false;
  bool upgrade_ = false;   // the request asks for an upgrade
  bool upgraded_ = false;  // the backend answered 101
  bool message_done_ = false;
  bool request_sent_ = false;  // the whole request is queued (response_timeout may start)
  bool keep_alive_ = false;
  uint64_t response_bytes_ = 0;
  const char* bad_response_ = nullptr;  // why a response head was refused
  conf::Duration response_timeout_{0};
  llhttp_t parser_;
  ResponseHead response_;
  bool last_was_value_ = false;
  DownstreamConnection* down_ = nullptr;
  metrics::BackendSlot* slot_;
  upstream::BackendState* state_;  // may be null (no shared state bound)
  std::shared_ptr<const net::ClientTls> tls_;
  bool in_use_ = false;  // counted in state_->active
  void setInUse(bool in_use);
};

}  // namespace sluice::http
