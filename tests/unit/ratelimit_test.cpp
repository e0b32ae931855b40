// The ratelimit filter, local store: GCRA arithmetic with an injected clock, the bounded key table
// under a key flood, and the filter's decisions on request heads and WebSocket frames (429 and
// its headers, shadow mode, shaping by delay and by paused reading, connection counting,
// concurrency released exactly once, keys from claims), with its metrics.

#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <map>
#include <thread>

#include "filters/filter.h"
#include "filters/ratelimit/gcra.h"
#include "filters/ratelimit/key_table.h"
#include "filters/ratelimit/ratelimit.h"
#include "tests/unit/support/fakes.h"
#include "tests/unit/support/filter_config.h"

namespace sluice::filters::ratelimit {
namespace {

constexpr int64_t kMs = 1000000;  // ns

// ---- GCRA ----------------------------------------------------------------------------------

TEST(RateLimitGcra, BurstThenRate) {
  Gcra g(10, 5);  // 10/s, 5 at once
  int64_t tat = 0;
  int64_t now = 1000 * kMs;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(g.conforms(tat, now, 1)) << i;
    tat = g.take(tat, now, 1);
  }
  EXPECT_FALSE(g.conforms(tat, now, 1));
  EXPECT_EQ(g.waitNs(tat, now, 1), 100 * kMs);
  EXPECT_EQ(g.remaining(tat, now), 0);
  EXPECT_EQ(g.resetNs(tat, now), 500 * kMs);
  now += 99 * kMs;
  EXPECT_FALSE(g.conforms(tat, now, 1));
  now += 1 * kMs;
  EXPECT_TRUE(g.conforms(tat, now, 1));
  EXPECT_EQ(g.remaining(tat, now), 1);
  // After a long idle time the bucket is full again, never more.
  now += 10000 * kMs;
  EXPECT_EQ(g.remaining(tat, now), 5);
  EXPECT_EQ(g.backlog(tat, now), 0);
}

TEST(RateLimitGcra, TakeLargerThanTheBucketPassesWhenFullThenPaysItsDebt) {
  Gcra g(1000, 1000);  // 1000 bytes/s, 1000 at once
  int64_t tat = 0;
  int64_t now = 1000 * kMs;
  ASSERT_TRUE(g.conforms(tat, now, 5000));  // full: a 5000-byte message passes
  tat = g.take(tat, now, 5000);
  EXPECT_EQ(g.debtNs(tat, now), 4000 * kMs);  // 4 s beyond the bucket
  EXPECT_FALSE(g.conforms(tat, now + 4000 * kMs, 1));
  EXPECT_TRUE(g.conforms(tat, now + 4001 * kMs, 1));
  EXPECT_EQ(g.waitNs(tat, now, 5000), 5000 * kMs);  // another one: only once full
}

TEST(RateLimitGcra, FractionalRates) {
  Gcra g(0.5, 1);  // one every two seconds
  int64_t tat = g.take(0, 0, 1);
  EXPECT_EQ(g.waitNs(tat, 0, 1), 2000 * kMs);
  Gcra bytes(100e6, 64 * 1024);  // 100 MB/s: 10 ns a byte
  EXPECT_EQ(bytes.costNs(64), 640);
}

TEST(RateLimitGcra, TakeBucketChargesWithinTheShapingWindow) {
  Gcra g(10, 1);
  int64_t tat = 0;
  int64_t now = 1000 * kMs;
  BucketTake t = takeBucket(tat, g, now, 1, KeyTable::kOnlyConforming);
  EXPECT_TRUE(t.conformed && t.charged);
  t = takeBucket(tat, g, now, 1, KeyTable::kOnlyConforming);
  EXPECT_FALSE(t.conformed || t.charged);
  EXPECT_EQ(t.wait_ns, 100 * kMs);
  t = takeBucket(tat, g, now, 1, 150 * kMs);  // delayed 100 ms: reserved now
  EXPECT_TRUE(!t.conformed && t.charged);
  t = takeBucket(tat, g, now, 1, 150 * kMs);  // the next would wait 200 ms: not within
  EXPECT_FALSE(t.charged);
  EXPECT_EQ(t.wait_ns, 200 * kMs);
}

// ---- the key table -------------------------------------------------------------------------

TEST(RateLimitTable, AKeyFloodNeitherGrowsTheTableNorForgetsConnections) {
  KeyTable table(64);
  EXPECT_EQ(table.capacity(), 64u);
  Gcra g(1, 1);
  int64_t now = 1000 * kMs;
  // A few keys hold connections; then a flood of new keys, each charged (live state).
  std::vector<uint64_t> holders;
  for (int i = 0; i < 4; ++i) {
    holders.push_back(hashKey("holder" + std::to_string(i)));
    KeyTable::Effect e;
    ASSERT_TRUE(table.acquire(holders.back(), 10, now, &e));
  }
  size_t inserted = 0;
  size_t evicted = 0;
  for (int i = 0; i < 100000; ++i) {
    KeyTable::Effect e;
    KeyTable::Take t = table.take(hashKey("flood" + std::to_string(i)), kRequests, g, now + i, 1,
                                  KeyTable::kOnlyConforming, &e);
    EXPECT_TRUE(t.conformed);  // a new key starts full
    inserted += e.inserted;
    evicted += e.evicted;
  }
  EXPECT_LE(inserted, 64u);
  EXPECT_GE(evicted, 100000u - 64u);
  // Keys holding connections were not the ones replaced.
  for (uint64_t h : holders) {
    KeyTable::Entry e;
    ASSERT_TRUE(table.find(h, &e));
    EXPECT_EQ(e.concurrent, 1u);
  }
}

TEST(RateLimitTable, IdleEntriesAreReusedWithoutEviction) {
  KeyTable table(64);
  Gcra g(1000, 1);
  int64_t now = 1000 * kMs;
  size_t evicted = 0;
  for (int i = 0; i < 10000; ++i) {
    KeyTable::Effect e;
    table.take(hashKey("k" + std::to_string(i)), kRequests, g, now, 1, KeyTable::kOnlyConforming,
               &e);
    evicted += e.evicted;
    now += 2 * kMs;  // each key's bucket is full again before the next key comes
  }
  EXPECT_EQ(evicted, 0u);
}

TEST(RateLimitTable, ConcurrencyAcquireAndRelease) {
  KeyTable table(1000);
  uint64_t k = hashKey("10.0.0.1");
  KeyTable::Effect e;
  EXPECT_TRUE(table.acquire(k, 2, 0, &e));
  EXPECT_TRUE(e.inserted);
  EXPECT_TRUE(table.acquire(k, 2, 0, &e));
  EXPECT_FALSE(table.acquire(k, 2, 0, &e));
  table.release(k);
  EXPECT_TRUE(table.acquire(k, 2, 0, &e));
  table.release(k);
  table.release(k);
  table.release(k);  // more releases than acquires never go below zero
  table.release(hashKey("unknown"));
  KeyTable::Entry entry;
  ASSERT_TRUE(table.find(k, &entry));
  EXPECT_EQ(entry.concurrent, 0u);
}

TEST(RateLimitTable, SharedAcrossReloadsByNameAndSize) {
  auto a = sharedTable("rl-shared", 128);
  auto b = sharedTable("rl-shared", 128);
  auto c = sharedTable("rl-shared", 256);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), c.get());
}

