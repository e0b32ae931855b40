#include "filters/ratelimit/ratelimit.h"

#include <chrono>
#include <cmath>
#include <fstream>

#include "filters/log.h"
#include "filters/options.h"
#include "filters/ratelimit/redis_store.h"
#include "filters/request_key.h"

namespace sluice::filters::ratelimit {

const char* decisionName(Decision d) {
  static constexpr const char* kNames[] = {"allow", "reject", "shape", "drop", "close", "shadow"};
  return d < kDecisionCount ? kNames[d] : "?";
}

namespace {

constexpr int64_t kNsPerMs = 1000000;
constexpr size_t kUp = 0;    // client to backend
constexpr size_t kDown = 1;  // backend to client

size_t dirIndex(Direction d) {
  return d == Direction::kDownstreamToUpstream ? kUp : kDown;
}
Direction dirOf(size_t i) {
  return i == kUp ? Direction::kDownstreamToUpstream : Direction::kUpstreamToDownstream;
}

// Key text for a log line: short printable text quoted, anything else only as its length, so
// that what a client sends can neither forge nor flood a line.
std::string forLog(std::string_view s) {
  bool plain = s.size() <= 64;
  for (char c : s) {
    plain = plain && c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  }
  return plain ? "\"" + std::string(s) + "\"" : "(" + std::to_string(s.size()) + " bytes)";
}

uint64_t steadyMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Per worker: the Redis store (store = "redis"), and whether its outage has been logged.
class Shard : public WorkerState {
 public:
  Shard(const RateLimitFilter& f, Dispatcher& d, std::unique_ptr<RedisClient> client,
        RedisStore::Counters counters) {
    const Settings& s = f.settings();
    Gcra rates[kRateScopes];
    double budget[kRateScopes] = {0, 0, 0, 0};
    for (int i = 0; i < kRateScopes; ++i) {
      if (s.rates[i]) {
        rates[i] = *s.rates[i];
        // By default a lease is a twentieth of a second's worth (a key at its limit costs each
        // worker twenty round trips a second), at most the burst.
        budget[i] =
            s.budget[i] > 0
                ? s.budget[i]
                : std::max(1.0, std::min(s.rates[i]->burst(), std::floor(s.rates[i]->rate() / 20)));
      }
    }
    store = std::make_unique<RedisStore>(std::move(client), d, s.redis_prefix + f.name() + ":",
                                         rates, budget, s.max_keys, counters);
  }
  std::unique_ptr<RedisStore> store;
  bool outage_logged = false;
};

class Stream : public StreamFilter, public RedisStore::Waiter {
 public:
  explicit Stream(const RateLimitFilter& f) : f_(f), s_(f.settings()) {}

  Status onRequestHead(RequestHead& head) override;
  Status onFrame(const FrameInfo& frame) override;
  void onDestroy() override;
  void onStoreAnswer(Scope scope, const RedisStore::Result& r) override;

 private:
  enum class Step : uint8_t { kNext, kWait, kEnded };

  unsigned worker() { return callbacks().dispatcher().workerId(); }
  int64_t nowNs() { return static_cast<int64_t>(callbacks().dispatcher().nowMs()) * kNsPerMs; }
  Shard* shard() { return static_cast<Shard*>(callbacks().workerState()); }
  RedisStore* store() {
    Shard* sh = shard();
    return sh != nullptr ? sh->store.get() : nullptr;
  }
  bool buildKey(const RequestHead& head);
  uint64_t hashFor(Scope scope, size_t dir) const;
  std::string redisKeyFor(size_t dir) const { return dir == kUp ? key_ : key_ + "\x1f<"; }

  // HTTP: the checks of this request in order, from `next_` on.
  Status runChecks();
  Step check(Scope scope);
  Step localCheck(Scope scope, uint64_t hash, const Gcra& gcra);
  Step storeAnswer(Scope scope, const RedisStore::Result& r);
  Step fallbackCheck(Scope scope);
  Step concurrencyCheck();
  void reject(Scope scope, int64_t wait_ns, double remaining, int64_t reset_ns);
  void delay(int64_t ns);
  void continueChecks();

  // WebSocket: one frame's take on one rate; false when the frame was dropped or the session
  // closed.
  bool frameCheck(Scope scope, double cost, size_t dir, bool charge_only);
  bool frameVerdict(Scope scope, size_t dir, bool conformed, bool charged, int64_t debt_ns,
                    bool charge_only);
  bool frameFallback(Scope scope, double cost, size_t dir, bool charge_only);
  void pause(size_t dir, int64_t ns);
  void unpause(size_t dir);
  void storeOutage(bool down);

