#include "proxy/upstream/balancer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace sluice::upstream {

uint64_t steadyNowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

const char* BackendState::stateName(uint64_t now_ms) const {
  if (draining()) {
    return "draining";
  }
  return healthy() && !ejected(now_ms) ? "healthy" : "unhealthy";
}

void BackendState::recordSuccess() {
  if (consecutive_failures.load(std::memory_order_relaxed) != 0) {
    consecutive_failures.store(0, std::memory_order_relaxed);
  }
  if (ejections.load(std::memory_order_relaxed) != 0 &&
      ejected_until_ms.load(std::memory_order_relaxed) == 0) {
    ejections.store(0, std::memory_order_relaxed);
  }
}

bool BackendState::recordFailure(uint64_t now_ms) {
  uint32_t n = consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n < kFailuresToEject || ejected(now_ms)) {
    return false;
  }
  uint32_t k = std::min<uint32_t>(ejections.fetch_add(1, std::memory_order_relaxed), 6);
  uint64_t period = std::min<uint64_t>(kBaseEjectMs << k, kMaxEjectMs);
  ejected_until_ms.store(now_ms + period, std::memory_order_relaxed);
  consecutive_failures.store(0, std::memory_order_relaxed);
  return true;
}

// A fixed 64-bit hash (FNV-1a, then a splitmix64 finaliser): stable across processes and
// versions, so that several sluice instances map a key to the same backend.
uint64_t Balancer::hash(std::string_view key) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : key) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  h += 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

Balancer::Balancer(const conf::PoolConfig& pool, std::vector<BackendState*> states)
    : kind_(pool.balance), balance_factor_(pool.hash_balance_factor), states_(std::move(states)) {
  for (const conf::BackendConfig& b : pool.backends) {
    weights_.push_back(b.weight);
  }
  if (kind_ == conf::Balance::kConsistentHash) {
    buildTable(pool);
  }
}

void Balancer::buildTable(const conf::PoolConfig& pool) {
  // Maglev (Eisenbud et al., NSDI 2016): each backend walks its own permutation of the table and
  // claims the next free entry, `weight` times per round, until the table is full.
  const size_t n = pool.backends.size();
  const uint64_t m = n <= 40 ? 4093 : 65537;  // prime, and much larger than N
  uint64_t total_weight = 0;
  for (uint32_t w : weights_) {
    total_weight += w;
  }
  if (total_weight == 0) {
    return;
  }
  std::vector<uint64_t> offset(n), skip(n), next(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& name = pool.backends[i].address.text;
    offset[i] = hash(name) % m;
    skip[i] = hash(std::string(name) + "#skip") % (m - 1) + 1;
  }
  table_.assign(m, -1);
  uint64_t filled = 0;
  while (filled < m) {
    for (size_t i = 0; i < n && filled < m; ++i) {
      for (uint32_t turn = 0; turn < weights_[i] && filled < m; ++turn) {
        uint64_t c = (offset[i] + next[i] * skip[i]) % m;
        while (table_[c] >= 0) {
          ++next[i];
          c = (offset[i] + next[i] * skip[i]) % m;
        }
        table_[c] = static_cast<int32_t>(i);
        ++next[i];
        ++filled;
      }
    }
  }
}

bool Balancer::eligible(size_t i, int exclude, uint64_t now_ms) const {
  return weights_[i] > 0 && static_cast<int>(i) != exclude &&
         (states_.empty() || states_[i] == nullptr || states_[i]->available(now_ms));
}

std::optional<size_t> Balancer::pick(PickState& st, std::mt19937_64& rng, std::string_view key,
                                     std::optional<size_t> exclude_backend, uint64_t now_ms) const {
  // Inside, backends are ints with -1 for none (the Maglev table's own convention).
  const int exclude = exclude_backend ? static_cast<int>(*exclude_backend) : -1;
  int chosen = -1;
  switch (kind_) {
    case conf::Balance::kRoundRobin:
      chosen = roundRobin(st, exclude, now_ms);
      break;
    case conf::Balance::kRandom:
      chosen = random(rng, exclude, now_ms);
      break;
    case conf::Balance::kLeastConn:
      chosen = leastConn(rng, exclude, now_ms);
      break;
    case conf::Balance::kConsistentHash:
      chosen = key.empty() ? roundRobin(st, exclude, now_ms) : consistent(st, key, exclude, now_ms);
      break;
  }
  return chosen >= 0 ? std::optional<size_t>(static_cast<size_t>(chosen)) : std::nullopt;
}