TEST(RateLimitTable, HashIsKeyedAndNeverZero) {
  EXPECT_NE(hashKey("a"), hashKey("b"));
  EXPECT_EQ(hashKey("same"), hashKey("same"));
  EXPECT_NE(hashKey(""), 0u);
  EXPECT_NE(hashKey(std::string(100, 'x')), hashKey(std::string(101, 'x')));
}

// Not a test of behaviour: the cost of a take, one thread and two, on one key and on many, for
// the report (run with --gtest_also_run_disabled_tests).
TEST(RateLimitTable, DISABLED_Throughput) {
  KeyTable table(65536);
  Gcra g(1e9, 1e9);
  std::vector<uint64_t> keys;
  for (int i = 0; i < 4096; ++i) {
    keys.push_back(hashKey("k" + std::to_string(i)));
  }
  auto run = [&](int threads, bool one_key) {
    constexpr int kOps = 2000000;
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        for (int i = 0; i < kOps; ++i) {
          KeyTable::Effect e;
          table.take(one_key ? keys[0] : keys[(i * 7 + t) & 4095], kRequests, g, i, 1,
                     KeyTable::kOnlyConforming, &e);
        }
      });
    }
    for (auto& t : ts) {
      t.join();
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("table take: %d thread(s), %s: %.1f ns/op per thread\n", threads,
           one_key ? "one key" : "4096 keys", s * 1e9 / kOps);
  };
  auto unlocked = [&] {
    constexpr int kOps = 2000000;
    std::vector<int64_t> tats(4096, 0);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kOps; ++i) {
      takeBucket(tats[(i * 7) & 4095], g, i, 1, KeyTable::kOnlyConforming);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("per-worker bucket without a lock (lower bound): %.1f ns/op\n", s * 1e9 / kOps);
  };
  unlocked();
  run(1, false);
  run(2, false);
  run(1, true);
  run(2, true);
}

