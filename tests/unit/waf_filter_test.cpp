// The waf filter on the filter API: verdicts made on its pool and posted back to the stream's
// worker, the handshake's context reused by its messages, detect mode, overload (a full queue, a
// passed budget, a verdict that comes late) and a stream that ends while it is being judged.

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>

#include "filters/filter.h"
#include "filters/waf/waf_filter.h"
#include "tests/unit/support/fakes.h"
#include "tests/unit/support/filter_config.h"

namespace sluice::filters::waf {
namespace {

using namespace std::chrono_literals;

// A worker as the pool sees it: posts arrive from pool threads (locked), and the test runs them
// on its own thread, which plays the worker. Timers run on the hand-driven clock.
class PoolDispatcher : public Dispatcher {
 public:
  uint64_t nowMs() const override { return clock_.nowMs(); }
  std::unique_ptr<Timer> createTimer(std::function<void()> callback) override {
    return clock_.createTimer(std::move(callback));
  }
  void post(std::function<void()> task) override {
    std::lock_guard<std::mutex> lock(mutex_);
    posted_.push_back(std::move(task));
    cv_.notify_all();
  }
  unsigned workerId() const override { return 0; }

  // Waits (up to `wait`) for a posted task, then runs every task posted so far. Returns how many.
  size_t runPosted(std::chrono::milliseconds wait = 20s) {
    std::vector<std::function<void()>> tasks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait_for(lock, wait, [this] { return !posted_.empty(); });
      tasks.swap(posted_);
    }
    for (auto& t : tasks) {
      t();
    }
    return tasks.size();
  }
  void advance(uint64_t ms) { clock_.advance(ms); }
  size_t armedTimers() const { return clock_.armedTimers(); }

