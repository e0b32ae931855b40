#pragma once

// The HTTP/1.1 server side of one client connection: the transport (TLS included), the request
// parser, pipelining (requests that arrive while one is in flight wait, so responses keep their
// order), the framing sluice writes toward the client, the connection's timeouts (TLS handshake,
// request head, keep-alive idle, body gaps, a client not reading) and keep-alive. Each request is
// an Exchange (routing, filters, the backend, the access log), fed through the Downstream
// interface. After a 101 the transport goes to a ws::Session and this object retires.

#include <sys/socket.h>

#include <memory>
#include <string>

#include "proxy/client_session.h"
#include "proxy/http/exchange.h"
#include "proxy/http/request_parser.h"
#include "proxy/memory_budget.h"
#include "proxy/metrics.h"
#include "proxy/net/deadline.h"
#include "proxy/net/open_handles.h"
#include "proxy/net/proxy_protocol.h"
#include "proxy/net/stream.h"
#include "proxy/snapshot.h"

namespace sluice {
class Worker;
}

namespace sluice::http {

class ServerConnection : public ClientSession,
                         public net::Stream::Handler,
                         public RequestParser::Handler,
                         public Downstream,
                         public MemoryBudget::Holder {
 public:
  ServerConnection(Worker* worker, size_t listener_index);
  ~ServerConnection() override;

  // Freed connections' memory is kept per thread for the next ones: at about 1.5 KB the object
  // is past malloc's per-thread cache, and a trip through its slower paths cost about as much as
  // the rest of accepting a connection.
  static void* operator new(size_t size);
  static void operator delete(void* p, size_t size);

  // Takes an accepted socket (`peer` is the client's address) and starts reading. Returns false
  // (and closes) on failure.
  bool accept(int fd, const sockaddr_storage& peer);

  // ClientSession
  void shutdownGracefully() override;
  void abort() override;
  void onSnapshotChanged(const Snapshot&) override {}  // takes the new config per request
  void drainNow(const char*) override {}
  bool webSocketTo(const std::string&, const std::string&) const override { return false; }

  // net::Stream::Handler
  void onData(const char* data, size_t len) override;
  void onEof() override;
  void onError(int status) override;
  void onWritable() override;
  void onClosed() override;
  void onTlsHandshake(const char* failure) override;

  // Downstream
  Worker& worker() override { return *worker_; }
  const SnapshotPtr& snapshot() const override { return snapshot_; }
  size_t listenerIndex() const override { return listener_index_; }
  std::string_view clientIp() const override { return client_ip_; }
  bool tls() const override { return tls_; }
  const char* tlsVersion() const override;
  const char* tlsCipher() const override;
  std::string_view clientSubject() const override { return client_subject_; }
  uint64_t connectionId() const override { return connection_id_; }
  uint32_t requestsBegun() const override { return requests_begun_; }
  metrics::ListenerSlot* listenerSlot() override { return listener_slot_; }
  net::Transport& transport() override { return stream_; }
  void sendInformational(const ResponseHead& head) override;
  void sendHead(const ResponseHead& head, BodyFraming upstream_framing,
                std::string_view extra_headers, bool close_after) override;
  void sendBody(const char* data, size_t len) override;
  void endBody() override;
  bool sendLocalReply(uint16_t status, std::string_view detail, bool close_after,
                      std::string_view extra_headers) override;
  void send100Continue() override;
  void resetStream() override { closeNow(); }
  void exchangeDone() override;
  void abandonRequest() override;
  bool closing() const override { return closing_ || state_ == State::kClosing; }
  void expectBody() override;
  void resumeRequest() override;
  void readDisable(ReadReason reason, bool disable) override;
  void awaitClientDrain() override;
  std::unique_ptr<net::Stream> takeOver(std::string* early_input) override;
  void heldBytesChanged(size_t bytes) override;

  // MemoryBudget::Holder
  void shed() override;

 private:
  enum class State {
    kReadingHead,  // waiting for (the rest of) a request head
    kProxying,     // a request is being relayed
    kUpgraded,     // handed over to a ws::Session; this object is being retired
    kClosing,      // sending the last bytes, then closing
  };
  // kBody: the longest pause inside the request body (idle_timeout); kSend: the longest the
  // client may leave a response unread while sluice holds the backend back (idle_timeout).
  enum class TimerMode { kNone, kProxyHeader, kHandshake, kHeader, kIdle, kBody, kSend, kLinger };
  static constexpr uint8_t kPipelineFull = 4;  // a ReadReason of the codec's own

  static void onTimer(void* self);
  static void onTimerClosed(void* self);
  // The stream or the timer has closed (or the stream was handed over): the last one frees this.
  void handleClosed();

  // RequestParser::Handler
  void onMessageBegin() override;
  RequestParser::HeadAction onHead() override;
  bool onBody(const char* data, size_t len) override;
  void onMessageComplete() override;

  void parse(const char* data, size_t len);
  // The PROXY protocol header (listeners with proxy_protocol), before anything else.
  void readProxyHeader(const char* data, size_t len);
  // TLS or not, once the connection's first bytes may come: arms the first timeout.
  bool startTransport();
  // header_timeout, or less during shutdown (a fresh connection gets a short grace).
  conf::Duration firstHeaderTimeout() const;
  conf::Duration idleTimeout() const { return exchange_.idleTimeout(listener().idle_timeout); }
  void processPendingInput();
  // A local answer outside an exchange's own (timeouts, bad requests): through the exchange when
  // one is under way, so that it lets go of its backend and logs.
  void answer(uint16_t status, const char* detail);
  void finishExchange();
  void adoptCurrentSnapshot();
  void setReadDisabled(uint8_t reason, bool disable);
  std::string hstsHeader() const;
  void closeSoon();
  void closeNow();
  void armTimer(TimerMode mode, conf::Duration d);
  const conf::ListenerConfig& listener() const;
  bool clientWantsKeepAlive() const { return parser_.keepAlive(); }

  Worker* worker_;
  SnapshotPtr snapshot_;
  size_t listener_index_;
  std::unique_ptr<net::Stream> stream_owner_;  // handed to a ws::Session after an upgrade
  net::Stream& stream_;
  net::Deadline timer_;
  TimerMode timer_mode_ = TimerMode::kNone;
  State state_ = State::kReadingHead;
  net::OpenHandles handles_{2};  // the stream and the timer
  bool closing_ = false;
  bool registered_ = false;
  bool handed_over_ = false;  // counters and streams now belong to a ws::Session

  RequestParser parser_;
  std::string pending_input_;  // bytes read while a request was in flight
  bool parser_paused_ = false;
  bool parser_failed_ = false;
  bool client_eof_ = false;
  bool shutdown_ = false;
  bool saw_request_bytes_ = false;  // some byte of the next request has arrived
  bool listener_gone_ = false;      // a reload removed this connection's listener
  bool in_parse_ = false;
  bool done_pending_ = false;  // the exchange finished inside parse(): finish after it
  bool keep_alive_ = true;
  bool tls_ = false;
  bool served_ = false;        // a request has been answered on this connection
  uint8_t read_disabled_ = 0;  // ReadReason bits
  std::unique_ptr<net::ProxyProtocolParser> proxy_header_;  // until the PROXY header is read
  Framing response_framing_ = Framing::kNone;
  uint64_t connection_id_ = 0;
  uint32_t requests_begun_ = 0;
  std::string client_ip_;
  std::string client_subject_;  // verified client certificate's subject
  std::string head_buffer_;     // scratch for building heads
  metrics::ListenerSlot* listener_slot_ = nullptr;
  Exchange exchange_;
};

}  // namespace sluice::http