// ---- the filter ----------------------------------------------------------------------------

// Stream callbacks on one shared clock.
class Callbacks : public testing::FakeCallbacks {
 public:
  explicit Callbacks(testing::FakeDispatcher* d) : d_(d) {}
  Dispatcher& dispatcher() override { return *d_; }

 private:
  testing::FakeDispatcher* d_;
};

// A Redis client whose calls the test answers.
struct FakeRedis {
  struct Call {
    std::vector<std::string> args;
    RedisClient::Callback done;
  };
  class Client : public RedisClient {
   public:
    explicit Client(FakeRedis* r) : r_(r) {}
    void command(std::vector<std::string> args, Callback done) override {
      r_->calls.push_back({std::move(args), std::move(done)});
    }
    bool connected() const override { return r_->up; }

   private:
    FakeRedis* r_;
  };
  // Answers the oldest call with the script's reply, or fails it.
  void grant(int64_t granted, int64_t wait_us = 0) {
    Call c = std::move(calls.front());
    calls.erase(calls.begin());
    RedisReply r;
    r.type = RedisReply::Type::kArray;
    for (int64_t v : {granted, wait_us, int64_t{0}, int64_t{0}}) {
      RedisReply e;
      e.type = RedisReply::Type::kInteger;
      e.integer = v;
      r.elements.push_back(e);
    }
    c.done(std::move(r));
  }
  void fail() {
    Call c = std::move(calls.front());
    calls.erase(calls.begin());
    c.done(RedisReply::failure("connection refused"));
  }
  std::vector<Call> calls;
  bool up = true;
};

// The shared clock; it offers the fake Redis to filters that ask.
class Clock : public testing::FakeDispatcher {
 public:
  std::unique_ptr<RedisClient> connectRedis(const RedisOptions&) override {
    return std::make_unique<FakeRedis::Client>(&redis);
  }
  FakeRedis redis;
};

