#pragma once

// A proxied WebSocket after the 101. It takes over the client's and the backend's streams from
// the HTTP connection objects, which are then freed: a long-lived WebSocket keeps only what it
// needs (two streams, a timer, the relay and a few lines for its access log entry).

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

#include "proxy/client_session.h"
#include "proxy/filter_manager.h"
#include "proxy/memory_budget.h"
#include "proxy/metrics.h"
#include "proxy/net/open_handles.h"
#include "proxy/net/stream.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/backend_state.h"
#include "proxy/ws/relay.h"

namespace sluice {
class Worker;
}

namespace sluice::ws {

class Session : public ClientSession, public Relay::Owner, public MemoryBudget::Holder {
 public:
  struct Setup {
    Worker* worker = nullptr;
    SnapshotPtr snapshot;
    size_t listener = 0;
    size_t route = 0;
    size_t pool = 0;
    size_t backend = 0;
    std::unique_ptr<net::Stream> client;
    std::unique_ptr<net::Stream> upstream;
    std::unique_ptr<FilterManager> filters;  // null on a route without filters
    Relay::Compression compression;          // permessage-deflate as negotiated on each leg
    // Counted for the whole life of the connection; the session gives them back at its end.
    metrics::ListenerSlot* listener_slot = nullptr;
    metrics::BackendSlot* backend_slot = nullptr;
    upstream::BackendState* backend_state = nullptr;
    // For the access log entry (the method is always GET). Views into the upgrading exchange,
    // valid until start() returns: the session packs them into one string of its own (copies
    // here were an allocation each).
    std::string_view client_ip;
    std::string_view host;
    std::string_view path;
    std::string_view request_id;
    std::string_view user_agent;
    std::string_view referer;
    const char* tls_version = "";  // OpenSSL's static names; "" on plain connections
    const char* tls_cipher = "";
    bool access_log = true;  // the route's access_log
    double upstream_connect_ms = -1;
    double upstream_response_ms = -1;
    std::chrono::steady_clock::time_point start;
  };

  // Starts relaying; `early_client` / `early_upstream` are bytes that arrived with the handshake.
  static void start(Setup setup, std::string_view early_client, std::string_view early_upstream);

  // ClientSession
  void shutdownGracefully() override {}  // WebSockets run on until shutdown_timeout
  void abort() override;
  void onSnapshotChanged(const Snapshot& next) override;
  void drainNow(const char* cause) override;
  bool webSocketTo(const std::string& pool, const std::string& address) const override;

 private:
  // One stream's events, told apart by side.
  struct Side : net::Stream::Handler {
    Side(Session* s, bool client) : session(s), is_client(client) {}
    void onData(const char* data, size_t len) override;
    void onEof() override;
    void onError(int status) override;
    void onWritable() override;
    void onClosed() override;
    Session* session;
    bool is_client;
  };

  explicit Session(Setup&& setup);
  ~Session() override;
  void relayFinished() override;
  void lingerExpired() override { closeAll(); }
  void shed() override { relay_->shed(); }
  // After input: what the relay holds now, for the worker's budget.
  void account();
  void peerGone(bool client);
  void closeAll();
  void handleClosed();
  void upstreamClosed();
  void writeAccessLog();

  // What the session keeps of its Setup: the log fields packed into one buffer (a long-lived
  // WebSocket should not carry four strings for one log line).
  struct Kept {
    Worker* worker;
    SnapshotPtr snapshot;
    size_t listener, route, pool, backend;
    std::unique_ptr<net::Stream> client;
    std::unique_ptr<net::Stream> upstream;
    metrics::ListenerSlot* listener_slot;
    metrics::BackendSlot* backend_slot;
    upstream::BackendState* backend_state;
    std::string log;  // client_ip \0 host \0 path \0 request_id \0 user_agent \0 referer
    std::chrono::steady_clock::time_point start;
    const char* tls_version;
    const char* tls_cipher;
    float upstream_connect_ms;
    float upstream_response_ms;
    bool access_log;
  };
  std::string_view logField(int index) const;

  Kept s_;
  Side client_side_{this, true};
  Side upstream_side_{this, false};
  std::unique_ptr<Relay> relay_;
  metrics::RouteSlot* route_slot_;
  bool lingering_ = false;  // the relay finished: the sides are being closed gracefully
  bool closing_ = false;
  net::OpenHandles handles_{2};  // the client and the upstream stream
};

}  // namespace sluice::ws