  const RateLimitFilter& f_;  // kept alive by the stream's FilterManager
  const Settings& s_;
  std::string key_;
  uint64_t key_hash_ = 0;
  bool keyed_ = false;
  uint64_t conn_hash_ = 0;
  // HTTP
  Scope checks_[3] = {kRequests, kRequests, kRequests};
  size_t nchecks_ = 0;
  size_t next_ = 0;
  bool waiting_store_ = false;  // a request waits for Redis
  int64_t delayed_ns_ = 0;      // how long shaping has delayed this request so far
  int64_t current_delay_ns_ = 0;
  bool holds_connection_ = false;
  bool destroyed_ = false;
  std::unique_ptr<Timer> delay_timer_;
  // WebSocket, per direction
  int64_t own_tat_[2][2] = {{0, 0}, {0, 0}};  // per = "connection": [dir][messages, bytes]
  bool paused_[2] = {false, false};
  bool awaiting_store_[2] = {false, false};
  uint64_t paused_at_ms_[2] = {0, 0};
  std::unique_ptr<Timer> pause_timer_[2];
};

// ---- keys ----------------------------------------------------------------------------------

bool Stream::buildKey(const RequestHead& head) {
  const StreamInfo& info = callbacks().info();
  key_.clear();
  for (size_t i = 0; i < s_.key.size(); ++i) {
    const KeyPart& p = s_.key[i];
    std::string_view v;
    std::optional<std::string_view> attr;
    switch (p.kind) {
      case KeyPart::Kind::kSourceIp:
        v = info.client_ip;
        break;
      case KeyPart::Kind::kHeader:
        v = head.get(p.name).value_or(std::string_view());
        break;
      case KeyPart::Kind::kCookie:
        v = cookieValue(head, p.name);
        break;
      case KeyPart::Kind::kQuery:
        v = queryValue(head.url, p.name);
        break;
      case KeyPart::Kind::kClaim:
        attr = callbacks().attribute(p.name);  // "claim:NAME", set by the auth filter
        v = attr.value_or(std::string_view());
        break;
      case KeyPart::Kind::kRoute:
        v = info.route;
        break;
    }
    if (v.empty()) {
      return false;  // a request without the key is not limited by this filter
    }
    if (i > 0) {
      key_.push_back('\x1f');
    }
    key_.append(v);
  }
  key_hash_ = hashKey(key_);
  return true;
}

uint64_t Stream::hashFor(Scope scope, size_t dir) const {
  // Each direction has its own buckets: the backend's messages never spend the client's.
  return dir == kUp ? key_hash_ : key_hash_ ^ 0x9e3779b97f4a7c15ull;
}

// ---- HTTP ----------------------------------------------------------------------------------

Status Stream::onRequestHead(RequestHead& head) {
  const StreamInfo& info = callbacks().info();
  keyed_ = buildKey(head);
  if (s_.per_connection) {
    conn_hash_ = hashKey("\x01" + std::to_string(info.connection_id));
  }
  nchecks_ = next_ = 0;
  // A connection is counted at its first request (0: sluice could not say; counted too).
  if (s_.rates[kConnections] && keyed_ && info.connection_request <= 1) {
    checks_[nchecks_++] = kConnections;
  }
  if (s_.rates[kRequests] && (keyed_ || s_.per_connection)) {
    checks_[nchecks_++] = kRequests;
  }
  if (s_.concurrent > 0 && keyed_) {
    checks_[nchecks_++] = kConcurrent;
  }
  return runChecks();
}

Status Stream::runChecks() {
  while (next_ < nchecks_) {
    Step st = check(checks_[next_]);
    if (st == Step::kEnded) {
      return Status::kStop;  // answered (the reply ended the phases)
    }
    if (st == Step::kWait) {
      return Status::kStop;  // delayed, or waiting for Redis: continueChecks() goes on
    }
    ++next_;
  }
  return Status::kContinue;
}

void Stream::continueChecks() {
  if (destroyed_) {
    return;
  }
  if (runChecks() == Status::kContinue) {
    callbacks().resume();
  }
}

Stream::Step Stream::check(Scope scope) {
  if (scope == kConcurrent) {
    return concurrencyCheck();
  }
  const Gcra& g = *s_.rates[scope];
  bool own = scope == kRequests && s_.per_connection;
  RedisStore* st = own ? nullptr : store();
  if (st == nullptr) {
    return localCheck(scope, own ? conn_hash_ : key_hash_, g);
  }
  if (st->down()) {
    return fallbackCheck(scope);
  }
  RedisStore::Result r = st->take(scope, key_, 1, this, false);
  if (r.answer == RedisStore::Answer::kPending) {
    waiting_store_ = true;
    return Step::kWait;
  }
  return storeAnswer(scope, r);
}

Stream::Step Stream::localCheck(Scope scope, uint64_t hash, const Gcra& g) {
  unsigned w = worker();
  int64_t now = nowNs();
  bool shape = s_.action == Action::kShape && !s_.shadow;
  int64_t within = shape ? std::max<int64_t>(s_.max_delay.count() * kNsPerMs - delayed_ns_, 0)
                         : KeyTable::kOnlyConforming;
  KeyTable::Effect e;
  KeyTable::Take t = f_.table().take(hash, scope, g, now, 1, within, &e);
  f_.noteTable(w, e);
  if (t.conformed) {
    f_.count(w, scope, kAllow);
    return Step::kNext;
  }
  if (s_.shadow) {
    f_.count(w, scope, kShadow);
    f_.logShadow(scope, key_);
    return Step::kNext;
  }
  if (t.charged) {  // shaped: its turn comes after `wait`
    f_.count(w, scope, kShape);
    delay(t.wait_ns);
    ++next_;  // the token is paid for: the check is done once the delay is over
    return Step::kWait;
  }
  reject(scope, t.wait_ns, g.remaining(t.tat_before, now), g.resetNs(t.tat_before, now));
  return Step::kEnded;
}

Stream::Step Stream::storeAnswer(Scope scope, const RedisStore::Result& r) {
  unsigned w = worker();
  switch (r.answer) {
    case RedisStore::Answer::kAllow:
      storeOutage(false);
      f_.count(w, scope, kAllow);
      return Step::kNext;
    case RedisStore::Answer::kFallback:
      return fallbackCheck(scope);
    case RedisStore::Answer::kDeny:
    case RedisStore::Answer::kPending:
      break;
  }
  storeOutage(false);
  if (s_.shadow) {
    f_.count(w, scope, kShadow);
    f_.logShadow(scope, key_);
    return Step::kNext;
  }
  int64_t wait = std::max<int64_t>(r.wait_ns, kNsPerMs);
  if (s_.action == Action::kShape && delayed_ns_ + wait <= s_.max_delay.count() * kNsPerMs) {
    // Shared buckets are asked again once the wait is over (nothing is reserved in Redis).
    f_.count(w, scope, kShape);
    delay(wait);
    return Step::kWait;
  }
  reject(scope, wait, r.remaining, r.reset_ns);
  return Step::kEnded;
}

Stream::Step Stream::fallbackCheck(Scope scope) {
  unsigned w = worker();
  f_.noteStoreError(w);
  storeOutage(true);
  switch (s_.on_store_error) {
    case OnStoreError::kAllow:
      f_.count(w, scope, kAllow);
      return Step::kNext;
    case OnStoreError::kDeny:
      if (s_.shadow) {
        f_.count(w, scope, kShadow);
        return Step::kNext;
      }
      reject(scope, 1000 * kNsPerMs, 0, 0);
      return Step::kEnded;
    case OnStoreError::kLocal:
      break;
  }
  return localCheck(scope, key_hash_, f_.fallback(scope));
}

Stream::Step Stream::concurrencyCheck() {
  unsigned w = worker();
  KeyTable::Effect e;
  bool got = f_.table().acquire(key_hash_, s_.concurrent, nowNs(), &e);
  f_.noteTable(w, e);
  if (got) {
    holds_connection_ = true;  // released exactly once, in onDestroy
    f_.count(w, kConcurrent, kAllow);
    return Step::kNext;
  }
  if (s_.shadow) {
    f_.count(w, kConcurrent, kShadow);
    f_.logShadow(kConcurrent, key_);
    return Step::kNext;
  }
  reject(kConcurrent, 1000 * kNsPerMs, 0, 0);
  return Step::kEnded;
}

void Stream::reject(Scope scope, int64_t wait_ns, double remaining, int64_t reset_ns) {
  f_.count(worker(), scope, kReject);
  std::string reason = std::string("rate limited (") + scopeName(scope) + ")";
  // A refused connection ends: its next request would not count as a new connection.
  callbacks().sendLocalReply(429, reason, f_.rejectHeaders(scope, wait_ns, remaining, reset_ns),
                             scope == kConnections);
}

void Stream::delay(int64_t ns) {
  delayed_ns_ += ns;
  current_delay_ns_ = ns;
  if (!delay_timer_) {
    delay_timer_ = callbacks().dispatcher().createTimer([this] {
      f_.noteShaped(worker(), current_delay_ns_);
      continueChecks();
    });
  }
  delay_timer_->arm(std::chrono::milliseconds((ns + kNsPerMs - 1) / kNsPerMs));
}

void Stream::onStoreAnswer(Scope scope, const RedisStore::Result& r) {
  if (destroyed_) {
    return;
  }
  if (waiting_store_) {
    waiting_store_ = false;
    Step st = storeAnswer(scope, r);
    if (st == Step::kNext) {
      ++next_;
      continueChecks();
    }
    return;
  }
  // A shaped stream waited for a lease.
  for (size_t d = 0; d < 2; ++d) {
    if (!awaiting_store_[d]) {
      continue;
    }
    awaiting_store_[d] = false;
    if (r.answer == RedisStore::Answer::kFallback) {
      storeOutage(true);
    }
    if (r.answer == RedisStore::Answer::kDeny) {
      pause(d, r.wait_ns);
    } else {
      unpause(d);
    }
  }
}

void Stream::storeOutage(bool down) {
  Shard* sh = shard();
  if (sh == nullptr || sh->outage_logged == down) {
    return;
  }
  sh->outage_logged = down;
  f_.logStore(down, down ? sh->store->downReason() : std::string_view());
}

// ---- WebSocket -----------------------------------------------------------------------------

Status Stream::onFrame(const FrameInfo& frame) {
  size_t dir = dirIndex(frame.direction);
  if (dir == kUp ? !s_.limit_client_messages : !s_.limit_backend_messages) {
    return Status::kContinue;
  }
  if (!keyed_ && !s_.per_connection) {
    return Status::kContinue;  // the upgrade request had no key: not limited by this filter
  }
  // With `drop`, a message is judged whole at its first frame; its later frames are charged.
  bool judged_before = !frame.first && s_.action == Action::kDrop;
  if (s_.rates[kMessageBytes] && frame.frame_bytes > 0 &&
      !frameCheck(kMessageBytes, static_cast<double>(frame.frame_bytes), dir, judged_before)) {
    return Status::kContinue;
  }
  if (s_.rates[kMessages] && frame.first && !frameCheck(kMessages, 1, dir, false)) {
    return Status::kContinue;
  }
  return Status::kContinue;
}

bool Stream::frameCheck(Scope scope, double cost, size_t dir, bool charge_only) {
  const Gcra& g = *s_.rates[scope];
  bool shape = s_.action == Action::kShape && !s_.shadow;
  bool force = shape || charge_only;  // what passes anyway is paid for
  int64_t within = force ? KeyTable::kAlways : KeyTable::kOnlyConforming;
  int64_t now = nowNs();
  if (s_.per_connection) {
    // The connection's own bucket.
    int64_t& tat = own_tat_[dir][scope == kMessages ? 0 : 1];
    BucketTake t = takeBucket(tat, g, now, cost, within);
    return frameVerdict(scope, dir, t.conformed, t.charged, g.debtNs(tat, now), charge_only);
  }
  RedisStore* st = store();
  if (st == nullptr) {
    KeyTable::Effect e;
    KeyTable::Take t = f_.table().take(hashFor(scope, dir), scope, g, now, cost, within, &e);
    f_.noteTable(worker(), e);
    return frameVerdict(scope, dir, t.conformed, t.charged, g.debtNs(t.tat_after, now),
                        charge_only);
  }
  if (st->down()) {
    return frameFallback(scope, cost, dir, charge_only);
  }
  RedisStore::Result r =
      st->take(scope, redisKeyFor(dir), cost, shape && !charge_only ? this : nullptr, force);
  switch (r.answer) {
    case RedisStore::Answer::kAllow:
      storeOutage(false);
      return frameVerdict(scope, dir, true, true, 0, charge_only);
    case RedisStore::Answer::kFallback:
      return frameFallback(scope, cost, dir, charge_only);
    case RedisStore::Answer::kDeny:
      storeOutage(false);
      return frameVerdict(scope, dir, false, force, r.wait_ns, charge_only);
    case RedisStore::Answer::kPending:
      if (shape && !charge_only) {
        // Charged as debt; reading stays paused until Redis has answered.
        f_.count(worker(), scope, kShape);
        awaiting_store_[dir] = true;
        pause(dir, 0);
        return true;
      }
      return frameVerdict(scope, dir, false, force, 0, charge_only);
  }
  return true;
}

bool Stream::frameFallback(Scope scope, double cost, size_t dir, bool charge_only) {
  f_.noteStoreError(worker());
  storeOutage(true);
  switch (s_.on_store_error) {
    case OnStoreError::kAllow:
      return frameVerdict(scope, dir, true, true, 0, charge_only);
    case OnStoreError::kDeny:
      return frameVerdict(scope, dir, false, false, 1000 * kNsPerMs, charge_only);
    case OnStoreError::kLocal:
      break;
  }
  const Gcra& g = f_.fallback(scope);
  bool force = (s_.action == Action::kShape && !s_.shadow) || charge_only;
  int64_t now = nowNs();
  KeyTable::Effect e;
  KeyTable::Take t = f_.table().take(hashFor(scope, dir), scope, g, now, cost,
                                     force ? KeyTable::kAlways : KeyTable::kOnlyConforming, &e);
  f_.noteTable(worker(), e);
  return frameVerdict(scope, dir, t.conformed, t.charged, g.debtNs(t.tat_after, now), charge_only);
}

bool Stream::frameVerdict(Scope scope, size_t dir, bool conformed, bool charged, int64_t debt_ns,
                          bool charge_only) {
  unsigned w = worker();
  if (charge_only) {
    if (s_.action == Action::kShape) {
      pause(dir, debt_ns);
    }
    return true;  // a later frame of a message judged at its first
  }
  if (conformed) {
    f_.count(w, scope, kAllow);
    if (s_.action == Action::kShape && !s_.shadow) {
      pause(dir, debt_ns);  // a message larger than the bucket passes, then pays its debt
    }
    return true;
  }
  if (s_.shadow) {
    f_.count(w, scope, kShadow);
    f_.logShadow(scope, key_);
    return true;
  }
  switch (s_.action) {
    case Action::kShape:
      // The frame goes on (frames cannot wait); the sender's reading pauses until the bucket
      // has room again: TCP backpressure, nothing lost.
      f_.count(w, scope, kShape);
      pause(dir, charged ? debt_ns : 0);
      return true;
    case Action::kDrop:
      f_.count(w, scope, kDrop);
      callbacks().dropMessage(std::string("rate limited (") + scopeName(scope) + ")");
      return false;
    case Action::kReject:
    case Action::kClose:
      f_.count(w, scope, kClose);
      callbacks().closeWebSocket(s_.close_code,
                                 std::string("rate limited (") + scopeName(scope) + ")");
      return false;
  }
  return true;
}

void Stream::pause(size_t dir, int64_t ns) {
  if (ns <= 0 && !awaiting_store_[dir]) {
    return;
  }
  uint64_t now = callbacks().dispatcher().nowMs();
  if (!paused_[dir]) {
    paused_[dir] = true;
    paused_at_ms_[dir] = now;
    callbacks().readDisable(dirOf(dir), true);
  }
  if (ns <= 0) {
    return;  // until Redis answers (onStoreAnswer)
  }
  if (!pause_timer_[dir]) {
    pause_timer_[dir] = callbacks().dispatcher().createTimer([this, dir] { unpause(dir); });
  }
  auto ms = std::chrono::milliseconds((ns + kNsPerMs - 1) / kNsPerMs);
  // Frames of one read may each extend the pause: the timer keeps the latest end.
  pause_timer_[dir]->arm(ms);
}

void Stream::unpause(size_t dir) {
  if (!paused_[dir] || destroyed_ || awaiting_store_[dir]) {
    return;
  }
  paused_[dir] = false;
  if (pause_timer_[dir]) {
    pause_timer_[dir]->disarm();
  }
  uint64_t now = callbacks().dispatcher().nowMs();
  f_.noteShaped(worker(), static_cast<int64_t>(now - paused_at_ms_[dir]) * kNsPerMs);
  callbacks().readDisable(dirOf(dir), false);
}

void Stream::onDestroy() {
  destroyed_ = true;
  if (RedisStore* st = store()) {
    st->cancel(this);
  }
  if (holds_connection_) {
    holds_connection_ = false;
    f_.table().release(key_hash_);
  }
  delay_timer_.reset();
  pause_timer_[kUp].reset();
  pause_timer_[kDown].reset();
  // Read-disables are released by the FilterManager.
}

}  // namespace

// ---- the filter ----------------------------------------------------------------------------

RateLimitFilter::RateLimitFilter(std::string name, Settings settings)
    : Filter(std::move(name)),
      settings_(std::move(settings)),
      table_(sharedTable(this->name(), settings_.max_keys)) {
  for (int s = 0; s < kRateScopes; ++s) {
    if (settings_.rates[s]) {
      double n = std::max<uint32_t>(settings_.instances, 1);
      fallback_[s] =
          Gcra(settings_.rates[s]->rate() / n, std::max(1.0, settings_.rates[s]->burst() / n));
    }
  }
}

uint8_t RateLimitFilter::phases() const {
  bool messages = settings_.rates[kMessages] || settings_.rates[kMessageBytes];
  return kRequestHead | (messages ? kFrame : 0);
}

std::unique_ptr<StreamFilter> RateLimitFilter::create() const {
  return std::make_unique<Stream>(*this);
}

std::shared_ptr<WorkerState> RateLimitFilter::createWorkerState(Dispatcher& dispatcher) const {
  if (!settings_.redis) {
    return nullptr;
  }
  std::unique_ptr<RedisClient> client = dispatcher.connectRedis(settings_.redis_options);
  if (!client) {
    return nullptr;  // no Redis in this process (a unit test): limits stay local
  }
  return std::make_shared<Shard>(*this, dispatcher, std::move(client),
                                 RedisStore::Counters{redis_ok_, redis_failed_});
}

void RateLimitFilter::bindStats(Stats& stats) {
  const std::string& n = name();
  for (int s = 0; s < kScopeCount; ++s) {
    bool used = s == kConcurrent ? settings_.concurrent > 0 : settings_.rates[s].has_value();
    if (!used) {
      continue;
    }
    for (int d = 0; d < kDecisionCount; ++d) {
      decisions_[s][d] =
          stats.counter("sluice_ratelimit_decisions_total",
                        "Rate limit decisions, by what was limited (scope) and what was done.",
                        {{"filter", n},
                         {"scope", scopeName(static_cast<Scope>(s))},
                         {"decision", decisionName(static_cast<Decision>(d))}});
    }
  }
  evictions_ =
      stats.counter("sluice_ratelimit_evictions_total",
                    "Keys with live limit state replaced in the full table.", {{"filter", n}});
  table_keys_ =
      stats.gauge("sluice_ratelimit_table_keys",
                  "Slots of the key table in use (bounded by max_keys).", {{"filter", n}});
  shaped_ = stats.histogram("sluice_ratelimit_shaped_seconds",
                            "Time shaping held streams back (requests delayed, reading paused).",
                            {{"filter", n}});
  if (settings_.redis) {
    redis_ok_ =
        stats.counter("sluice_ratelimit_redis_calls_total", "Round trips to Redis, by result.",
                      {{"filter", n}, {"result", "ok"}});
    redis_failed_ =
        stats.counter("sluice_ratelimit_redis_calls_total", "Round trips to Redis, by result.",
                      {{"filter", n}, {"result", "error"}});
    store_errors_ = stats.counter(
        "sluice_ratelimit_store_errors_total",
        "Decisions taken by on_store_error because Redis could not answer.", {{"filter", n}});
  }
}

void RateLimitFilter::noteTable(unsigned worker, const KeyTable::Effect& e) const {
  if (e.inserted) {
    table_keys_.add(worker, 1);
  }
  if (e.evicted) {
    evictions_.inc(worker);
  }
}

void RateLimitFilter::noteShaped(unsigned worker, int64_t ns) const {
  shaped_.observe(worker, static_cast<double>(ns) / 1e9);
}

void RateLimitFilter::logShadow(Scope scope, std::string_view key) const {
  uint64_t now = steadyMs();
  uint64_t last = shadow_logged_ms_.load(std::memory_order_relaxed);
  if ((last != 0 && now - last < 1000) ||
      !shadow_logged_ms_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    shadow_unlogged_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  uint64_t more = shadow_unlogged_.exchange(0, std::memory_order_relaxed);
  std::string line = "ratelimit '" + name() + "' (shadow): key " + forLog(key) + " over " +
                     scopeName(scope) + ", let through";
  if (more > 0) {
    line += " (and " + std::to_string(more) + " more since the last such line)";
  }
  logLine(LogLevel::kWarn, line);
}

void RateLimitFilter::logStore(bool down, std::string_view why) const {
  static constexpr const char* kBehaviour[] = {"allow", "deny", "local"};
  if (down) {
    logLine(LogLevel::kWarn, "ratelimit '" + name() + "': Redis unavailable (" + std::string(why) +
                                 "): on_store_error = \"" +
                                 kBehaviour[static_cast<int>(settings_.on_store_error)] +
                                 "\" until it answers again");
  } else {
    logLine(LogLevel::kWarn, "ratelimit '" + name() + "': Redis answers again");
  }
}

std::string RateLimitFilter::rejectHeaders(Scope scope, int64_t wait_ns, double remaining,
                                           int64_t reset_ns) const {
  auto seconds = [](int64_t ns) { return std::max<int64_t>(1, (ns + 999999999) / 1000000000); };
  std::string h = "Retry-After: " + std::to_string(seconds(wait_ns)) + "\r\n";
  if (scope >= kRateScopes || !settings_.rates[scope]) {
    return h;
  }
  // draft-ietf-httpapi-ratelimit-headers-10: the policy (quota q over a window of w seconds) and
  // the current state (r left, full again in t seconds). A bucket of `burst` refilled at `rate`
  // a second gives `burst` over burst / rate seconds.
  const Gcra& g = *settings_.rates[scope];
  int64_t quota = std::max<int64_t>(1, static_cast<int64_t>(std::floor(g.burst())));
  int64_t window = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(g.burst() / g.rate())));
  std::string policy = "\"" + name() + "\"";
  h += "RateLimit-Policy: " + policy + ";q=" + std::to_string(quota) +
       ";w=" + std::to_string(window) + "\r\n";
  h += "RateLimit: " + policy + ";r=" + std::to_string(static_cast<int64_t>(remaining)) +
       ";t=" + std::to_string(reset_ns > 0 ? seconds(reset_ns) : 0) + "\r\n";
  return h;
}