// One filter, its metrics, and streams made on a shared hand-driven clock.
struct Harness {
  explicit Harness(const std::string& keys, const std::string& name = "") {
    static int n = 0;
    // Each harness its own table (tables are shared by name across "reloads").
    std::string filter_name = name.empty() ? "rl" + std::to_string(++n) : name;
    conf::Diagnostics d;
    filter = buildFilter(
        testing::filterConfig("name = \"" + filter_name + "\"\ntype = \"ratelimit\"\n" + keys), d);
    EXPECT_TRUE(filter) << (d.empty() ? "" : d[0].format());
    if (filter) {
      filter->bindStats(stats);
      state = filter->createWorkerState(clock);
    }
  }
  struct S {
    std::unique_ptr<Callbacks> cb;
    std::unique_ptr<StreamFilter> f;
  };
  S stream(const std::string& ip = "10.0.0.1", uint64_t conn = 1, uint32_t nth = 1) {
    S s{std::make_unique<Callbacks>(&clock), filter->create()};
    s.cb->info_.client_ip = ips.emplace_back(ip);
    s.cb->info_.route = "r";
    s.cb->info_.connection_id = conn;
    s.cb->info_.connection_request = nth;
    s.cb->state_ = state.get();
    s.f->setCallbacks(*s.cb);
    return s;
  }
  // 0 when the request passed at once, else the status answered (or 1: waiting).
  int request(S& s, RequestHead* head = nullptr) {
    RequestHead h;
    h.method = "GET";
    h.url = "/";
    Status st = s.f->onRequestHead(head != nullptr ? *head : h);
    if (st == Status::kContinue) {
      return 0;
    }
    return s.cb->reply_status != 0 ? s.cb->reply_status : 1;
  }
  int request(const std::string& ip = "10.0.0.1") {
    S s = stream(ip);
    int r = request(s);
    s.f->onDestroy();
    return r;
  }
  int64_t decisions(const std::string& scope, const std::string& decision) {
    return stats.get("sluice_ratelimit_decisions_total",
                     {{"filter", filter->name()}, {"scope", scope}, {"decision", decision}});
  }
  FrameInfo frame(uint64_t bytes, bool first = true, bool fin = true) {
    return FrameInfo{
        Direction::kDownstreamToUpstream, MessageType::kBinary, first, fin, bytes, bytes};
  }

  Clock clock;
  testing::RecordingStats stats;
  FilterPtr filter;
  std::shared_ptr<WorkerState> state;
  std::deque<std::string> ips;
};

std::string header(const std::string& headers, const std::string& name) {
  size_t at = headers.find(name + ": ");
  if (at == std::string::npos) {
    return "";
  }
  at += name.size() + 2;
  return headers.substr(at, headers.find("\r\n", at) - at);
}

TEST(RateLimitFilter, RejectsWith429AndTheHeaders) {
  Harness h("requests_per_second = 2\nburst = 2\n");
  EXPECT_EQ(h.request(), 0);
  EXPECT_EQ(h.request(), 0);
  Harness::S s = h.stream();
  EXPECT_EQ(h.request(s), 429);
  EXPECT_FALSE(s.cb->reply_close);  // a request limit keeps the connection
  EXPECT_EQ(header(s.cb->reply_headers, "Retry-After"), "1");
  EXPECT_EQ(header(s.cb->reply_headers, "RateLimit-Policy"),
            "\"" + h.filter->name() + "\";q=2;w=1");
  EXPECT_EQ(header(s.cb->reply_headers, "RateLimit"), "\"" + h.filter->name() + "\";r=0;t=1");
  EXPECT_EQ(h.request("10.0.0.2"), 0);  // another key has its own bucket
  h.clock.advance(500);
  EXPECT_EQ(h.request(), 0);  // one token back after 1 / rate
  EXPECT_EQ(h.request(), 429);
  EXPECT_EQ(h.decisions("requests_per_second", "allow"), 4);
  EXPECT_EQ(h.decisions("requests_per_second", "reject"), 2);
  EXPECT_EQ(h.stats.get("sluice_ratelimit_table_keys", {{"filter", h.filter->name()}}), 2);
}

TEST(RateLimitFilter, RetryAfterAndPolicyForSlowRates) {
  Harness h("requests_per_second = 0.1\nburst = 3\n");  // 3 per 30 s
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(h.request(), 0);
  }
  Harness::S s = h.stream();
  EXPECT_EQ(h.request(s), 429);
  EXPECT_EQ(header(s.cb->reply_headers, "Retry-After"), "10");
  EXPECT_EQ(header(s.cb->reply_headers, "RateLimit-Policy"),
            "\"" + h.filter->name() + "\";q=3;w=30");
  EXPECT_EQ(header(s.cb->reply_headers, "RateLimit"), "\"" + h.filter->name() + "\";r=0;t=30");
}

