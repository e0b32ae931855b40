#pragma once

// type "ratelimit": limits on requests, connections and WebSocket messages, by key (the client's
// address, a header, a cookie, a verified claim, the route, or several together) or per
// connection, local to the process or shared through Redis. docs/filters/ratelimit.md is the
// operator's reference; the pieces:
//
// - gcra.h: the bucket arithmetic (one number of state per bucket);
// - key_table.h: the process's bounded table of keys (per filter, kept across reloads);
// - redis_store.h: the same buckets in Redis, spent through per-worker leases.
//
// HTTP limits (requests, new connections, concurrent connections) are judged on the request
// head: 429 with Retry-After and the RateLimit-Policy / RateLimit fields, or a delay (shape).
// Message limits are judged on each frame's header, so messages are never assembled for them:
// a message over the limit is dropped whole, the session closed, or the sender's reading
// paused until the bucket has room again (shape: TCP backpressure, nothing lost).

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/filter.h"
#include "filters/ratelimit/gcra.h"
#include "filters/ratelimit/key_table.h"

namespace sluice::filters::ratelimit {

enum class Action : uint8_t { kReject, kShape, kDrop, kClose };
enum class OnStoreError : uint8_t { kAllow, kDeny, kLocal };

// What a decision was, as the metric's `decision` label says it.
enum Decision : uint8_t { kAllow, kReject, kShape, kDrop, kClose, kShadow, kDecisionCount };
const char* decisionName(Decision d);

// One part of a key.
struct KeyPart {
  enum class Kind : uint8_t { kSourceIp, kHeader, kCookie, kQuery, kClaim, kRoute };
  Kind kind = Kind::kSourceIp;
  std::string name;  // header, cookie, parameter or claim name
};

struct Settings {
  std::vector<KeyPart> key{KeyPart{}};
  std::string key_text = "source_ip";  // as configured, for logs
  std::optional<Gcra> rates[kRateScopes];
  uint32_t concurrent = 0;  // 0: no limit
  bool per_connection = false;
  Action action = Action::kReject;
  uint16_t close_code = 1008;
  bool shadow = false;
  conf::Duration max_delay{1000};  // shaping HTTP: longest delay before a 429 instead
  bool limit_client_messages = true;
  bool limit_backend_messages = false;
  size_t max_keys = 65536;
  // store = "redis"
  bool redis = false;
  RedisOptions redis_options;
  std::string redis_prefix = "sluice:ratelimit:";
  double budget[kRateScopes] = {0, 0, 0, 0};  // tokens per round trip (0: the default)
  uint32_t instances = 1;
  OnStoreError on_store_error = OnStoreError::kLocal;
};

class RateLimitFilter : public Filter {
 public:
  RateLimitFilter(std::string name, Settings settings);
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  uint8_t phases() const override;
  std::unique_ptr<StreamFilter> create() const override;
  std::shared_ptr<WorkerState> createWorkerState(Dispatcher& dispatcher) const override;
  void bindStats(Stats& stats) override;

  const Settings& settings() const { return settings_; }
  KeyTable& table() const { return *table_; }
  // The bucket a rate falls back to when Redis is unavailable (rate / instances).
  const Gcra& fallback(Scope s) const { return fallback_[s]; }

  // Metrics (empty handles count nothing).
  void count(unsigned worker, Scope scope, Decision decision) const {
    decisions_[scope][decision].inc(worker);
  }
  void noteTable(unsigned worker, const KeyTable::Effect& e) const;
  void noteShaped(unsigned worker, int64_t ns) const;
  void noteStoreError(unsigned worker) const { store_errors_.inc(worker); }
  // A shadow decision, logged at most once a second (with how many were not).
  void logShadow(Scope scope, std::string_view key) const;
  void logStore(bool down, std::string_view why) const;

  // The headers of a 429 for `scope` (Retry-After, RateLimit-Policy, RateLimit).
  std::string rejectHeaders(Scope scope, int64_t wait_ns, double remaining, int64_t reset_ns) const;

 private:
  Settings settings_;
  std::shared_ptr<KeyTable> table_;
  Gcra fallback_[kRateScopes];
  Counter decisions_[kScopeCount][kDecisionCount];
  Counter evictions_;
  Gauge table_keys_;
  LatencyHistogram shaped_;
  Counter redis_ok_, redis_failed_;
  Counter store_errors_;
  mutable std::atomic<uint64_t> shadow_logged_ms_{0};
  mutable std::atomic<uint64_t> shadow_unlogged_{0};
};

}  // namespace sluice::filters::ratelimit
