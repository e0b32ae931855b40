#pragma once

// One request and its response: routing, the route's filter chain, the backend choice (sticky
// cookie, balancer, one retry), the upstream connection, the response relayed back, local
// replies, and the access-log entry. An Exchange is fed by the connection its request came on
// through the Downstream interface: the HTTP/1.1 codec (ServerConnection) today, an HTTP/2
// stream later. The codec owns the transport, parsing, framing, timers and keep-alive; the
// exchange owns what one request means.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/filter_manager.h"
#include "proxy/http/compress.h"
#include "proxy/http/message.h"
#include "proxy/http/upstream.h"
#include "proxy/net/stream.h"
#include "proxy/snapshot.h"
#include "proxy/ws/deflate.h"
#include "proxy/ws/relay.h"

namespace sluice {
class Worker;
}

namespace sluice::http {

// What an exchange needs from the connection its request came on.
class Downstream {
 public:
  // Why reading the request is held back (counted apart, so that one never undoes another).
  enum ReadReason : uint8_t {
    kUpstreamFull = 1,  // the backend does not take the body as fast
    kFilter = 2,        // a filter paused the request
  };

  virtual ~Downstream() = default;
  virtual Worker& worker() = 0;
  virtual const SnapshotPtr& snapshot() const = 0;
  virtual size_t listenerIndex() const = 0;
  // The connection's peer (the PROXY protocol's client address when the listener uses it): the
  // exchange resolves the request's client from it and the forwarding headers.
  virtual std::string_view clientIp() const = 0;
  virtual bool tls() const = 0;
  // OpenSSL's names of the protocol version and cipher ("TLSv1.3"); "" on plain connections.
  virtual const char* tlsVersion() const = 0;
  virtual const char* tlsCipher() const = 0;
  virtual std::string_view clientSubject() const = 0;
  // The connection, unique in the process, and how many requests it has begun (this one too).
  virtual uint64_t connectionId() const = 0;
  virtual uint32_t requestsBegun() const = 0;
  virtual metrics::ListenerSlot* listenerSlot() = 0;
  virtual net::Transport& transport() = 0;

  // The response. `close_after`: the connection ends after it.
  virtual void sendInformational(const ResponseHead& head) = 0;
  virtual void sendHead(const ResponseHead& head, BodyFraming upstream_framing,
                        std::string_view extra_headers, bool close_after) = 0;
  virtual void sendBody(const char* data, size_t len) = 0;
  virtual void endBody() = 0;
  // Returns whether the connection stays open after it.
  virtual bool sendLocalReply(uint16_t status, std::string_view detail, bool close_after,
                              std::string_view extra_headers) = 0;
  virtual void send100Continue() = 0;
  // Part of the response is out and it cannot be finished: cut the connection.
  virtual void resetStream() = 0;
  // The exchange is over (request read, response written, access log written).
  virtual void exchangeDone() = 0;
  // The response ended before the request body did: the rest of it is not worth reading.
  virtual void abandonRequest() = 0;

  // The connection is ending (no more responses can be written on it).
  virtual bool closing() const = 0;

  // The request body: start its timeout once the head has gone on; hold back or resume reading.
  virtual void expectBody() = 0;
  // After HeadAction::kPause: parse on (the body, or the next request).
  virtual void resumeRequest() = 0;
  virtual void readDisable(ReadReason reason, bool disable) = 0;
  // The response is held back because the client does not take it (the client's timeout runs).
  virtual void awaitClientDrain() = 0;
  // The exchange holds `bytes` in buffered bodies now (for the worker's memory budget).
  virtual void heldBytesChanged(size_t bytes) = 0;
  // After a 101: the client's stream and what it sent after the handshake; the connection is
  // retired.
  virtual std::unique_ptr<net::Stream> takeOver(std::string* early_input) = 0;
};

// Writes `data` as one chunk of a chunked body: size line, data, CRLF, in one write.
void writeChunk(net::Transport& out, const char* data, size_t len);

class Exchange : public UpstreamCallbacks, public FilterOwner {
 public:
  enum class HeadAction { kContinue, kPause, kStop };

  explicit Exchange(Downstream& downstream) : down_(downstream) {}
  ~Exchange() override;
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // --- from the codec ---
  // A request begins (the codec has adopted the latest snapshot).
  void begin();
  // The request head passed the codec's checks. kPause: the body waits unread until the exchange
  // resumes the codec; kStop: parsing stops (the request was answered and the connection ends).
  HeadAction onRequestHead(RequestHead& head, BodyFraming framing, bool http11);
  // Returns false when parsing should stop (answered, closing).
  bool onRequestBody(const char* data, size_t len);
  void onRequestComplete();
  void onDownstreamWritable();
  // The connection is going away (client gone, timeout, shutdown): let go of everything, log.
  void abort(std::string_view why);
  bool active() const { return active_; }
  // The request's client (after trusted proxies' headers); its address until a head arrived.
  std::string_view clientIp() const {
    return client_ip_.empty() ? down_.clientIp() : std::string_view(client_ip_);
  }
  // The gap allowed inside the request body and while the client leaves the response unread:
  // the route's idle_timeout when it sets one, else `listener_default`.
  conf::Duration idleTimeout(conf::Duration listener_default) const;
  bool requestComplete() const { return request_complete_; }
  // Buffered request body (a filter waits for it whole) and response body held behind a
  // response filter.
  size_t heldBytes() const;
  bool responseStarted() const { return response_started_; }
  // Ends what the last request left (filters' onDestroy, the snapshot it held).
  void reset();