TEST(RateLimitFilter, ShadowModeCountsButNeverBlocks) {
  Harness h("requests_per_second = 1\nburst = 1\nmode = \"shadow\"\n");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(h.request(), 0);
  }
  EXPECT_EQ(h.decisions("requests_per_second", "allow"), 1);
  EXPECT_EQ(h.decisions("requests_per_second", "shadow"), 4);
  EXPECT_EQ(h.decisions("requests_per_second", "reject"), 0);
}

TEST(RateLimitFilter, ShapeDelaysRequestsUpToMaxDelay) {
  Harness h("requests_per_second = 10\nburst = 1\naction = \"shape\"\nmax_delay = \"250ms\"\n");
  EXPECT_EQ(h.request(), 0);
  Harness::S a = h.stream();
  Harness::S b = h.stream();
  Harness::S c = h.stream();
  EXPECT_EQ(h.request(a), 1);    // waits 100 ms
  EXPECT_EQ(h.request(b), 1);    // 200 ms
  EXPECT_EQ(h.request(c), 429);  // 300 ms would be beyond max_delay
  h.clock.advance(99);
  EXPECT_EQ(a.cb->resumes, 0);
  h.clock.advance(1);
  EXPECT_EQ(a.cb->resumes, 1);
  EXPECT_EQ(h.decisions("requests_per_second", "shape"), 2);
  EXPECT_EQ(h.decisions("requests_per_second", "reject"), 1);
  EXPECT_EQ(
      h.stats.histogramCount("sluice_ratelimit_shaped_seconds", {{"filter", h.filter->name()}}),
      1u);
  // A delayed request whose stream ends before its turn never resumes.
  b.f->onDestroy();
  h.clock.advance(1000);
  EXPECT_EQ(b.cb->resumes, 0);
}

TEST(RateLimitFilter, ConnectionsAreCountedAtTheirFirstRequestAndRefusedOnesClose) {
  Harness h("connections_per_second = 1\nburst = 2\n");
  Harness::S a = h.stream("10.0.0.1", 1, 1);
  EXPECT_EQ(h.request(a), 0);
  Harness::S a2 = h.stream("10.0.0.1", 1, 2);  // the same connection's next request
  EXPECT_EQ(h.request(a2), 0);
  Harness::S b = h.stream("10.0.0.1", 2, 1);
  EXPECT_EQ(h.request(b), 0);
  Harness::S c = h.stream("10.0.0.1", 3, 1);
  EXPECT_EQ(h.request(c), 429);
  EXPECT_TRUE(c.cb->reply_close);  // its later requests would not count: it ends
  EXPECT_EQ(h.decisions("connections_per_second", "allow"), 2);
  EXPECT_EQ(h.decisions("connections_per_second", "reject"), 1);
}

TEST(RateLimitFilter, ConcurrencyIsReleasedExactlyOnce) {
  Harness h("concurrent_connections = 2\n");
  Harness::S a = h.stream();
  Harness::S b = h.stream();
  Harness::S c = h.stream();
  EXPECT_EQ(h.request(a), 0);
  EXPECT_EQ(h.request(b), 0);
  EXPECT_EQ(h.request(c), 429);
  EXPECT_EQ(header(c.cb->reply_headers, "Retry-After"), "1");
  c.f->onDestroy();  // a refused stream holds nothing: its end releases nothing
  Harness::S d = h.stream();
  EXPECT_EQ(h.request(d), 429);
  a.f->onDestroy();
  a.f->onDestroy();  // (the FilterManager calls it once; even twice releases once)
  Harness::S e = h.stream();
  EXPECT_EQ(h.request(e), 0);
  Harness::S f = h.stream();
  EXPECT_EQ(h.request(f), 429);
  EXPECT_EQ(h.request("10.0.0.9"), 0);  // per key
}