// ---- configuration -------------------------------------------------------------------------

namespace {

std::optional<KeyPart> parseKeyPart(std::string_view text, std::string* why) {
  KeyPart p;
  auto named = [&](std::string_view prefix, KeyPart::Kind kind) {
    if (!text.starts_with(prefix)) {
      return false;
    }
    p.kind = kind;
    p.name = std::string(text.substr(prefix.size()));
    return true;
  };
  if (text == "source_ip") {
    p.kind = KeyPart::Kind::kSourceIp;
  } else if (text == "route") {
    p.kind = KeyPart::Kind::kRoute;
  } else if (!named("header:", KeyPart::Kind::kHeader) &&
             !named("cookie:", KeyPart::Kind::kCookie) && !named("query:", KeyPart::Kind::kQuery) &&
             !named("claim:", KeyPart::Kind::kClaim)) {
    *why = "'" + std::string(text) +
           "' is not a key: use \"source_ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\", "
           "\"claim:NAME\" or \"route\"";
    return std::nullopt;
  }
  if ((p.kind != KeyPart::Kind::kSourceIp && p.kind != KeyPart::Kind::kRoute) && p.name.empty()) {
    *why = "'" + std::string(text) + "' names nothing after the colon";
    return std::nullopt;
  }
  if (p.kind == KeyPart::Kind::kClaim) {
    p.name = "claim:" + p.name;  // the stream attribute's name
  }
  return p;
}

// A rate: a positive number (per second); byte rates may be sizes ("1MiB").
std::optional<double> readRate(Options& o, std::string_view key, bool bytes) {
  const toml::node* n = o.section().get(key);
  if (n == nullptr) {
    return std::nullopt;
  }
  if (bytes && n->is_string()) {
    std::string why;
    if (auto v = conf::parseSize(n->value_or(std::string_view()), &why); v && *v > 0) {
      return static_cast<double>(*v);
    }
    o.error(key, "'" + std::string(key) + "' must be a positive number or size (\"64KiB\")");
    return std::nullopt;
  }
  std::optional<double> v = n->value<double>();
  if (!v || !(*v > 0) || !std::isfinite(*v)) {
    o.error(key, "'" + std::string(key) + "' must be a number greater than 0");
    return std::nullopt;
  }
  return v;
}

}  // namespace