int Balancer::roundRobin(PickState& st, int exclude, uint64_t now_ms) const {
  // Smooth weighted round robin (as nginx): every pick adds each weight to its counter, takes
  // the largest counter and subtracts the total from it.
  if (st.rr_current.size() != weights_.size()) {
    st.rr_current.assign(weights_.size(), 0);
  }
  int64_t total = 0;
  int best = -1;
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (!eligible(i, exclude, now_ms)) {
      continue;
    }
    st.rr_current[i] += weights_[i];
    total += weights_[i];
    if (best < 0 || st.rr_current[i] > st.rr_current[static_cast<size_t>(best)]) {
      best = static_cast<int>(i);
    }
  }
  if (best >= 0) {
    st.rr_current[static_cast<size_t>(best)] -= total;
  }
  return best;
}

int Balancer::random(std::mt19937_64& rng, int exclude, uint64_t now_ms) const {
  uint64_t total = 0;
  for (size_t i = 0; i < weights_.size(); ++i) {
    total += eligible(i, exclude, now_ms) ? weights_[i] : 0;
  }
  if (total == 0) {
    return -1;
  }
  uint64_t r = rng() % total;
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (!eligible(i, exclude, now_ms)) {
      continue;
    }
    if (r < weights_[i]) {
      return static_cast<int>(i);
    }
    r -= weights_[i];
  }
  return -1;
}

int Balancer::leastConn(std::mt19937_64& rng, int exclude, uint64_t now_ms) const {
  // Power of two choices, weighted: two random candidates (by weight), the one with fewer open
  // connections per unit of weight wins. With two eligible backends this is exact least-conn.
  int a = random(rng, exclude, now_ms);
  if (a < 0) {
    return -1;
  }
  int b = random(rng, a, now_ms);
  if (b < 0 || b == exclude) {
    return a;
  }
  auto load = [&](int i) {
    int64_t active = states_.empty() || states_[static_cast<size_t>(i)] == nullptr
                         ? 0
                         : states_[static_cast<size_t>(i)]->active.load(std::memory_order_relaxed);
    return static_cast<double>(active) / weights_[static_cast<size_t>(i)];
  };
  double la = load(a);
  double lb = load(b);
  if (la != lb) {
    return la < lb ? a : b;
  }
  return (rng() & 1) != 0 ? a : b;
}

int Balancer::consistent(PickState& st, std::string_view key, int exclude, uint64_t now_ms) const {
  if (table_.empty()) {
    return -1;
  }
  const bool bounded = balance_factor_ > 0;
  // Bounded load: capacity_i = ceil((1 + c) * (total + 1) * w_i / W) over eligible backends.
  int64_t total = 0;
  uint64_t weight_sum = 0;
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (eligible(i, exclude, now_ms)) {
      weight_sum += weights_[i];
      total += states_.empty() || states_[i] == nullptr
                   ? 0
                   : states_[i]->active.load(std::memory_order_relaxed);
    }
  }
  if (weight_sum == 0) {
    return -1;
  }
  const uint64_t m = table_.size();
  uint64_t start = hash(key) % m;
  int first_eligible = -1;
  // The probe sequence is the table from the key's entry on; visiting up to m entries finds
  // every backend, and each backend is judged once.
  thread_local std::vector<uint8_t> seen;
  seen.assign(weights_.size(), 0);
  size_t judged = 0;
  for (uint64_t step = 0; step < m && judged < weights_.size(); ++step) {
    int b = table_[(start + step) % m];
    if (b < 0 || seen[static_cast<size_t>(b)]) {
      continue;
    }
    seen[static_cast<size_t>(b)] = 1;
    ++judged;
    if (!eligible(static_cast<size_t>(b), exclude, now_ms)) {
      continue;
    }
    if (first_eligible < 0) {
      first_eligible = b;
      if (!bounded) {
        return b;
      }
    }
    int64_t active = states_.empty() || states_[static_cast<size_t>(b)] == nullptr
                         ? 0
                         : states_[static_cast<size_t>(b)]->active.load(std::memory_order_relaxed);
    double capacity = std::ceil((1.0 + balance_factor_) * static_cast<double>(total + 1) *
                                weights_[static_cast<size_t>(b)] / static_cast<double>(weight_sum));
    if (active < kBoundedLoadFloor || static_cast<double>(active) < capacity) {
      return b;
    }
  }
  (void)st;
  return first_eligible;
}

}  // namespace sluice::upstream
