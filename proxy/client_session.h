#pragma once

// What a worker knows of each client connection it accepted: an HTTP connection
// (http::DownstreamConnection) or, after an upgrade, a WebSocket session (ws::Session). The
// worker drives shutdown, reload and drains through this interface.

#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice {

struct Snapshot;
class Worker;

class ClientSession {
 public:
  virtual ~ClientSession() = default;
  // Graceful shutdown: idle connections close now, busy ones after their current exchange.
  virtual void shutdownGracefully() = 0;
  // Shutdown timeout: end now (a WebSocket gets 1001).
  virtual void abort() = 0;
  // A reload published `next`: a WebSocket whose route or backend it removed is scheduled to be
  // drained after the pool's drain_timeout.
  virtual void onSnapshotChanged(const Snapshot& next) = 0;
  // The drain deadline passed: close the WebSocket with 1012 (the client should reconnect).
  // `cause` says why, for the access log: "drain", "reload" or "rebalance".
  virtual void drainNow(const char* cause) = 0;
  // A live WebSocket session to this backend of this pool.
  virtual bool webSocketTo(const std::string& pool, const std::string& address) const = 0;

 private:
  friend class Worker;
  // Where the worker's list of connections holds this one: unregistering takes O(1), not a
  // search through every open connection.
  size_t worker_slot_ = SIZE_MAX;
};

}  // namespace sluice