TEST(RateLimitFilter, KeysFromClaimsHeadersAndCombinations) {
  Harness h("requests_per_second = 1\nburst = 1\nkey = [\"claim:sub\", \"header:X-Tenant\"]\n");
  auto with = [&](const char* sub, const char* tenant) {
    Harness::S s = h.stream();
    if (sub != nullptr) {
      s.cb->setAttribute("claim:sub", sub);
    }
    RequestHead head;
    head.method = "GET";
    head.url = "/";
    if (tenant != nullptr) {
      head.add("X-Tenant", tenant);
    }
    return h.request(s, &head);
  };
  EXPECT_EQ(with("alice", "t1"), 0);
  EXPECT_EQ(with("alice", "t1"), 429);
  EXPECT_EQ(with("alice", "t2"), 0);
  EXPECT_EQ(with("bob", "t1"), 0);
  // Without the whole key the request is not limited by this filter.
  EXPECT_EQ(with(nullptr, "t1"), 0);
  EXPECT_EQ(with(nullptr, "t1"), 0);
  EXPECT_EQ(with("alice", nullptr), 0);
}

TEST(RateLimitFilter, PerConnectionRequests) {
  Harness h("requests_per_second = 1\nburst = 1\nper = \"connection\"\n");
  Harness::S a = h.stream("10.0.0.1", 7, 1);
  EXPECT_EQ(h.request(a), 0);
  Harness::S a2 = h.stream("10.0.0.1", 7, 2);
  EXPECT_EQ(h.request(a2), 429);
  Harness::S b = h.stream("10.0.0.1", 8, 1);  // same address, other connection
  EXPECT_EQ(h.request(b), 0);
}

TEST(RateLimitFilter, MessagesDropped) {
  Harness h("messages_per_second = 10\nburst = 5\naction = \"drop\"\n");
  Harness::S s = h.stream();
  ASSERT_EQ(h.request(s), 0);
  int dropped = 0;
  for (int i = 0; i < 8; ++i) {
    s.cb->drop_reason.clear();
    s.f->onFrame(h.frame(64));
    dropped += !s.cb->drop_reason.empty();
  }
  EXPECT_EQ(dropped, 3);
  EXPECT_EQ(s.cb->close_code, 0);
  h.clock.advance(100);
  s.cb->drop_reason.clear();
  s.f->onFrame(h.frame(64));
  EXPECT_TRUE(s.cb->drop_reason.empty());
  // Continuation frames are not messages.
  s.f->onFrame(h.frame(64, false));
  EXPECT_TRUE(s.cb->drop_reason.empty());
  EXPECT_EQ(h.decisions("messages_per_second", "drop"), 3);
  EXPECT_EQ(h.decisions("messages_per_second", "allow"), 6);
}

TEST(RateLimitFilter, MessagesCloseWithTheConfiguredCode) {
  Harness h("messages_per_second = 1\nburst = 1\naction = \"close\"\nclose_code = 1013\n");
  Harness::S s = h.stream();
  ASSERT_EQ(h.request(s), 0);
  s.f->onFrame(h.frame(1));
  EXPECT_EQ(s.cb->close_code, 0);
  s.f->onFrame(h.frame(1));
  EXPECT_EQ(s.cb->close_code, 1013);
  EXPECT_EQ(h.decisions("messages_per_second", "close"), 1);
}

TEST(RateLimitFilter, ShapingPausesTheSenderUntilTokensReturn) {
  Harness h("messages_per_second = 100\nburst = 10\naction = \"shape\"\nper = \"connection\"\n");
  Harness::S s = h.stream();
  ASSERT_EQ(h.request(s), 0);
  // A sender that writes whenever sluice reads: count what passes in 2 s of simulated time.
  int passed = 0;
  for (int ms = 0; ms < 2000; ++ms) {
    while (s.cb->read_disabled == 0) {
      s.f->onFrame(h.frame(64));
      ++passed;
    }
    h.clock.advance(1);
  }
  EXPECT_GE(passed, 200 + 10 - 2);
  EXPECT_LE(passed, 200 + 10 + 2);
  EXPECT_EQ(s.cb->drop_reason, "");  // nothing is lost
  EXPECT_EQ(s.cb->close_code, 0);
  EXPECT_GT(h.decisions("messages_per_second", "shape"), 150);
  // Another connection of the same address is not held back (per connection).
  Harness::S t = h.stream("10.0.0.1", 2, 1);
  ASSERT_EQ(h.request(t), 0);
  t.f->onFrame(h.frame(64));
  EXPECT_EQ(t.cb->read_disabled, 0);
  s.f->onDestroy();
}