 private:
  testing::FakeDispatcher clock_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> posted_;
};

class Callbacks : public testing::FakeCallbacks {
 public:
  Callbacks() {
    info_.client_ip = "192.0.2.10";
    info_.request_id = "req-1";
    info_.route = "app";
  }
  Dispatcher& dispatcher() override { return d; }
  PoolDispatcher d;
};

std::shared_ptr<WafFilter> build(const std::string& keys, conf::Diagnostics* d = nullptr) {
  conf::Diagnostics local;
  conf::Diagnostics& diags = d != nullptr ? *d : local;
  const bool audit = keys.find("audit_log") != std::string::npos;
  FilterPtr f =
      buildFilter(testing::filterConfig("name = \"w\"\ntype = \"waf\"\n" +
                                        std::string(audit ? "" : "audit_log = \"off\"\n") + keys),
                  diags);
  if (d == nullptr) {
    EXPECT_TRUE(f) << (diags.empty() ? "" : diags[0].format());
  }
  return std::static_pointer_cast<WafFilter>(f);
}

RequestHead head(std::string url, std::string method = "GET") {
  RequestHead h;
  h.method = std::move(method);
  h.url = std::move(url);
  h.add("Host", "app.example.com");
  h.add("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0");
  h.add("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");
  return h;
}

RequestHead upgrade() {
  RequestHead h = head("/chat?room=general");
  h.add("Upgrade", "websocket");
  h.add("Connection", "Upgrade");
  h.add("Sec-WebSocket-Version", "13");
  h.add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
  return h;
}

// One stream of `f` with its callbacks.
struct Stream {
  explicit Stream(const WafFilter& f, bool websocket = false) : s(f.create()) {
    cb.info_.websocket = websocket;
    s->setCallbacks(cb);
  }
  ~Stream() { s->onDestroy(); }
  Callbacks cb;
  std::unique_ptr<StreamFilter> s;
};

// A job that holds one pool thread until released, and tells when it starts (with one pool
// thread: when every job queued before it is done).
struct Blocker {
  std::promise<void> release;
  std::shared_future<void> released{release.get_future().share()};
  std::shared_ptr<std::promise<void>> starts = std::make_shared<std::promise<void>>();
  std::future<void> started = starts->get_future();
  bool submitTo(WafPool& pool) {
    return pool.submit({WafPool::Clock::now() + 60s, [r = released, s = starts](WafPool::Outcome) {
                          s->set_value();
                          r.wait();
                        }});
  }
  void open() { release.set_value(); }
};

// A WebSocket session past its handshake (which passed).
void handshake(Stream& st) {
  RequestHead h = upgrade();
  ASSERT_EQ(st.s->onRequestHead(h), Status::kStop);
  ASSERT_EQ(st.cb.d.runPosted(), 1u);
  ASSERT_EQ(st.cb.resumes, 1);
  ASSERT_EQ(st.cb.reply_status, 0);
}

MessageVerdict judge(Stream& st, std::string payload, MessageType type = MessageType::kText,
                     Direction d = Direction::kDownstreamToUpstream) {
  Message m(d, type, &payload);
  const size_t before = st.cb.verdicts.size();
  Status status = st.s->onMessage(m);
  if (status == Status::kContinue) {
    return MessageVerdict::forward();
  }
  EXPECT_EQ(st.cb.d.runPosted(), 1u);
  EXPECT_EQ(st.cb.verdicts.size(), before + 1);
  return st.cb.verdicts.empty() ? MessageVerdict{} : st.cb.verdicts.back();
}

TEST(WafFilter, ConfigErrorsNameTheKey) {
  const std::pair<const char*, const char*> bad[] = {
      {"inspect = [\"request_body\"]", "needs"},
      {"inspect = [\"responses\"]", "unknown part"},
      {"inspect = []", "nothing"},
      {"paranoia_level = 5", "paranoia_level"},
      {"on_match = \"block\"", "on_match"},
      {"mode = \"enforce\"", "mode"},
      {"time_budget = \"0ms\"", "time_budget"},
      {"allowed_methods = [\"get\"]", "not a method"},
      {"rules = [\"/nonexistent/sluice-test-rules.conf\"]", "do not load"},
      {"paranoia = 2", "paranoia_level"},  // did you mean
      {"audit_log = \"/nonexistent-dir/audit.log\"", "cannot open"},
  };
  for (const auto& [keys, expect] : bad) {
    conf::Diagnostics d;
    EXPECT_FALSE(build(keys, &d)) << keys;
    ASSERT_FALSE(d.empty()) << keys;
    EXPECT_NE(d[0].format().find(expect), std::string::npos) << keys << ": " << d[0].format();
    EXPECT_NE(d[0].format().find("test.toml:"), std::string::npos) << d[0].format();
  }
}

TEST(WafFilter, RequestsAreJudgedOnThePool) {
  auto f = build("pool_threads = 1");
  testing::RecordingStats stats;
  f->bindStats(stats);
  EXPECT_EQ(f->phases(), Filter::kRequestHead | Filter::kRequestBody | Filter::kMessage);
  {
    Stream st(*f);
    RequestHead h = head("/search?q=blue+shoes");
    // Buffered (the body phase), then judged off this thread: the verdict comes by a post.
    ASSERT_EQ(st.s->onRequestHead(h), Status::kStopAndBuffer);
    EXPECT_EQ(st.s->onRequestBody({}, true), Status::kStop);
    // The end of a bodiless request may be announced again: still waiting.
    EXPECT_EQ(st.s->onRequestBody({}, true), Status::kStop);
    EXPECT_EQ(st.cb.resumes, 0);
    EXPECT_EQ(st.cb.d.runPosted(), 1u);
    EXPECT_EQ(st.cb.resumes, 1);
    EXPECT_EQ(st.cb.reply_status, 0);
    EXPECT_EQ(st.cb.d.armedTimers(), 0u);  // the budget timer is disarmed
  }
  {
    Stream st(*f);
    RequestHead h = head("/search?q=1%27%20OR%20%271%27%3D%271");
    ASSERT_EQ(st.s->onRequestHead(h), Status::kStopAndBuffer);
    EXPECT_EQ(st.s->onRequestBody({}, true), Status::kStop);
    EXPECT_EQ(st.cb.d.runPosted(), 1u);
    EXPECT_EQ(st.cb.reply_status, 403);
    EXPECT_EQ(st.cb.resumes, 0);
  }
  {
    Stream st(*f);
    RequestHead h = head("/api/items", "POST");
    h.add("Content-Type", "application/json");
    std::string body = R"({"name":"<script>alert(document.cookie)</script>"})";
    h.add("Content-Length", std::to_string(body.size()));
    ASSERT_EQ(st.s->onRequestHead(h), Status::kStopAndBuffer);
    EXPECT_EQ(st.s->onRequestBody(body, true), Status::kStop);
    EXPECT_EQ(st.cb.d.runPosted(), 1u);
    EXPECT_EQ(st.cb.reply_status, 403);
  }
  EXPECT_EQ(stats.value("sluice_waf_evaluations_total,filter=w,subject=request,verdict=block"), 2u);
  EXPECT_EQ(stats.value("sluice_waf_matches_total,filter=w,rule=942100,action=deny"), 1u);
  EXPECT_EQ(stats.value("sluice_waf_matches_total,filter=w,rule=941100,action=deny"), 1u);
  EXPECT_EQ(stats.value("sluice_waf_matches_total,filter=w,rule=949110,action=deny"), 2u);
}

TEST(WafFilter, HeadersOnlyJudgesTheQueryButNotTheBody) {
  auto f = build("inspect = [\"request_headers\"]\npool_threads = 1");
  EXPECT_EQ(f->phases(), Filter::kRequestHead);
  Stream attack(*f);
  RequestHead h = head("/x?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
  ASSERT_EQ(attack.s->onRequestHead(h), Status::kStop);  // no body wanted
  attack.cb.d.runPosted();
  EXPECT_EQ(attack.cb.reply_status, 403);
  // A JSON body is not read, and not refused either for failing to parse (it was not given).
  Stream body(*f);
  RequestHead p = head("/api", "POST");
  p.add("Content-Type", "application/json");
  p.add("Content-Length", "40");
  ASSERT_EQ(body.s->onRequestHead(p), Status::kStop);
  body.cb.d.runPosted();
  EXPECT_EQ(body.cb.reply_status, 0);
  EXPECT_EQ(body.cb.resumes, 1);
}

TEST(WafFilter, HandshakeContextJudgesMessages) {
  auto f = build("pool_threads = 2");
  testing::RecordingStats stats;
  f->bindStats(stats);
  Stream st(*f, true);
  handshake(st);
  EXPECT_EQ(judge(st, "hello, how is everyone?").kind, MessageVerdict::Kind::kForward);
  EXPECT_EQ(judge(st, R"({"type":"chat","text":"see you at 5"})").kind,
            MessageVerdict::Kind::kForward);
  // Text that only looks like JSON is judged as text, not refused for failing to parse.
  EXPECT_EQ(judge(st, "[citation needed] more on that later").kind, MessageVerdict::Kind::kForward);
  // Backend messages are not inspected unless asked for.
  EXPECT_EQ(
      judge(st, "<script>alert(1)</script>", MessageType::kText, Direction::kUpstreamToDownstream)
          .kind,
      MessageVerdict::Kind::kForward);
  MessageVerdict v = judge(st, R"({"type":"chat","text":"' UNION SELECT password FROM users--"})");
  EXPECT_EQ(v.kind, MessageVerdict::Kind::kClose);
  EXPECT_EQ(v.close_code, 1008);
  EXPECT_GE(stats.value("sluice_waf_matches_total,filter=w,rule=949110,action=close"), 1u);
  EXPECT_EQ(stats.value("sluice_waf_evaluations_total,filter=w,subject=handshake,verdict=pass"),
            1u);
}

TEST(WafFilter, HandshakeAttackIsRefusedBeforeAnyMessage) {
  auto f = build("inspect = [\"ws_client_messages\"]\npool_threads = 1");
  // Only messages are inspected: plain requests pass untouched, the handshake is still judged.
  Stream plain(*f);
  RequestHead p = head("/x?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
  EXPECT_EQ(plain.s->onRequestHead(p), Status::kContinue);
  Stream st(*f, true);
  RequestHead h = upgrade();
  h.url = "/chat?room=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
  ASSERT_EQ(st.s->onRequestHead(h), Status::kStop);
  st.cb.d.runPosted();
  EXPECT_EQ(st.cb.reply_status, 403);
}

TEST(WafFilter, DropAndBackendMessages) {
  auto f = build(
      "on_match = \"drop\"\ninspect = [\"request_headers\", \"ws_client_messages\", "
      "\"ws_backend_messages\"]\npool_threads = 1");
  Stream st(*f, true);
  handshake(st);
  EXPECT_EQ(judge(st, "; cat /etc/passwd").kind, MessageVerdict::Kind::kDrop);
  EXPECT_EQ(judge(st, "fine").kind, MessageVerdict::Kind::kForward);
  EXPECT_EQ(
      judge(st, "<script>alert(1)</script>", MessageType::kText, Direction::kUpstreamToDownstream)
          .kind,
      MessageVerdict::Kind::kDrop);
}

TEST(WafFilter, DetectModeCountsAndLetsThrough) {
  auto f = build("mode = \"detect\"\npool_threads = 1");
  testing::RecordingStats stats;
  f->bindStats(stats);
  Stream st(*f, true);
  RequestHead h = upgrade();
  h.url = "/chat?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
  ASSERT_EQ(st.s->onRequestHead(h), Status::kStop);
  st.cb.d.runPosted();
  EXPECT_EQ(st.cb.reply_status, 0);
  EXPECT_EQ(st.cb.resumes, 1);
  EXPECT_EQ(judge(st, "1' OR '1'='1").kind, MessageVerdict::Kind::kForward);
  EXPECT_GE(stats.value("sluice_waf_matches_total,filter=w,rule=941100,action=log"), 1u);
  EXPECT_GE(stats.value("sluice_waf_matches_total,filter=w,rule=942100,action=log"), 1u);
}

TEST(WafFilter, FullQueueFollowsOnOverload) {
  for (const char* on : {"deny", "allow"}) {
    auto f = build(std::string("pool_threads = 1\nqueue_size = 1\non_overload = \"") + on + "\"");
    testing::RecordingStats stats;
    f->bindStats(stats);
    Blocker running, queued;
    ASSERT_TRUE(running.submitTo(f->pool()));
    running.started.wait();
    ASSERT_TRUE(queued.submitTo(f->pool()));
    Stream st(*f);
    RequestHead h = head("/x");
    ASSERT_EQ(st.s->onRequestHead(h), Status::kStopAndBuffer);
    st.s->onRequestBody({}, true);  // decided at once, inside the call
    if (std::string(on) == "deny") {
      EXPECT_EQ(st.cb.reply_status, 503);
      EXPECT_NE(st.cb.reply_headers.find("Retry-After"), std::string::npos);
    } else {
      EXPECT_EQ(st.cb.reply_status, 0);
      EXPECT_EQ(st.cb.resumes, 1);
    }
    EXPECT_EQ(stats.value(std::string("sluice_waf_overload_total,filter=w,reason=queue_full,"
                                      "action=") +
                          on),
              1u);
    running.open();
    queued.open();
  }
}

TEST(WafFilter, PassedBudgetDecidesAndTheLateVerdictChangesNothing) {
  // A long budget in real time (the pool's deadline), passed on the hand-driven clock.
  auto f = build("pool_threads = 1\ntime_budget = \"60s\"\non_overload = \"deny\"");
  testing::RecordingStats stats;
  f->bindStats(stats);
  Stream st(*f, true);
  handshake(st);
  Blocker busy;
  ASSERT_TRUE(busy.submitTo(f->pool()));
  std::string payload = "<script>alert(1)</script>";
  Message m(Direction::kDownstreamToUpstream, MessageType::kText, &payload);
  ASSERT_EQ(st.s->onMessage(m), Status::kStop);
  st.cb.d.advance(60000);  // the budget passes: on_overload decides
  ASSERT_EQ(st.cb.verdicts.size(), 1u);
  EXPECT_EQ(st.cb.verdicts[0].kind, MessageVerdict::Kind::kClose);
  EXPECT_EQ(st.cb.verdicts[0].close_code, 1013);
  EXPECT_EQ(stats.value("sluice_waf_overload_total,filter=w,reason=budget,action=deny"), 1u);
  // The evaluation still runs (its real deadline is a minute away) and comes back late.
  busy.open();
  EXPECT_EQ(st.cb.d.runPosted(), 1u);
  EXPECT_EQ(st.cb.verdicts.size(), 1u);  // nothing more
  EXPECT_GE(stats.value("sluice_waf_matches_total,filter=w,rule=941100,action=late"), 1u);
}

TEST(WafFilter, HandshakeLetThroughByOverloadStillHasItsMessagesJudged) {
  auto f = build("pool_threads = 1\ntime_budget = \"60s\"\non_overload = \"allow\"");
  Stream st(*f, true);
  Blocker busy;
  ASSERT_TRUE(busy.submitTo(f->pool()));
  RequestHead h = upgrade();
  ASSERT_EQ(st.s->onRequestHead(h), Status::kStop);
  st.cb.d.advance(60000);
  EXPECT_EQ(st.cb.resumes, 1);
  busy.open();
  EXPECT_EQ(st.cb.d.runPosted(), 1u);  // the late handshake verdict: counted only
  EXPECT_EQ(st.cb.resumes, 1);
  EXPECT_EQ(judge(st, "hello").kind, MessageVerdict::Kind::kForward);
  EXPECT_EQ(judge(st, "1 AND (SELECT 1 FROM (SELECT SLEEP(5))a)").kind,
            MessageVerdict::Kind::kClose);
}

TEST(WafFilter, StreamEndingWhileJudgedGetsNoVerdict) {
  auto f = build("pool_threads = 1");
  Blocker busy;
  ASSERT_TRUE(busy.submitTo(f->pool()));
  auto st = std::make_unique<Stream>(*f);
  PoolDispatcher& d = st->cb.d;
  RequestHead h = head("/x?q=1");
  st->s->onRequestHead(h);
  st->s->onRequestBody({}, true);
  st->s->onDestroy();
  Blocker after;
  ASSERT_TRUE(after.submitTo(f->pool()));
  busy.open();
  // The evaluation runs, finds the stream gone and posts nothing to its worker.
  after.started.wait();
  EXPECT_EQ(d.runPosted(0ms), 0u);
  after.open();
  EXPECT_EQ(st->cb.resumes, 0);
  EXPECT_EQ(st->cb.reply_status, 0);
}

TEST(WafFilter, FiltersOfOneNameShareAPool) {
  auto a = build("pool_threads = 1");
  auto b = build("pool_threads = 1");
  auto c = build("pool_threads = 2");
  EXPECT_EQ(&a->pool(), &b->pool());
  EXPECT_NE(&a->pool(), &c->pool());
}

}  // namespace
}  // namespace sluice::filters::waf