  // UpstreamCallbacks
  void onUpstreamInformational(const ResponseHead& head) override;
  bool onUpstreamHead(const ResponseHead& head, BodyFraming framing) override;
  void onUpstreamBody(const char* data, size_t len) override;
  void onUpstreamComplete() override;
  void onUpstreamError(UpstreamError error, int status) override;
  void onUpstreamWritable() override;
  void onUpstreamHeldBack() override;
  bool onUpstreamUpgrade(const ResponseHead& head) override;
  void onUpstreamUpgraded(std::string_view early) override;
  net::Transport& downstreamTransport() override { return down_.transport(); }

  // FilterOwner
  void filterLocalReply(uint16_t status, std::string_view reason, std::string_view headers,
                        bool close_connection) override;
  void filterCloseWebSocket(filters::Direction from, uint16_t code,
                            std::string_view reason) override;
  void filterReadDisable(filters::Direction direction, bool disable) override;
  void onPhaseResumed(FilterOwner::Phase phase) override;
  void onMessageVerdict(filters::Direction direction,
                        const filters::MessageVerdict& verdict) override {}

  // Answers the request itself. `close_after`: the connection ends after the answer.
  void respondLocal(uint16_t status, std::string_view detail, bool close_after,
                    std::string_view extra_headers = {});

 private:
  const conf::RouteConfig& route() const;
  bool checkWebSocketHandshake();
  bool setUpFilters();
  void afterHeadFilters();
  void startUpstream(std::optional<size_t> exclude_backend);
  std::optional<size_t> stickyBackend(const Snapshot& snap, size_t pool) const;
  void logNoBackend(const Snapshot& snap, size_t pool) const;
  void appendStickyHeader(std::string* out) const;
  upstream::BackendState* backendState() const;
  void sendRequestHead();
  void forwardBody(const char* data, size_t len);
  void finishRequestBody();
  void sendResponseHead();
  // The response head toward the client, compressed when the route and the request ask for it.
  void startResponse(const ResponseHead& head, BodyFraming framing);
  void sendBody(const char* data, size_t len);
  void observeUpstreamLatency();
  void releaseUpstream(bool reusable);
  void finish();
  void writeAccessLog();
  // Sets client_ip_ and the X-Forwarded-* values from the peer, the trusted proxies and the
  // request's forwarding headers.
  void resolveClient(const RequestHead& head, std::string_view host);
  // " [listener=a route=b client=c request_id=d]" for error-log lines about this request.
  std::string logContext() const;
  // Appends the extra response header lines sluice adds: the sticky cookie and X-Request-Id
  // (unless the backend's response `head` has one).
  void appendResponseHeaders(const ResponseHead* head, std::string* out) const;
  // Those lines alone, in extra_headers_ (valid until the next call).
  std::string_view responseHeaders(const ResponseHead* head);
  // The route's response header rules applied to a copy of `head`, kept in held_head_.
  const ResponseHead& editedResponse(const ResponseHead& head);

  Downstream& down_;
  SnapshotPtr snapshot_;  // the request's config
  RequestHead* request_ = nullptr;
  bool active_ = false;
  std::string method_;  // kept for the access log; empty once logged
  std::string request_id_;
  std::string client_ip_;  // resolved per request
  std::string x_forwarded_for_;
  std::string x_forwarded_proto_;
  std::string x_forwarded_host_;
  // The extra response header lines, reused across the connection's requests (they were a few
  // string temporaries, so allocations, per response).
  std::string extra_headers_;
  std::string forwarded_;      // RFC 7239, on listeners that read Forwarded
  bool log_ = true;            // the route's access_log
  bool health_check_ = false;  // a health_path request: not logged, not counted
  double upstream_connect_ms_ = -1;
  double upstream_response_ms_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::optional<size_t> route_;
  std::optional<size_t> backend_;
  int attempts_ = 0;
  BodyFraming request_framing_;
  bool http11_ = true;
  bool head_request_ = false;
  bool websocket_ = false;   // a valid WebSocket upgrade request
  bool sticky_hit_ = false;  // the sticky cookie chose the backend
  bool expect_continue_ = false;
  bool request_complete_ = false;
  bool response_started_ = false;
  bool response_complete_ = false;
  bool head_stopped_ = false;  // the request head waits for a filter
  uint16_t status_ = 0;
  uint64_t body_in_ = 0;
  uint64_t bytes_out_ = 0;
  std::string local_error_;
  std::string upstream_head_;  // the request head sent upstream, kept for a retry
  UpstreamConnection* upstream_ = nullptr;
  uint64_t upstream_start_ = 0;  // uv_hrtime() when the request head went upstream
  std::unique_ptr<FilterManager> filters_;
  std::unique_ptr<Encoder> encoder_;  // gzip or brotli toward the client
  // permessage-deflate on an upgrade: the client's offers, the answer sluice gives the client,
  // the offer sent to the backend, and what each leg agreed on once the backend has answered.
  void negotiateDeflate();
  bool checkBackendDeflate(const ResponseHead& head, std::string* client_answer);
  std::vector<ws::DeflateParams> deflate_offers_;
  std::optional<ws::DeflateAnswer> deflate_answer_;
  std::string backend_offer_;
  ws::Relay::Compression compression_;
  // A response head waiting for a response filter, and the body that came meanwhile.
  std::optional<ResponseHead> held_head_;
  BodyFraming held_framing_;
  std::string held_body_;
  bool held_complete_ = false;
};

}  // namespace sluice::http
