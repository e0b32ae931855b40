#pragma once

// Cluster-wide limits: the buckets live in Redis, as GCRA state (one key per limited entity and
// rate, with an expiry) updated by a Lua script run with EVALSHA (loaded again with SCRIPT LOAD
// when Redis answers NOSCRIPT). Redis's own clock (TIME) is the clock, so instances need not
// agree on the time.
//
// Not every request or message costs a round trip: each worker takes a lease of up to `budget`
// tokens per key at once and spends it locally, asking for more when half of it is gone (before
// it runs out, so traffic under the limit never waits). Tokens are taken from the shared bucket
// before they are spent, so the cluster never spends more than the bucket allows; what leases
// change is *when*: tokens granted to one worker may be spent up to `lease_ttl` later (unspent
// ones are then given up: kLeaseTtlMs). Over any window, a cluster of N instances with W workers
// each spends at most rate x window + burst + N x W x budget tokens. That last term is the
// overshoot.
//
// When Redis does not answer (down, timing out), the store says so (kFallback) and the filter
// applies on_store_error; it stops asking until the client has reconnected.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "filters/filter.h"
#include "filters/ratelimit/gcra.h"
#include "filters/ratelimit/key_table.h"
#include "filters/redis.h"

namespace sluice::filters::ratelimit {

// The script: KEYS[1] the bucket; ARGV: emission interval (µs per token), bucket capacity (µs:
// burst x interval), tokens wanted. Returns {granted, wait_us, remaining, reset_us}: `granted`
// tokens (0 when none conform: `wait_us` until one would), what is left, and when the bucket is
// full again.
extern const char* const kGcraScript;

// Unspent tokens of a lease are given up this long after they were granted.
inline constexpr uint64_t kLeaseTtlMs = 1000;

class RedisStore {
 public:
  enum class Answer : uint8_t {
    kAllow,     // tokens taken
    kDeny,      // over the limit: `wait_ns` until a take could conform
    kPending,   // no tokens here; more were asked for (a waiter hears the answer)
    kFallback,  // the store cannot answer: apply on_store_error
  };
  struct Result {
    Answer answer = Answer::kAllow;
    int64_t wait_ns = 0;
    double remaining = 0;  // Redis's last word on the bucket (for response headers)
    int64_t reset_ns = 0;
  };
  // Something waiting for a lease to be refilled (a request, or a shaped stream).
  class Waiter {
   public:
    virtual ~Waiter() = default;
    virtual void onStoreAnswer(Scope scope, const Result& result) = 0;
  };

  struct Counters {
    Counter calls_ok;      // round trips answered
    Counter calls_failed;  // round trips that failed (no answer, or an error reply)
  };

  // `budget[s]`: tokens per lease for scope s (0: scope unused).
  RedisStore(std::unique_ptr<RedisClient> client, Dispatcher& dispatcher, std::string prefix,
             const Gcra* rates, const double* budget, size_t max_leases, Counters counters);
  ~RedisStore();
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  // Takes `cost` tokens of `key`'s `scope` bucket. kPending only when `waiter` is given: it hears
  // the answer later (once), unless cancelled. With `force` (a frame that passes anyway), a take
  // that finds no tokens still charges them, as debt the next lease pays.
  Result take(Scope scope, std::string_view key, double cost, Waiter* waiter, bool force);
  // The waiter goes away: it hears nothing more.
  void cancel(Waiter* waiter);

  // Redis is known to be unavailable (a call failed, and the client has not reconnected since).
  bool down();
  const std::string& downReason() const { return down_reason_; }
  size_t leases() const { return leases_.size(); }
  RedisClient& client() { return *client_; }

  // The Redis key of `key`'s `scope` bucket: the prefix, the scope, and the key itself when short
  // and printable, or its SHA-256 (so that any key makes a bounded, safe Redis key).
  std::string redisKey(Scope scope, std::string_view key) const;

 private:
  struct Waiting {
    Waiter* waiter;
    double cost;
  };
  struct Lease {
    std::string key;
    Scope scope = kRequests;
    double tokens = 0;  // negative: debt
    uint64_t expires_ms = 0;
    uint64_t denied_until_ms = 0;
    uint64_t used_ms = 0;
    bool pending = false;
    double remaining = 0;
    int64_t reset_ns = 0;
    std::vector<Waiting> waiters;
  };

  Lease& lease(Scope scope, std::string_view key);
  void refill(Lease& lease, double extra);
  void call(std::string map_key, std::vector<std::string> args, bool retried);
  void onReply(const std::string& map_key, RedisReply reply);
  void onFailure(const std::string& map_key, const std::string& why);
  void serve(const std::string& map_key);
  void evictIdle();
  uint64_t now() const { return dispatcher_.nowMs(); }

  std::unique_ptr<RedisClient> client_;
  Dispatcher& dispatcher_;
  std::string prefix_;
  Gcra rates_[kRateScopes];
  double budget_[kRateScopes];
  size_t max_leases_;
  Counters counters_;
  std::string sha_;
  std::unordered_map<std::string, Lease> leases_;  // scope byte + key
  bool down_ = false;
  std::string down_reason_;
  uint64_t last_sweep_ms_ = 0;
};

}  // namespace sluice::filters::ratelimit
