#pragma once

// Choosing a backend. Pure code over a pool's backends and their shared state, so that
// distributions, key movement and bounded load are unit-tested directly.
//
// - round_robin: smooth weighted round robin (per worker).
// - random: weighted random (per worker generator).
// - least_conn: power of two choices on open connections / weight, from counts shared by all
//   workers, so one worker's view includes the others' connections.
// - consistent_hash: a Maglev lookup table (weights respected) on the hash of the request's key;
//   adding or removing one of N backends moves about 1/N of the keys. A key stays on its backend
//   whatever the load unless bounded load is asked for (hash_balance_factor > 0, off by default
//   as in HAProxy and Envoy): then a backend above (1 + factor) x its share of the connections
//   in flight, and above kBoundedLoadFloor, is skipped for the next entry of the key's probe
//   sequence, so one hot key cannot sink a backend. The floor keeps light load from breaking
//   affinity: with one request in flight over three backends the share is below one, and a key
//   whose previous request was still being released on its backend would hop to another.

#include <cstdint>
#include <optional>
#include <random>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "proxy/upstream/backend_state.h"

namespace sluice::upstream {

// Per worker, per pool: the mutable part of balancing.
struct PickState {
  std::vector<int64_t> rr_current;  // smooth weighted round robin
};

class Balancer {
 public:
  // Bounded load never skips a backend with fewer connections in flight than this.
  static constexpr int64_t kBoundedLoadFloor = 4;

  // `states[i]` is backend i's shared state.
  Balancer(const conf::PoolConfig& pool, std::vector<BackendState*> states);

  // A backend index, or none when no backend may take a connection. `key` is used by
  // consistent_hash (an empty key falls back to round robin); `exclude` is skipped.
  std::optional<size_t> pick(PickState& st, std::mt19937_64& rng, std::string_view key,
                             std::optional<size_t> exclude, uint64_t now_ms) const;

  size_t size() const { return weights_.size(); }
  // The Maglev table (exposed for tests): entry -> backend index.
  const std::vector<int32_t>& table() const { return table_; }
  static uint64_t hash(std::string_view key);

 private:
  bool eligible(size_t i, int exclude, uint64_t now_ms) const;
  int roundRobin(PickState& st, int exclude, uint64_t now_ms) const;
  int random(std::mt19937_64& rng, int exclude, uint64_t now_ms) const;
  int leastConn(std::mt19937_64& rng, int exclude, uint64_t now_ms) const;
  int consistent(PickState& st, std::string_view key, int exclude, uint64_t now_ms) const;
  void buildTable(const conf::PoolConfig& pool);

  conf::Balance kind_;
  double balance_factor_;
  std::vector<uint32_t> weights_;
  std::vector<BackendState*> states_;
  std::vector<int32_t> table_;  // Maglev lookup table, prime size
};

}  // namespace sluice::upstream