TEST(RateLimitFilter, ByteShapingLetsABigMessagePassThenPaysItsDebt) {
  Harness h(
      "message_bytes_per_second = \"1KiB\"\nmessage_bytes_burst = 1024\naction = \"shape\"\n");
  Harness::S s = h.stream();
  ASSERT_EQ(h.request(s), 0);
  s.f->onFrame(h.frame(4096));  // four times the bucket: passes (the bucket was full)
  EXPECT_EQ(s.cb->read_disabled, 1);
  h.clock.advance(2999);
  EXPECT_EQ(s.cb->read_disabled, 1);
  h.clock.advance(1);
  EXPECT_EQ(s.cb->read_disabled, 0);
}

TEST(RateLimitFilter, BackendMessagesOnlyWhenAsked) {
  Harness h("messages_per_second = 1\nburst = 1\naction = \"drop\"\n");
  Harness::S s = h.stream();
  ASSERT_EQ(h.request(s), 0);
  FrameInfo down{Direction::kUpstreamToDownstream, MessageType::kText, true, true, 5, 5};
  for (int i = 0; i < 3; ++i) {
    s.f->onFrame(down);
  }
  EXPECT_TRUE(s.cb->drop_reason.empty());
  Harness both("messages_per_second = 1\nburst = 1\naction = \"drop\"\ndirection = \"both\"\n");
  Harness::S t = both.stream();
  ASSERT_EQ(both.request(t), 0);
  t.f->onFrame(both.frame(5));  // the client's bucket
  t.f->onFrame(down);           // the backend's own bucket
  EXPECT_TRUE(t.cb->drop_reason.empty());
  t.f->onFrame(down);
  EXPECT_FALSE(t.cb->drop_reason.empty());
}

TEST(RateLimitFilter, LimitsSurviveAReload) {
  Harness a("requests_per_second = 1\nburst = 1\n", "reloaded");
  EXPECT_EQ(a.request(), 0);
  Harness b("requests_per_second = 1\nburst = 1\n", "reloaded");  // the next config's filter
  EXPECT_EQ(b.request(), 429);
}

constexpr const char* kRedisKeys =
    "requests_per_second = 10\nburst = 10\nstore = \"redis\"\n"
    "redis = { address = \"127.0.0.1:6379\", budget = 4, instances = 2 }\n";

TEST(RateLimitFilter, RedisLeasesSpareRoundTrips) {
  Harness h(kRedisKeys);
  FakeRedis& redis = h.clock.redis;
  Harness::S a = h.stream();
  EXPECT_EQ(h.request(a), 1);  // waits for its lease
  ASSERT_EQ(redis.calls.size(), 1u);
  EXPECT_EQ(redis.calls[0].args[0], "EVALSHA");
  EXPECT_EQ(redis.calls[0].args[6], "5");  // the budget, and what this request lacks
  redis.grant(5);
  EXPECT_EQ(a.cb->resumes, 1);
  // Spent locally; more is asked for once half the lease is gone, before it runs out.
  EXPECT_EQ(h.request(), 0);
  EXPECT_EQ(h.request(), 0);
  EXPECT_EQ(redis.calls.size(), 0u);
  EXPECT_EQ(h.request(), 0);
  ASSERT_EQ(redis.calls.size(), 1u);
  redis.grant(0, 250000);     // Redis says: over the limit for 250 ms
  EXPECT_EQ(h.request(), 0);  // the lease's last token
  Harness::S b = h.stream();
  EXPECT_EQ(h.request(b), 429);
  EXPECT_EQ(header(b.cb->reply_headers, "Retry-After"), "1");
  EXPECT_EQ(redis.calls.size(), 0u);  // refused locally until Redis's retry time
  EXPECT_EQ(h.decisions("requests_per_second", "reject"), 1);
}

