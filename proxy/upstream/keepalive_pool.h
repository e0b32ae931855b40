#pragma once

// A worker's idle upstream connections, kept for reuse by key (pool, backend address and TLS
// settings: see BackendRuntime::upstream_key). At most `max_idle` per key: the oldest is closed to
// make room (as nginx's upstream keepalive does). The most recently used is taken first.

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>

namespace sluice::upstream {

// What the pool needs of a connection it holds.
class Pooled {
 public:
  virtual ~Pooled() = default;
  virtual const std::string& poolKey() const = 0;
  // Whether the connection's backend may take new requests now.
  virtual bool backendAvailable(uint64_t now_ms) const = 0;
  // Closes it; the pool has let go of it already.
  virtual void closeIdle() = 0;
};

class KeepalivePool {
 public:
  KeepalivePool() = default;
  KeepalivePool(const KeepalivePool&) = delete;
  KeepalivePool& operator=(const KeepalivePool&) = delete;

  // An idle connection for `key`, or null. Connections whose backend is no longer available are
  // closed on the way.
  Pooled* take(const std::string& key, uint64_t now_ms);
  void put(Pooled* conn, uint32_t max_idle);
  // A pooled connection closing on its own (the backend closed it, its idle timeout passed).
  void remove(Pooled* conn);
  // Closes the idle connections whose key `drop` selects (all of them without `drop`).
  void closeIf(const std::function<bool(const std::string& key)>& drop = {});

 private:
  std::unordered_map<std::string, std::deque<Pooled*>> idle_;
};

}  // namespace sluice::upstream
