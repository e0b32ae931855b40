#include "proxy/upstream/keepalive_pool.h"

#include <algorithm>

namespace sluice::upstream {

Pooled* KeepalivePool::take(const std::string& key, uint64_t now_ms) {
  auto it = idle_.find(key);
  if (it == idle_.end()) {
    return nullptr;
  }
  auto& idle = it->second;
  while (!idle.empty()) {
    Pooled* conn = idle.back();  // the most recently used
    idle.pop_back();
    if (conn->backendAvailable(now_ms)) {
      return conn;
    }
    conn->closeIdle();  // the backend is draining or failing now: not for new requests
  }
  return nullptr;
}

void KeepalivePool::put(Pooled* conn, uint32_t max_idle) {
  auto& idle = idle_[conn->poolKey()];
  while (idle.size() >= max_idle && !idle.empty()) {
    Pooled* oldest = idle.front();
    idle.pop_front();
    oldest->closeIdle();
  }
  idle.push_back(conn);
}

void KeepalivePool::remove(Pooled* conn) {
  auto it = idle_.find(conn->poolKey());
  if (it == idle_.end()) {
    return;
  }
  auto& idle = it->second;
  auto pos = std::find(idle.begin(), idle.end(), conn);
  if (pos != idle.end()) {
    idle.erase(pos);
  }
}

void KeepalivePool::closeIf(const std::function<bool(const std::string& key)>& drop) {
  for (auto& [key, idle] : idle_) {
    if (drop && !drop(key)) {
      continue;
    }
    // Popped before closeIdle(), so that the connection is never found here while closing.
    while (!idle.empty()) {
      Pooled* conn = idle.back();
      idle.pop_back();
      conn->closeIdle();
    }
  }
}

}  // namespace sluice::upstream