TEST(RateLimitFilter, OnStoreError) {
  for (const char* behaviour : {"allow", "deny", "local"}) {
    SCOPED_TRACE(behaviour);
    Harness h(std::string(kRedisKeys) + "on_store_error = \"" + behaviour + "\"\n");
    FakeRedis& redis = h.clock.redis;
    redis.up = false;
    Harness::S a = h.stream();
    EXPECT_EQ(h.request(a), 1);
    redis.fail();  // the call fails: the waiting request gets on_store_error's answer
    int expect = std::string(behaviour) == "deny" ? 429 : 0;
    EXPECT_EQ(a.cb->reply_status, expect == 0 ? 0 : 429);
    EXPECT_EQ(a.cb->resumes, expect == 0 ? 1 : 0);
    // Known down: decided at once, without asking Redis.
    int statuses[8];
    for (int& st : statuses) {
      st = h.request();
    }
    EXPECT_TRUE(redis.calls.empty());
    int allowed = 0;
    for (int st : statuses) {
      allowed += st == 0;
    }
    // local: rate / instances, burst / instances (5), one spent by the first request.
    EXPECT_EQ(allowed, std::string(behaviour) == "allow"  ? 8
                       : std::string(behaviour) == "deny" ? 0
                                                          : 4);
    EXPECT_EQ(h.stats.get("sluice_ratelimit_store_errors_total", {{"filter", h.filter->name()}}),
              9);
    // Redis is back: the next request asks it again.
    redis.up = true;
    h.clock.advance(10000);
    EXPECT_EQ(h.request(), 1);
    EXPECT_EQ(redis.calls.size(), 1u);
  }
}

TEST(RateLimitFilter, ConfigErrors) {
  auto errors = [](const std::string& keys) {
    conf::Diagnostics d;
    buildFilter(testing::filterConfig("name = \"x\"\ntype = \"ratelimit\"\n" + keys), d);
    std::string all;
    for (const auto& e : d) {
      all += e.message + "\n";
    }
    return all;
  };
  EXPECT_NE(errors("").find("limits nothing"), std::string::npos);
  EXPECT_NE(errors("requests_per_second = 0\n").find("greater than 0"), std::string::npos);
  EXPECT_NE(errors("requests_per_second = 1\nkey = \"ip\"\n").find("not a key"), std::string::npos);
  EXPECT_NE(errors("requests_per_second = 1\nkey = \"header:\"\n").find("names nothing"),
            std::string::npos);
  EXPECT_NE(errors("concurrent_connections = 1\nper = \"connection\"\n").find("per = "),
            std::string::npos);
  EXPECT_NE(errors("messages_per_second = 1\nclose_code = 1001\n").find("close_code"),
            std::string::npos);
  EXPECT_NE(errors("messages_per_second = 1\naction = \"block\"\n").find("action"),
            std::string::npos);
  EXPECT_NE(errors("requests_per_second = 1\nstore = \"redis\"\n").find("'redis' table"),
            std::string::npos);
  EXPECT_NE(
      errors("requests_per_second = 1\nstore = \"redis\"\nredis = { port = 1 }\n").find("address"),
      std::string::npos);
  EXPECT_NE(errors("requests_per_second = 1\nburts = 3\n").find("burst"), std::string::npos);
  EXPECT_EQ(errors("requests_per_second = 1\nstore = \"redis\"\n"
                   "redis = { address = \"127.0.0.1:6379\", tls = { verify = false }, "
                   "instances = 3, budget = 5, timeout = \"100ms\" }\n"),
            "");
}

}  // namespace
}  // namespace sluice::filters::ratelimit
