// Redis: the RESP parser on split and hostile input, the async client against a real
// `redis-server` (pipelining, AUTH, TLS, timeouts, failing fast while down, reconnecting, calls
// dropped with the client), and the rate limiter's GCRA script and leases on it.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "filters/ratelimit/redis_store.h"
#include "proxy/dispatcher.h"
#include "proxy/net/stream.h"
#include "proxy/redis/client.h"
#include "proxy/redis/resp.h"

namespace sluice::redis {
namespace {

using filters::RedisOptions;
using filters::RedisReply;
using Type = RedisReply::Type;

// ---- RESP ----------------------------------------------------------------------------------

TEST(RedisResp, EncodesCommands) {
  std::string out;
  appendCommand(&out, {"SET", "k", ""});
  EXPECT_EQ(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

TEST(RedisResp, RepliesInAnyPieces) {
  const std::string wire =
      "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n*0\r\n";
  for (size_t step = 1; step <= wire.size(); ++step) {
    ReplyParser p;
    std::vector<RedisReply> out;
    for (size_t i = 0; i < wire.size(); i += step) {
      ASSERT_TRUE(p.feed(wire.data() + i, std::min(step, wire.size() - i), &out)) << p.error();
    }
    ASSERT_EQ(out.size(), 7u) << step;
    EXPECT_EQ(out[0].type, Type::kString);
    EXPECT_EQ(out[0].str, "OK");
    EXPECT_EQ(out[1].type, Type::kError);
    EXPECT_EQ(out[1].str, "ERR bad");
    EXPECT_EQ(out[2].integer, 42);
    EXPECT_EQ(out[3].str, "he\r\no");  // bulk strings are binary-safe
    EXPECT_EQ(out[4].type, Type::kNil);
    ASSERT_EQ(out[5].type, Type::kArray);
    ASSERT_EQ(out[5].elements.size(), 3u);
    EXPECT_EQ(out[5].elements[1].elements[0].str, "");
    EXPECT_EQ(out[5].elements[2].type, Type::kNil);
    EXPECT_EQ(out[6].elements.size(), 0u);
    EXPECT_EQ(p.buffered(), 0u);
  }
}

TEST(RedisResp, BadInputIsAnErrorNeverUnboundedMemory) {
  for (const char* bad : {"?x\r\n", ":12a\r\n", "$-2\r\n", "$99999999999\r\n", "*-5\r\n",
                          "*99999999\r\n", "$3\r\nabcXY", ":\r\n"}) {
    ReplyParser p;
    std::vector<RedisReply> out;
    EXPECT_FALSE(p.feed(bad, strlen(bad), &out)) << bad;
    EXPECT_FALSE(p.error().empty());
  }
  // Nested too deep.
  std::string deep;
  for (int i = 0; i < 20; ++i) {
    deep += "*1\r\n";
  }
  ReplyParser p;
  std::vector<RedisReply> out;
  EXPECT_FALSE(p.feed(deep.data(), deep.size(), &out));
  // A line that never ends.
  ReplyParser q;
  std::string line = "+" + std::string(100000, 'a');
  EXPECT_FALSE(q.feed(line.data(), line.size(), &out));
  // A huge array announced but not sent reserves nothing and waits.
  ReplyParser r;
  std::string big = "*1000000\r\n:1\r\n";
  EXPECT_TRUE(r.feed(big.data(), big.size(), &out));
  EXPECT_TRUE(out.empty());
}

// ---- a real redis-server -------------------------------------------------------------------

uint16_t freePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

bool canConnect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

std::string tempDir() {
  char tmpl[] = "/tmp/sluice-redis-XXXXXX";
  return mkdtemp(tmpl);
}

// A redis-server of its own, on a free port, in a temporary directory, without persistence.
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra = {}, bool tls = false)
      : port_(freePort()), dir_(tempDir()), extra_(std::move(extra)), tls_(tls) {
    start();
  }
  ~RedisServer() {
    stop();
    std::filesystem::remove_all(dir_);
  }
  static bool available() { return access("/usr/bin/redis-server", X_OK) == 0; }

  void start() {
    std::vector<std::string> args = {
        "/usr/bin/redis-server", "--bind", "127.0.0.1", "--dir", dir_, "--save", "",
        "--appendonly",          "no"};
    if (tls_) {
      args.insert(args.end(), {"--port", "0", "--tls-port", std::to_string(port_)});
    } else {
      args.insert(args.end(), {"--port", std::to_string(port_)});
    }
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = fork();
    if (pid_ == 0) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      std::vector<char*> argv;
      for (std::string& a : args) {
        argv.push_back(a.data());
      }
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 500 && !canConnect(port_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& dir() const { return dir_; }

 private:
  uint16_t port_;
  std::string dir_;
  std::vector<std::string> extra_;
  bool tls_;
  pid_t pid_ = -1;
};

// A worker-like loop: the test starts its async steps, then run() drives the loop until
// everything made on it is gone (the test's last step drops its clients and timers). A watchdog
// fails the test and ends it all when a step never comes.
class LoopTest : public ::testing::Test {
 protected:
  LoopTest() {
    uv_loop_init(&loop_);
    loop_.data = nullptr;
    dispatcher_ = std::make_unique<LoopDispatcher>(&loop_, 0, [](std::function<void()>) {});
  }
  ~LoopTest() override {
    net::closeEventSet(&loop_);
    uv_loop_close(&loop_);
  }
  void SetUp() override {
    if (!RedisServer::available()) {
      GTEST_SKIP() << "redis-server is not installed";
    }
  }

  std::unique_ptr<filters::RedisClient> client(RedisOptions o) {
    uv_update_time(&loop_);  // the loop's clock, stale while the test prepared things
    return connect(&loop_, *dispatcher_, o);
  }
  // Runs `f` after `ms` on the loop.
  void after(uint64_t ms, std::function<void()> f) {
    timers_.push_back(dispatcher_->createTimer(std::move(f)));
    timers_.back()->arm(std::chrono::milliseconds(ms));
  }
  void run(std::function<void()> finish, uint64_t limit_ms = 10000) {
    finish_ = std::move(finish);
    uv_update_time(&loop_);
    watchdog_ = dispatcher_->createTimer([this] {
      ADD_FAILURE() << "the test's steps did not finish in time";
      done();
    });
    watchdog_->arm(std::chrono::milliseconds(limit_ms));
    net::runLoop(&loop_);
  }
  // The last step: drop what keeps the loop running.
  void done() {
    if (finish_) {
      auto f = std::move(finish_);
      finish_ = nullptr;
      f();
    }
    watchdog_.reset();
    timers_.clear();
  }
  uint64_t now() { return dispatcher_->nowMs(); }

  uv_loop_t loop_;
  std::unique_ptr<LoopDispatcher> dispatcher_;
  std::vector<std::unique_ptr<filters::Timer>> timers_;
  std::unique_ptr<filters::Timer> watchdog_;
  std::function<void()> finish_;
  uint64_t start_ = 0;
};

using RedisClientTest = LoopTest;

TEST_F(RedisClientTest, PipelinedCommandsCompleteInOrder) {
  RedisServer server;
  RedisOptions o;
  o.address = server.address();
  auto c = client(o);
  std::vector<int64_t> seen;
  // Sent before the connection is up: they wait for it.
  for (int i = 0; i < 100; ++i) {
    c->command({"INCR", "n"}, [&, i](RedisReply r) {
      ASSERT_EQ(r.type, Type::kInteger) << r.str;
      seen.push_back(r.integer);
      if (i == 99) {
        c->command({"GET", "n"}, [&](RedisReply g) {
          EXPECT_EQ(g.str, "100");
          EXPECT_TRUE(c->connected());
          done();
        });
      }
    });
  }
  run([&] { c.reset(); });
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(seen[static_cast<size_t>(i)], i + 1);
  }
}

TEST_F(RedisClientTest, Auth) {
  RedisServer server({"--requirepass", "s3cret"});
  RedisOptions o;
  o.address = server.address();
  o.password = "s3cret";
  auto good = client(o);
  o.password = "wrong";
  auto bad = client(o);
  int answers = 0;
  good->command({"PING"}, [&](RedisReply r) {
    EXPECT_EQ(r.str, "PONG");
    if (++answers == 2) {
      done();
    }
  });
  bad->command({"PING"}, [&](RedisReply r) {
    EXPECT_TRUE(r.failed());
    EXPECT_NE(r.str.find("AUTH"), std::string::npos) << r.str;
    EXPECT_FALSE(bad->connected());
    if (++answers == 2) {
      done();
    }
  });
  run([&] {
    good.reset();
    bad.reset();
  });
  EXPECT_EQ(answers, 2);
}

TEST_F(RedisClientTest, ACallUnansweredTimesOutAndTheConnectionGoes) {
  // A listener that never answers: the kernel completes the handshake, nobody reads.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  RedisOptions o;
  o.address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  o.timeout = std::chrono::milliseconds(100);
  auto c = client(o);
  uint64_t start = 0;
  after(50, [&] {
    start = now();
    c->command({"PING"}, [&](RedisReply r) {
      EXPECT_TRUE(r.failed());
      EXPECT_NE(r.str.find("timed out"), std::string::npos) << r.str;
      EXPECT_GE(now() - start, 90u);
      EXPECT_LE(now() - start, 1000u);
      EXPECT_FALSE(c->connected());
      done();
    });
  });
  run([&] { c.reset(); });
  close(fd);
}

TEST_F(RedisClientTest, FailsFastWhileDownThenReconnects) {
  RedisServer server;
  RedisOptions o;
  o.address = server.address();
  auto c = client(o);
  std::function<void()> poll = [&] {
    c->command({"GET", "k"}, [&](RedisReply again) {
      if (again.failed()) {
        after(50, poll);
        return;
      }
      EXPECT_EQ(again.type, Type::kNil);  // a fresh server (no persistence)
      done();
    });
  };
  c->command({"SET", "k", "v"}, [&](RedisReply r) {
    EXPECT_EQ(r.str, "OK");
    server.stop();
    c->command({"PING"}, [&](RedisReply lost) {
      EXPECT_TRUE(lost.failed());  // the connection went with the server
      // Down: a call fails at once, without waiting for a timeout.
      uint64_t t0 = now();
      c->command({"PING"}, [&, t0](RedisReply fast) {
        EXPECT_TRUE(fast.failed());
        EXPECT_LE(now() - t0, 50u);
        server.start();
        // Reconnected in the background (retries every 50 ms, doubling): poll until a call works.
        poll();
      });
    });
  });
  run([&] { c.reset(); });
}

TEST_F(RedisClientTest, DestroyedWithCallsInFlightRunsNoCallback) {
  RedisServer server;
  RedisOptions o;
  o.address = server.address();
  auto c = client(o);
  bool called = false;
  c->command({"PING"}, [&](RedisReply) {
    c->command({"BLPOP", "nothing", "1"}, [&](RedisReply) { called = true; });
    c->command({"PING"}, [&](RedisReply) { called = true; });
    after(50, [&] { done(); });  // the client goes while Redis sleeps
  });
  run([&] { c.reset(); });
  EXPECT_FALSE(called);
}

TEST_F(RedisClientTest, Tls) {
  std::string d = tempDir();
  std::string script =
      "cd " + d +
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
      "-out ca.crt -days 1 -subj /CN=test-ca 2>/dev/null"
      " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key "
      "-out server.csr -subj /CN=redis 2>/dev/null"
      " && printf 'subjectAltName=IP:127.0.0.1' > ext"
      " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
      "-out server.crt -days 1 -extfile ext 2>/dev/null"
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout o.key "
      "-out other.crt -days 1 -subj /CN=other 2>/dev/null";
  ASSERT_EQ(system(script.c_str()), 0);
  RedisServer server({"--tls-cert-file", d + "/server.crt", "--tls-key-file", d + "/server.key",
                      "--tls-ca-cert-file", d + "/ca.crt", "--tls-auth-clients", "no"},
                     true);
  RedisOptions o;
  o.address = server.address();
  o.tls = true;
  o.ca_file = d + "/ca.crt";
  auto good = client(o);
  o.ca_file = d + "/other.crt";
  auto untrusted = client(o);
  int answers = 0;
  good->command({"PING"}, [&](RedisReply r) {
    EXPECT_EQ(r.str, "PONG") << r.str;
    if (++answers == 2) {
      done();
    }
  });
  untrusted->command({"PING"}, [&](RedisReply r) {
    EXPECT_TRUE(r.failed());
    EXPECT_NE(r.str.find("TLS"), std::string::npos) << r.str;
    if (++answers == 2) {
      done();
    }
  });
  run([&] {
    good.reset();
    untrusted.reset();
  });
  EXPECT_EQ(answers, 2);
  std::filesystem::remove_all(d);
}

// ---- the rate limiter's script and leases --------------------------------------------------

using filters::ratelimit::Gcra;
using filters::ratelimit::kGcraScript;
using filters::ratelimit::kRequests;
using filters::ratelimit::RedisStore;
using filters::ratelimit::Scope;

TEST_F(RedisClientTest, GcraScript) {
  RedisServer server;
  RedisOptions o;
  o.address = server.address();
  auto c = client(o);
  // 10 tokens a second (100 000 µs each), a bucket of 5.
  auto eval = [&](const char* key, int want, std::function<void(RedisReply)> then) {
    c->command({"EVAL", kGcraScript, "1", key, "100000", "500000", std::to_string(want)},
               std::move(then));
  };
  eval("a", 3, [&](RedisReply r) {
    ASSERT_EQ(r.type, Type::kArray) << r.str;
    EXPECT_EQ(r.elements[0].integer, 3);  // granted
    EXPECT_EQ(r.elements[2].integer, 2);  // left
    eval("a", 5, [&](RedisReply r2) {
      EXPECT_EQ(r2.elements[0].integer, 2);  // only what is left
      eval("a", 1, [&](RedisReply r3) {
        EXPECT_EQ(r3.elements[0].integer, 0);
        EXPECT_GT(r3.elements[1].integer, 0);  // wait
        EXPECT_LE(r3.elements[1].integer, 100000);
        EXPECT_GT(r3.elements[3].integer, 400000);  // full again in about half a second
        c->command({"PTTL", "sluice-test-none"}, [&](RedisReply) {});
        c->command({"PTTL", "a"}, [&](RedisReply ttl) {
          EXPECT_GT(ttl.integer, 0);  // one key per bucket, with an expiry
          EXPECT_LE(ttl.integer, 1600);
          // More than the whole bucket passes only when it is full.
          eval("b", 50, [&](RedisReply big) {
            EXPECT_EQ(big.elements[0].integer, 50);
            done();
          });
        });
      });
    });
  });
  run([&] { c.reset(); });
}

struct Recorder : RedisStore::Waiter {
  void onStoreAnswer(Scope, const RedisStore::Result& r) override { answers.push_back(r); }
  std::vector<RedisStore::Result> answers;
};

TEST_F(RedisClientTest, StoreLeasesBoundWhatAClusterSpends) {
  RedisServer server;
  RedisOptions o;
  o.address = server.address();
  // Two stores are two instances (or workers) sharing one bucket of 20 at 10 a second, leases of
  // 5: together they never spend more than the bucket plus one lease each.
  Gcra rates[4] = {Gcra(10, 20), Gcra(), Gcra(), Gcra()};
  double budget[4] = {5, 0, 0, 0};
  filters::Counter none;
  auto a = std::make_unique<RedisStore>(client(o), *dispatcher_, "test:", rates, budget, 100,
                                        RedisStore::Counters{none, none});
  auto b = std::make_unique<RedisStore>(client(o), *dispatcher_, "test:", rates, budget, 100,
                                        RedisStore::Counters{none, none});
  Recorder wa, wb;
  int allowed = 0;
  int denied = 0;
  // HTTP-like takes (they may wait for a lease), as fast as answers come, for 300 ms.
  std::function<void(RedisStore&, Recorder&)> step = [&](RedisStore& s, Recorder& w) {
    for (;;) {
      RedisStore::Result r = s.take(kRequests, "user1", 1, &w, false);
      if (r.answer == RedisStore::Answer::kPending) {
        return;  // the recorder hears; the poller below goes on
      }
      (r.answer == RedisStore::Answer::kAllow ? allowed : denied)++;
      if (r.answer != RedisStore::Answer::kAllow) {
        return;
      }
    }
  };
  std::function<void()> poll = [&] {
    for (Recorder* w : {&wa, &wb}) {
      for (auto& r : w->answers) {
        (r.answer == RedisStore::Answer::kAllow ? allowed : denied)++;
      }
      w->answers.clear();
    }
    step(*a, wa);
    step(*b, wb);
    if (now() < start_ + 300) {
      after(5, poll);
    } else {
      done();
    }
  };
  uv_update_time(&loop_);
  start_ = now();
  after(0, poll);
  run([&] {
    a.reset();
    b.reset();
  });
  // 300 ms at 10/s is 3 tokens beyond the bucket: 20 + 3, plus at most one lease (5) per store.
  EXPECT_GE(allowed, 20);
  EXPECT_LE(allowed, 20 + 3 + 2 * 5);
  EXPECT_GT(denied, 0);
}

TEST_F(RedisClientTest, StoreLoadsItsScriptAndFallsBackWhileRedisIsDown) {
  RedisServer server;
  RedisOptions o;
  o.address = server.address();
  Gcra rates[4] = {Gcra(100, 100), Gcra(), Gcra(), Gcra()};
  double budget[4] = {10, 0, 0, 0};
  filters::Counter none;
  auto store = std::make_unique<RedisStore>(client(o), *dispatcher_, "test:", rates, budget, 100,
                                            RedisStore::Counters{none, none});
  RedisStore& s = *store;
  Recorder w;
  // The fresh server has no script: NOSCRIPT, SCRIPT LOAD, then the call again.
  EXPECT_EQ(s.take(kRequests, "k", 1, &w, false).answer, RedisStore::Answer::kPending);
  std::function<void()> wait_answer, drain, until_fallback;
  wait_answer = [&] {
    if (w.answers.empty()) {
      after(5, wait_answer);
      return;
    }
    EXPECT_EQ(w.answers[0].answer, RedisStore::Answer::kAllow);
    w.answers.clear();
    // Spent locally from the lease: no round trip.
    EXPECT_EQ(s.take(kRequests, "k", 1, &w, false).answer, RedisStore::Answer::kAllow);
    server.stop();
    drain();
  };
  // Spend the lease down until a refill is needed: it fails, and the store says so.
  drain = [&] {
    RedisStore::Result r = s.take(kRequests, "k", 1, &w, false);
    if (r.answer == RedisStore::Answer::kAllow) {
      after(0, drain);
      return;
    }
    until_fallback();
  };
  until_fallback = [&] {
    if (!s.down()) {
      after(5, until_fallback);
      return;
    }
    EXPECT_EQ(s.take(kRequests, "k", 1, &w, false).answer, RedisStore::Answer::kFallback);
    EXPECT_FALSE(s.downReason().empty());
    done();
  };
  after(5, wait_answer);
  run([&] { store.reset(); });
}

}  // namespace
}  // namespace sluice::redis