FilterPtr RateLimitFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  Settings s;
  if (const toml::node* k = o.section().get("key")) {
    std::vector<std::string> parts;
    if (k->is_string()) {
      parts.push_back(std::string(k->value_or(std::string_view())));
    } else if (const toml::array* a = k->as_array(); a != nullptr && !a->empty()) {
      for (const toml::node& e : *a) {
        parts.push_back(std::string(e.value_or(std::string_view())));
      }
    } else {
      o.error("key", "'key' must be a string or a list of strings");
    }
    s.key.clear();
    s.key_text.clear();
    for (const std::string& text : parts) {
      std::string why;
      if (auto p = parseKeyPart(text, &why)) {
        s.key.push_back(*p);
        s.key_text += (s.key_text.empty() ? "" : ", ") + text;
      } else {
        o.error("key", text.empty() ? "'key' entries must be non-empty strings" : why);
      }
    }
  }
  static constexpr std::string_view kRateKeys[kRateScopes] = {
      "requests_per_second", "connections_per_second", "messages_per_second",
      "message_bytes_per_second"};
  double rate[kRateScopes] = {0, 0, 0, 0};
  for (int i = 0; i < kRateScopes; ++i) {
    rate[i] = readRate(o, kRateKeys[i], i == kMessageBytes).value_or(0);
  }
  std::optional<double> burst = readRate(o, "burst", false);
  std::optional<double> bytes_burst = readRate(o, "message_bytes_burst", true);
  if (burst && *burst < 1) {
    o.error("burst", "'burst' must be at least 1");
  }
  for (int i = 0; i < kRateScopes; ++i) {
    if (rate[i] > 0) {
      // By default a bucket holds one second's worth (and at least one token).
      std::optional<double> b = i == kMessageBytes ? bytes_burst : burst;
      s.rates[i] = Gcra(rate[i], std::max(1.0, b.value_or(rate[i])));
    }
  }
  s.concurrent = o.integer<uint32_t>("concurrent_connections", 1, 1000000000).value_or(0);
  s.per_connection = o.oneOf("per", {"key", "connection"}).value_or("key") == "connection";
  std::string action = o.oneOf("action", {"reject", "shape", "drop", "close"}).value_or("reject");
  s.action = action == "shape"   ? Action::kShape
             : action == "drop"  ? Action::kDrop
             : action == "close" ? Action::kClose
                                 : Action::kReject;
  s.close_code = o.integer<uint16_t>("close_code", 1000, 4999).value_or(1008);
  if (s.close_code != 1008 && s.close_code != 1013 && s.close_code < 4000) {
    o.error("close_code",
            "'close_code' must be 1008 (policy), 1013 (try again later) or 4000-4999");
  }
  s.shadow = o.oneOf("mode", {"enforce", "shadow"}).value_or("enforce") == "shadow";
  s.max_delay = o.duration("max_delay").value_or(s.max_delay);
  std::string direction =
      o.oneOf("direction", {"downstream_to_upstream", "upstream_to_downstream", "both"})
          .value_or("downstream_to_upstream");
  s.limit_client_messages = direction != "upstream_to_downstream";
  s.limit_backend_messages = direction != "downstream_to_upstream";
  s.max_keys = o.integer<size_t>("max_keys", 64, 1 << 26).value_or(s.max_keys);
  std::string store = o.oneOf("store", {"local", "redis"}).value_or("local");
  std::string on_error = o.oneOf("on_store_error", {"allow", "deny", "local"}).value_or("local");
  s.on_store_error = on_error == "allow"  ? OnStoreError::kAllow
                     : on_error == "deny" ? OnStoreError::kDeny
                                          : OnStoreError::kLocal;
  const toml::table* redis = o.table("redis");
  if (store == "redis") {
    s.redis = true;
    if (redis == nullptr) {
      o.error("store", "store = \"redis\" needs a 'redis' table with at least 'address'");
    }
  }
  if (redis != nullptr) {
    conf::detail::Section r(*redis, "[[filters]] '" + config.name + "'.redis", o.file(),
                            diagnostics);
    std::string address;
    if (r.string("address", address)) {
      std::string why;
      if (!conf::parseAddress(address, &why)) {
        r.error("address", "'address' must be \"host:port\": " + why);
      }
      s.redis_options.address = address;
    } else {
      r.require({"address"});
    }
    std::string password_file;
    if (r.path("password_file", password_file)) {
      std::ifstream in(password_file);
      std::string line;
      if (!in || !std::getline(in, line)) {
        r.error("password_file", "cannot read '" + password_file + "'");
      } else {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
          line.pop_back();
        }
        s.redis_options.password = line;
      }
    }
    r.string("username", s.redis_options.username);
    if (const toml::node* tls = r.get("tls")) {
      if (tls->is_boolean()) {
        s.redis_options.tls = tls->value_or(false);
      } else if (const toml::table* t = tls->as_table()) {
        conf::detail::Section ts(*t, r.title() + ".tls", o.file(), diagnostics);
        s.redis_options.tls = true;
        ts.path("ca", s.redis_options.ca_file);
        ts.boolean("verify", s.redis_options.verify);
        ts.string("sni", s.redis_options.sni);
        ts.finish();
      } else {
        r.error("tls", "'tls' must be true, false or a table { ca, verify, sni }");
      }
    }
    conf::Duration d{0};
    if (r.duration("timeout", d, conf::detail::Zero::kRejected)) {
      s.redis_options.timeout = d;
    }
    if (r.duration("connect_timeout", d, conf::detail::Zero::kRejected)) {
      s.redis_options.connect_timeout = d;
    }
    r.string("prefix", s.redis_prefix);
    r.integer("instances", s.instances, 1, 10000);
    double budget = 0;
    if (r.positiveNumber("budget", budget)) {
      for (double& b : s.budget) {
        b = budget;
      }
    }
    r.finish();
  }
  o.finish();
  bool any_rate = false;
  for (const auto& r : s.rates) {
    any_rate = any_rate || r.has_value();
  }
  if (!any_rate && s.concurrent == 0) {
    o.error("type", "filter '" + config.name +
                        "' (ratelimit) limits nothing: set requests_per_second, "
                        "connections_per_second, concurrent_connections, messages_per_second or "
                        "message_bytes_per_second");
  }
  if (s.per_connection && !s.rates[kRequests] && !s.rates[kMessages] && !s.rates[kMessageBytes]) {
    o.error("per",
            "per = \"connection\" applies to requests_per_second, messages_per_second and "
            "message_bytes_per_second, and none is set");
  }
  if (!o.ok()) {
    return nullptr;
  }
  return std::make_shared<RateLimitFilter>(config.name, std::move(s));
}

}  // namespace sluice::filters::ratelimit
