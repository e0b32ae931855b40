#include "filters/ratelimit/redis_store.h"

#include <cmath>

#include <openssl/evp.h>

namespace sluice::filters::ratelimit {

// Times are µs since 2020-09-13 (an offset keeps them near 1e14, where a double still resolves
// fractions of a µs). A bucket that is full again is the same as no key: the key expires then.
// A take larger than the whole bucket passes when the bucket is full (as Gcra::conforms).
const char* const kGcraScript = R"lua(
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1600000000) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', key) or '0') or 0
if tat < now then tat = now end
local backlog = tat - now
local n = math.floor((capacity - backlog) / interval + 1e-9)
if n > want then n = want end
if backlog == 0 and n < want and want * interval > capacity then n = want end
if n < 1 then
  return {0, math.ceil(backlog + interval - capacity), 0, math.ceil(backlog)}
end
tat = tat + n * interval
redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
local left = math.floor((capacity - (tat - now)) / interval + 1e-9)
if left < 0 then left = 0 end
return {n, 0, left, math.ceil(tat - now)}
)lua";

namespace {

std::string hexDigest(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(size_t{len} * 2);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[out[i] >> 4]);
    hex.push_back(kHex[out[i] & 15]);
  }
  return hex;
}

const char* scopeCode(Scope s) {
  switch (s) {
    case kRequests:
      return "req";
    case kConnections:
      return "conn";
    case kMessages:
      return "msg";
    case kMessageBytes:
      return "bytes";
    default:
      return "?";
  }
}

std::string mapKey(Scope scope, std::string_view key) {
  std::string k(1, static_cast<char>('0' + scope));
  k.append(key);
  return k;
}

}  // namespace

RedisStore::RedisStore(std::unique_ptr<RedisClient> client, Dispatcher& dispatcher,
                       std::string prefix, const Gcra* rates, const double* budget,
                       size_t max_leases, Counters counters)
    : client_(std::move(client)),
      dispatcher_(dispatcher),
      prefix_(std::move(prefix)),
      max_leases_(std::max<size_t>(max_leases, 16)),
      counters_(counters),
      sha_(hexDigest(EVP_sha1(), kGcraScript)) {
  for (int s = 0; s < kRateScopes; ++s) {
    rates_[s] = rates[s];
    budget_[s] = std::max(1.0, budget[s]);
  }
}

RedisStore::~RedisStore() = default;  // the client drops its calls: no callback runs after this

std::string RedisStore::redisKey(Scope scope, std::string_view key) const {
  bool plain = key.size() <= 128;
  for (char c : key) {
    plain = plain && c > 0x20 && c < 0x7f;
  }
  std::string k = prefix_ + scopeCode(scope) + ":";
  if (plain) {
    k.append(key);
  } else {
    k.append("sha256:").append(hexDigest(EVP_sha256(), key));
  }
  return k;
}

bool RedisStore::down() {
  if (down_ && client_->connected()) {
    down_ = false;  // reconnected: ask again
  }
  return down_;
}

RedisStore::Lease& RedisStore::lease(Scope scope, std::string_view key) {
  std::string k = mapKey(scope, key);
  auto it = leases_.find(k);
  if (it != leases_.end()) {
    return it->second;
  }
  Lease& l = leases_[k];  // (take() made room first)
  l.key = std::string(key);
  l.scope = scope;
  return l;
}

void RedisStore::evictIdle() {
  // Leases nobody waits on can go: their unspent tokens are given up (under-use, never overuse).
  // First those unused for a lease's lifetime, then any idle one until a quarter is free.
  uint64_t t = now();
  auto idle = [](const Lease& l) { return !l.pending && l.waiters.empty(); };
  std::erase_if(leases_, [&](const auto& e) {
    return idle(e.second) && e.second.used_ms + kLeaseTtlMs <= t;
  });
  for (auto it = leases_.begin(); it != leases_.end() && leases_.size() > max_leases_ * 3 / 4;) {
    it = idle(it->second) ? leases_.erase(it) : std::next(it);
  }
}

RedisStore::Result RedisStore::take(Scope scope, std::string_view key, double cost, Waiter* waiter,
                                    bool force) {
  if (leases_.size() >= max_leases_ && leases_.find(mapKey(scope, key)) == leases_.end()) {
    // A sweep is O(leases): at most one per millisecond, whatever a flood of new keys asks.
    if (now() != last_sweep_ms_) {
      last_sweep_ms_ = now();
      evictIdle();
    }
    if (leases_.size() >= max_leases_) {
      // Every lease is busy (a flood of new keys, each waiting for Redis): no room for another.
      down_reason_ = "more keys waiting for Redis than max_keys";
      return Result{Answer::kFallback};
    }
  }
  Lease& l = lease(scope, key);
  uint64_t t = now();
  l.used_ms = t;
  if (l.tokens > 0 && t >= l.expires_ms && !l.pending) {
    l.tokens = 0;  // a stale lease: its tokens are given up
  }
  Result r;
  r.remaining = l.remaining;
  r.reset_ns = l.reset_ns;
  const double budget = budget_[scope];
  if (l.tokens >= cost) {
    l.tokens -= cost;
    // Ask for more before it runs out, so that traffic under the limit never waits.
    if (l.tokens < budget / 2 && !l.pending && t >= l.denied_until_ms && !down()) {
      refill(l, 0);
    }
    return r;
  }
  if (t < l.denied_until_ms) {
    if (force) {
      l.tokens -= cost;
    }
    r.answer = Answer::kDeny;
    r.wait_ns = static_cast<int64_t>(l.denied_until_ms - t) * 1000000;
    return r;
  }
  if (down()) {
    r.answer = Answer::kFallback;
    return r;
  }
  if (!l.pending) {
    refill(l, cost - l.tokens);
  }
  if (waiter == nullptr || force) {
    // A frame cannot wait: while more tokens are on their way it may run up a debt of up to one
    // budget (paid by the next lease); beyond that it waits too (shaped) or is refused.
    if (l.tokens - cost >= -budget || force) {
      bool within = l.tokens - cost >= -budget;
      l.tokens -= cost;
      if (within) {
        return r;
      }
    }
    r.answer = Answer::kPending;
    if (waiter != nullptr) {
      l.waiters.push_back({waiter, 0});
    }
    return r;
  }
  l.waiters.push_back({waiter, cost});
  r.answer = Answer::kPending;
  return r;
}

