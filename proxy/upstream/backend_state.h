#pragma once

// Runtime state of one backend, shared by every worker and kept across reloads (keyed by pool
// name and address): open connections (for least_conn and bounded-load hashing), health from
// active checks, passive ejection after consecutive failures, and operator draining.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace sluice::upstream {

enum class Health : uint8_t { kHealthy, kUnhealthy };

struct BackendState {
  std::atomic<int64_t> active{0};  // open upstream connections, WebSockets included, all workers
  std::atomic<uint8_t> health{static_cast<uint8_t>(Health::kHealthy)};
  std::atomic<bool> admin_drain{false};  // POST .../drain
  // Passive checks: consecutive connect failures or 5xx; ejected until `ejected_until_ms`
  // (steady clock), for a period that doubles with each ejection in a row.
  std::atomic<uint32_t> consecutive_failures{0};
  std::atomic<uint32_t> ejections{0};
  std::atomic<uint64_t> ejected_until_ms{0};
  // Active checks (written by the main thread only): consecutive results.
  std::atomic<uint32_t> check_successes{0};
  std::atomic<uint32_t> check_failures{0};

  bool healthy() const { return health.load(std::memory_order_relaxed) == 0; }
  bool draining() const { return admin_drain.load(std::memory_order_relaxed); }
  bool ejected(uint64_t now_ms) const {
    return ejected_until_ms.load(std::memory_order_relaxed) > now_ms;
  }
  // May take new connections.
  bool available(uint64_t now_ms) const { return healthy() && !draining() && !ejected(now_ms); }
  // "healthy", "unhealthy" or "draining", as in /api/status and sluice_backend_state.
  const char* stateName(uint64_t now_ms) const;

  // Passive health: a success resets the failure count; the Nth consecutive failure ejects.
  void recordSuccess();
  // Returns true when this failure ejected the backend.
  bool recordFailure(uint64_t now_ms);

  static constexpr uint32_t kFailuresToEject = 3;
  static constexpr uint64_t kBaseEjectMs = 5000;
  static constexpr uint64_t kMaxEjectMs = 300000;
};

class BackendStates {
 public:
  // Main thread only; states live as long as the process.
  BackendState* get(const std::string& pool, const std::string& address) {
    auto& slot = states_[pool + "\n" + address];
    if (!slot) {
      slot = std::make_unique<BackendState>();
    }
    return slot.get();
  }

 private:
  std::map<std::string, std::unique_ptr<BackendState>> states_;
};

uint64_t steadyNowMs();

}  // namespace sluice::upstream