void RedisStore::cancel(Waiter* waiter) {
  for (auto& [k, l] : leases_) {
    std::erase_if(l.waiters, [waiter](const Waiting& w) { return w.waiter == waiter; });
  }
}

void RedisStore::refill(Lease& l, double lack) {
  l.pending = true;
  const Gcra& g = rates_[l.scope];
  double want = std::ceil(budget_[l.scope] + std::max(0.0, lack));
  char interval[32];
  char capacity[32];
  snprintf(interval, sizeof interval, "%.6f", g.intervalNs() / 1000.0);
  snprintf(capacity, sizeof capacity, "%.6f", static_cast<double>(g.capacityNs()) / 1000.0);
  call(mapKey(l.scope, l.key),
       {"EVALSHA", sha_, "1", redisKey(l.scope, l.key), interval, capacity,
        std::to_string(static_cast<int64_t>(want))},
       false);
}

void RedisStore::call(std::string map_key, std::vector<std::string> args, bool retried) {
  std::vector<std::string> again = retried ? std::vector<std::string>{} : args;
  client_->command(std::move(args), [this, map_key = std::move(map_key),
                                     again = std::move(again)](RedisReply reply) mutable {
    if (reply.type == RedisReply::Type::kError && reply.str.starts_with("NOSCRIPT") &&
        !again.empty()) {
      // Redis lost the script (restarted, flushed): load it, then send the call again once.
      client_->command({"SCRIPT", "LOAD", kGcraScript},
                       [this, map_key, again = std::move(again)](const RedisReply& loaded) mutable {
                         if (loaded.type != RedisReply::Type::kString) {
                           onFailure(map_key, "SCRIPT LOAD: " + loaded.str);
                           return;
                         }
                         call(map_key, std::move(again), true);
                       });
      return;
    }
    onReply(map_key, std::move(reply));
  });
}

void RedisStore::onReply(const std::string& map_key, RedisReply reply) {
  bool ok = reply.type == RedisReply::Type::kArray && reply.elements.size() == 4;
  for (size_t i = 0; ok && i < 4; ++i) {
    ok = reply.elements[i].type == RedisReply::Type::kInteger;
  }
  if (!ok) {
    onFailure(map_key, reply.failed() || reply.type == RedisReply::Type::kError
                           ? reply.str
                           : "unexpected reply to the script");
    return;
  }
  counters_.calls_ok.inc(dispatcher_.workerId());
  auto it = leases_.find(map_key);
  if (it == leases_.end()) {
    return;  // evicted meanwhile: the tokens are given up
  }
  Lease& l = it->second;
  uint64_t t = now();
  int64_t granted = reply.elements[0].integer;
  int64_t wait_us = reply.elements[1].integer;
  l.pending = false;
  l.tokens += static_cast<double>(granted);
  l.expires_ms = t + kLeaseTtlMs;
  l.remaining = static_cast<double>(std::max<int64_t>(reply.elements[2].integer, 0));
  l.reset_ns = reply.elements[3].integer * 1000;
  if (granted <= 0) {
    l.denied_until_ms = t + static_cast<uint64_t>(std::max<int64_t>((wait_us + 999) / 1000, 1));
  }
  down_ = false;
  serve(map_key);
}

void RedisStore::serve(const std::string& map_key) {
  // A waiter's answer may take or cancel (and so change the leases): look the lease up afresh
  // after each one.
  for (;;) {
    auto it = leases_.find(map_key);
    if (it == leases_.end() || it->second.waiters.empty() || it->second.pending) {
      return;
    }
    Lease& l = it->second;
    Waiting w = l.waiters.front();
    Result r;
    r.remaining = l.remaining;
    r.reset_ns = l.reset_ns;
    uint64_t t = now();
    if (l.tokens >= w.cost) {
      l.tokens -= w.cost;
    } else if (t < l.denied_until_ms) {
      r.answer = Answer::kDeny;
      r.wait_ns = static_cast<int64_t>(l.denied_until_ms - t) * 1000000;
    } else {
      refill(l, w.cost - l.tokens);  // granted less than the waiters need: ask for the rest
      return;
    }
    l.waiters.erase(l.waiters.begin());
    w.waiter->onStoreAnswer(l.scope, r);
  }
}

void RedisStore::onFailure(const std::string& map_key, const std::string& why) {
  counters_.calls_failed.inc(dispatcher_.workerId());
  // Down until the client says it is connected again (an error reply on a live connection is
  // only this call's failure).
  down_ = !client_->connected();
  down_reason_ = why;
  auto it = leases_.find(map_key);
  if (it == leases_.end()) {
    return;
  }
  it->second.pending = false;
  std::vector<Waiting> waiters = std::move(it->second.waiters);
  it->second.waiters.clear();
  Scope scope = it->second.scope;
  for (const Waiting& w : waiters) {
    w.waiter->onStoreAnswer(scope, Result{Answer::kFallback});
  }
}

}  // namespace sluice::filters::ratelimit
