#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "filters/waf/waf_audit.h"
#include "filters/waf/waf_eval.h"
#include "filters/waf/waf_pool.h"
#include "filters/waf/waf_rules.h"

// libmodsecurity 3.0.9's SecLang lexer does not free its input buffer when a load fails
// (LoadErrorNamesFileAndLine): about 2 KiB per failed load, theirs to fix.
extern "C" const char* __lsan_default_suppressions() {  // NOLINT(bugprone-reserved-identifier)
  return "leak:yy_scan_buffer\nleak:yy_scan_bytes\n";
}

namespace sluice::filters::waf {
namespace {

// Loading the CRS takes a while (more under the sanitizers): one rule set per setting, shared.
std::shared_ptr<const WafRules> crs(int paranoia = 1, WafMode mode = WafMode::kBlock) {
  static std::mutex m;
  static std::map<std::pair<int, WafMode>, std::shared_ptr<const WafRules>> loaded;
  std::lock_guard<std::mutex> lock(m);
  auto& slot = loaded[{paranoia, mode}];
  if (!slot) {
    WafSettings s;
    s.rules = debianCrs();
    s.paranoia_level = paranoia;
    s.mode = mode;
    WafLoadResult r = WafRules::load(s);
    EXPECT_TRUE(r.rules) << r.error;
    slot = r.rules;
  }
  return slot;
}

const std::vector<Header> kBrowser{
    {"Host", "app.example.com"},
    {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"},
    {"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    {"Accept-Language", "en-US,en;q=0.5"},
    {"Accept-Encoding", "gzip, deflate, br"},
    {"Cookie", "sid=6b2f0e8f1a; theme=dark"},
};

HttpRequest get(std::string_view uri, const std::vector<Header>& headers = kBrowser) {
  HttpRequest r;
  r.id = "t-1";
  r.client_ip = "192.0.2.10";
  r.client_port = 51000;
  r.server_ip = "192.0.2.1";
  r.server_port = 443;
  r.uri = uri;
  r.headers = headers;
  return r;
}

std::vector<Header> withBody(std::string_view content_type, const std::string& length) {
  std::vector<Header> h(kBrowser.begin(), kBrowser.end() - 1);
  h.push_back({"Content-Type", content_type});
  h.push_back({"Content-Length", length});
  return h;
}

WafVerdict post(std::string_view uri, std::string_view content_type, std::string_view body,
                const WafRules& rules) {
  const std::string length = std::to_string(body.size());
  std::vector<Header> h = withBody(content_type, length);
  HttpRequest r = get(uri, h);
  r.method = "POST";
  r.body = body;
  return evaluateHttp(rules, r);
}

bool has(const WafVerdict& v, int id) {
  std::vector<int> ids = v.ruleIds();
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

std::string ids(const WafVerdict& v) {
  std::string s;
  for (int id : v.ruleIds()) {
    s += std::to_string(id) + " ";
  }
  return s;
}

TEST(WafRules, LoadsDebianCrsWithSettings) {
  auto rules = crs();
  ASSERT_TRUE(rules);
  const std::string& text = rules->text();
  EXPECT_NE(text.find("setvar:tx.paranoia_level=1"), std::string::npos);
  EXPECT_NE(text.find("setvar:tx.inbound_anomaly_score_threshold=5"), std::string::npos);
  EXPECT_NE(text.find("Include /usr/share/modsecurity-crs/rules/*.conf"), std::string::npos);
  EXPECT_NE(text.find("SecRuleEngine On"), std::string::npos);
  WafSettings detect;
  detect.mode = WafMode::kDetect;
  EXPECT_NE(WafRules::configText(detect).find("SecRuleEngine DetectionOnly"), std::string::npos);
}

TEST(WafRules, LoadErrorNamesFileAndLine) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::filesystem::path bad = dir / "sluice_waf_bad.conf";
  {
    std::ofstream f(bad);
    f << "SecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\n"
      << "SecRule ARGS \"@rx b\" \"id:2,phase:2,passs\"\n";
  }
  WafSettings s;
  s.rules = {bad.string()};
  WafLoadResult r = WafRules::load(s);
  EXPECT_FALSE(r.rules);
  EXPECT_NE(r.error.find(bad.string()), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("Line: 2"), std::string::npos) << r.error;
  std::filesystem::remove(bad);

  s.rules = {"/nonexistent/sluice/*.conf"};
  r = WafRules::load(s);
  EXPECT_FALSE(r.rules);
  EXPECT_FALSE(r.error.empty());

  s.rules = {"/etc/x.conf\nSecRuleEngine Off"};
  r = WafRules::load(s);
  EXPECT_FALSE(r.rules);
  EXPECT_NE(r.error.find("not a usable path"), std::string::npos) << r.error;

  s.rules = {};
  s.paranoia_level = 5;
  EXPECT_FALSE(WafRules::load(s).rules);
}

TEST(WafEval, BenignRequestsPass) {
  auto rules = crs();
  WafVerdict v = evaluateHttp(*rules, get("/products?category=shoes&page=2"));
  EXPECT_FALSE(v.intervention) << ids(v);
  EXPECT_FALSE(v.matched()) << ids(v);
  EXPECT_EQ(v.anomaly_score, 0);

  v = post("/api/v1/orders", "application/json",
           R"({"items":[{"sku":"SH-42","qty":1}],"name":"Ana O'Neil","note":"ring twice"})",
           *rules);
  EXPECT_FALSE(v.matched()) << ids(v);
  v = post("/api/messages", "application/json",
           R"({"type":"chat","text":"let's meet at 5 o'clock"})", *rules);
  EXPECT_FALSE(v.matched()) << ids(v);
  v = post("/login", "application/x-www-form-urlencoded", "user=alice%40example.com&remember=on",
           *rules);
  EXPECT_FALSE(v.matched()) << ids(v);
}

TEST(WafEval, AttacksInQueryBodiesAndHeadersAreDenied) {
  auto rules = crs();
  struct Case {
    const char* what;
    WafVerdict verdict;
    int rule;
  };
  std::vector<Header> referer(kBrowser);
  referer.push_back({"Referer", "<script>alert(document.cookie)</script>"});
  std::vector<Header> cookie(kBrowser.begin(), kBrowser.end() - 1);
  cookie.push_back({"Cookie", "sid=1' OR '1'='1"});
  std::vector<Header> ua(kBrowser);
  ua[1].value = "() { :; }; /bin/bash -c 'cat /etc/passwd'";
  const Case cases[] = {
      {"sqli in query", evaluateHttp(*rules, get("/search?q=1%27%20OR%20%271%27%3D%271")), 942100},
      {"xss in query", evaluateHttp(*rules, get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E")),
       941100},
      {"traversal in query", evaluateHttp(*rules, get("/download?file=../../../../etc/passwd")),
       930100},
      {"cmd injection in query",
       evaluateHttp(*rules, get("/ping?host=127.0.0.1%3Bcat%20/etc/passwd")), 932100},
      {"sqli in urlencoded body",
       post("/login", "application/x-www-form-urlencoded", "user=admin%27--&pw=x", *rules), 942100},
      {"xss in urlencoded body",
       post("/comment", "application/x-www-form-urlencoded",
            "text=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", *rules),
       941100},
      {"sqli in JSON body",
       post("/api/login", "application/json", R"({"user":"x' UNION SELECT password FROM users--"})",
            *rules),
       942100},
      {"traversal in JSON body",
       post("/api/files", "application/json", R"({"path":"../../../../etc/passwd"})", *rules),
       930100},
      {"cmd injection in JSON body",
       post("/api/ping", "application/json", R"({"host":"8.8.8.8; cat /etc/passwd"})", *rules),
       932100},
      {"xss in Referer", evaluateHttp(*rules, get("/", referer)), 941110},
      {"sqli in Cookie", evaluateHttp(*rules, get("/", cookie)), 942100},
      {"shellshock in User-Agent", evaluateHttp(*rules, get("/", ua)), 932170},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(c.verdict.intervention) << c.what << ": " << ids(c.verdict);
    EXPECT_EQ(c.verdict.status, 403) << c.what;
    EXPECT_TRUE(has(c.verdict, c.rule)) << c.what << ": " << ids(c.verdict);
    EXPECT_TRUE(has(c.verdict, 949110)) << c.what << ": " << ids(c.verdict);
    EXPECT_GE(c.verdict.anomaly_score, 5) << c.what;
  }
}

TEST(WafEval, MatchCarriesMessageAndCutData) {
  auto rules = crs();
  const std::string long_attack = "1' OR '1'='1' -- " + std::string(400, 'a');
  WafVerdict v = post("/api", "application/json", R"({"q":")" + long_attack + R"("})", *rules);
  ASSERT_TRUE(has(v, 942100)) << ids(v);
  const WafMatch& m = v.matches.front();
  EXPECT_EQ(m.rule_id, 942100);
  EXPECT_EQ(m.severity, 2);
  EXPECT_NE(m.message.find("SQL Injection"), std::string::npos);
  EXPECT_NE(m.data.find("ARGS:json.q"), std::string::npos) << m.data;
  EXPECT_LE(m.data.size(), kMaxMatchData);
}

TEST(WafEval, MalformedJsonBodyIsRefusedWith400) {
  auto rules = crs();
  WafVerdict v = post("/api", "application/json", R"({"q": "unterminated)", *rules);
  EXPECT_TRUE(v.intervention);
  EXPECT_EQ(v.status, 400);
  EXPECT_TRUE(has(v, 200002)) << ids(v);
}

TEST(WafEval, RuleStatusAndBodyLimits) {
  WafSettings s;
  s.rules = {};
  s.request_body_limit = 200;
  s.request_body_no_files_limit = 64;
  s.extra =
      R"(SecRule ARGS:coffee "@streq tea" "id:10001,phase:2,deny,status:418,log,msg:'no tea'")";
  WafLoadResult r = WafRules::load(s);
  ASSERT_TRUE(r.rules) << r.error;
  WafVerdict v = post("/brew", "application/x-www-form-urlencoded", "coffee=tea", *r.rules);
  EXPECT_TRUE(v.intervention);
  EXPECT_EQ(v.status, 418);
  ASSERT_EQ(v.matches.size(), 1u);
  EXPECT_EQ(v.matches[0].message, "no tea");
  // Past the limit without files: the body processor gives up, rule 200002 refuses (400).
  v = post("/brew", "application/x-www-form-urlencoded", "coffee=" + std::string(100, 'x'),
           *r.rules);
  EXPECT_TRUE(v.intervention);
  EXPECT_EQ(v.status, 400);
  EXPECT_EQ(v.ruleIds(), std::vector<int>{200002});
  // Past SecRequestBodyLimit: ModSecurity refuses the body itself (no rule, 403 in 3.0.x).
  v = post("/brew", "application/x-www-form-urlencoded", "coffee=" + std::string(300, 'x'),
           *r.rules);
  EXPECT_TRUE(v.intervention);
  EXPECT_FALSE(v.matched());
}

TEST(WafEval, DetectModeReportsWithoutIntervention) {
  auto rules = crs(1, WafMode::kDetect);
  WafVerdict v = evaluateHttp(*rules, get("/search?q=1%27%20OR%20%271%27%3D%271"));
  EXPECT_FALSE(v.intervention);
  EXPECT_TRUE(has(v, 942100)) << ids(v);
  EXPECT_TRUE(has(v, 949110)) << ids(v);
  EXPECT_GE(v.anomaly_score, 5);

  WafHandshake h = evaluateHandshake(rules, get("/chat"));
  ASSERT_TRUE(h.context);
  v = evaluateMessage(*h.context, "<script>alert(1)</script>", WsPayload::kText);
  EXPECT_FALSE(v.intervention);
  EXPECT_TRUE(has(v, 941100)) << ids(v);
}

TEST(WafWebSocket, AttackMessagesAreCaughtAndChatPasses) {
  auto rules = crs();
  std::vector<Header> upgrade(kBrowser);
  upgrade.push_back({"Upgrade", "websocket"});
  upgrade.push_back({"Connection", "Upgrade"});
  upgrade.push_back({"Sec-WebSocket-Version", "13"});
  upgrade.push_back({"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="});
  WafHandshake h = evaluateHandshake(rules, get("/chat?room=general", upgrade));
  ASSERT_FALSE(h.verdict.matched()) << ids(h.verdict);
  ASSERT_TRUE(h.context);

  const char* chat = R"({"type":"chat","text":"let's meet at 5 o'clock"})";
  ASSERT_TRUE(looksLikeJson(chat));
  WafVerdict v = evaluateMessage(*h.context, chat, WsPayload::kJson);
  EXPECT_FALSE(v.matched()) << ids(v);
  v = evaluateMessage(*h.context, "see you at 5, don't be late", WsPayload::kText);
  EXPECT_FALSE(v.matched()) << ids(v);

  struct Case {
    const char* payload;
    WsPayload kind;
    int rule;
  };
  const Case cases[] = {
      {R"({"type":"chat","text":"1' UNION SELECT password FROM users--"})", WsPayload::kJson,
       942100},
      {"1' OR '1'='1' --", WsPayload::kText, 942100},
      {R"({"type":"chat","text":"<img src=x onerror=alert(1)>"})", WsPayload::kJson, 941100},
      {"<script>alert(document.cookie)</script>", WsPayload::kText, 941100},
      {R"({"file":"../../../../etc/passwd"})", WsPayload::kJson, 930100},
      {"../../../../etc/passwd", WsPayload::kText, 930100},
      {R"({"host":"8.8.8.8; cat /etc/passwd"})", WsPayload::kJson, 932100},
      {"; cat /etc/passwd", WsPayload::kText, 932100},
      {R"([{"deep":{"er":["x' or 1=1--"]}}])", WsPayload::kJson, 942100},
  };
  for (const Case& c : cases) {
    v = evaluateMessage(*h.context, c.payload, c.kind);
    EXPECT_TRUE(v.intervention) << c.payload << ": " << ids(v);
    EXPECT_TRUE(has(v, c.rule)) << c.payload << ": " << ids(v);
  }
  // A message that looks like JSON but is not is refused, as an unparsable JSON body is: its
  // fields could not be inspected.
  v = evaluateMessage(*h.context, R"({"text": "1' or 1=1 --)", WsPayload::kJson);
  EXPECT_TRUE(v.intervention);
  EXPECT_TRUE(has(v, 200002)) << ids(v);
}

TEST(WafWebSocket, HandshakeIsJudgedLikeAnyRequest) {
  auto rules = crs();
  WafHandshake h = evaluateHandshake(rules, get("/chat?room=1%27%20OR%20%271%27%3D%271"));
  EXPECT_TRUE(h.verdict.intervention);
  EXPECT_FALSE(h.context);
}

TEST(WafWebSocket, PhaseOneOnceAgreesWithReplay) {
  for (int pl : {1, 2}) {
    auto rules = crs(pl);
    HttpRequest hs = get("/chat?room=general");
    WafHandshake once = evaluateHandshake(rules, hs, WsPhase1::kOnce);
    WafHandshake replay = evaluateHandshake(rules, hs, WsPhase1::kReplay);
    ASSERT_TRUE(once.context && replay.context);
    for (const char* m : {R"({"type":"chat","text":"let's meet at 5 o'clock"})",
                          R"({"q":"1' OR '1'='1"})", "<svg/onload=alert(1)>", "hello",
                          "; cat /etc/passwd", R"j({"a":{"b":["$(whoami)"]}})j"}) {
      const WsPayload kind = looksLikeJson(m) ? WsPayload::kJson : WsPayload::kText;
      WafVerdict a = evaluateMessage(*once.context, m, kind);
      WafVerdict b = evaluateMessage(*replay.context, m, kind);
      EXPECT_EQ(a.ruleIds(), b.ruleIds()) << "PL" << pl << " " << m;
      EXPECT_EQ(a.anomaly_score, b.anomaly_score) << "PL" << pl << " " << m;
      EXPECT_EQ(a.intervention, b.intervention) << "PL" << pl << " " << m;
    }
  }
}

// Four threads evaluate requests and messages of one shared rule set at once, each checking its
// verdicts against the single-threaded ones. Built with -fsanitize=thread this is the data-race
// check for sharing a RulesSet.
TEST(WafThreads, FourThreadsShareOneRuleSet) {
  auto rules = crs();
  WafHandshake h = evaluateHandshake(rules, get("/chat"));
  ASSERT_TRUE(h.context);
  const std::vector<std::string> uris{"/?q=1%27%20OR%201%3D1--", "/index.html?page=2",
                                      "/?f=../../etc/passwd", "/?c=%3Cscript%3Ex%3C/script%3E"};
  const std::vector<std::string> messages{R"({"t":"hi there"})", "<script>alert(1)</script>",
                                          R"({"q":"1' or 1=1--"})", "see you soon"};
  std::vector<bool> want_http, want_ws;
  for (const std::string& u : uris) {
    want_http.push_back(evaluateHttp(*rules, get(u)).intervention);
  }
  for (const std::string& m : messages) {
    want_ws.push_back(
        evaluateMessage(*h.context, m, looksLikeJson(m) ? WsPayload::kJson : WsPayload::kText)
            .intervention);
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 12; ++i) {
        const size_t k = static_cast<size_t>(t + i) % uris.size();
        if (evaluateHttp(*rules, get(uris[k])).intervention != want_http[k]) {
          ++wrong;
        }
        const std::string& m = messages[k];
        if (evaluateMessage(*h.context, m, looksLikeJson(m) ? WsPayload::kJson : WsPayload::kText)
                .intervention != want_ws[k]) {
          ++wrong;
        }
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(wrong.load(), 0);
}

TEST(WafPool, RunsJobsOnPoolThreads) {
  WafPool pool(2, 8);
  std::mutex m;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::thread::id> where;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(
        pool.submit({WafPool::Clock::now() + std::chrono::seconds(5), [&](WafPool::Outcome o) {
                       std::lock_guard<std::mutex> lock(m);
                       EXPECT_EQ(o, WafPool::Outcome::kRun);
                       where.push_back(std::this_thread::get_id());
                       ++done;
                       cv.notify_all();
                     }}));
  }
  std::unique_lock<std::mutex> lock(m);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done == 6; }));
  for (std::thread::id id : where) {
    EXPECT_NE(id, std::this_thread::get_id());
  }
  lock.unlock();
  EXPECT_EQ(pool.stats().run, 6u);
}

// One thread blocked in a job; the queue then holds `capacity` jobs and refuses the next.
TEST(WafPool, FullQueueRefusesAndStaleJobsExpire) {
  WafPool pool(1, 2);
  std::mutex m;
  std::condition_variable cv;
  bool started = false;
  bool release = false;
  std::vector<WafPool::Outcome> outcomes;
  auto record = [&](WafPool::Outcome o) {
    std::lock_guard<std::mutex> lock(m);
    outcomes.push_back(o);
    cv.notify_all();
  };
  const auto later = WafPool::Clock::now() + std::chrono::seconds(30);
  ASSERT_TRUE(pool.submit({later, [&](WafPool::Outcome) {
                             std::unique_lock<std::mutex> lock(m);
                             started = true;
                             cv.notify_all();
                             cv.wait(lock, [&] { return release; });
                           }}));
  {
    std::unique_lock<std::mutex> lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return started; }));
  }
  // Queued behind the blocked job: one whose budget runs out while it waits, one with time.
  ASSERT_TRUE(pool.submit({WafPool::Clock::now() + std::chrono::milliseconds(1), record}));
  ASSERT_TRUE(pool.submit({later, record}));
  EXPECT_FALSE(pool.submit({later, record}));  // full: the caller applies on_overload
  EXPECT_EQ(pool.queued(), 2u);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard<std::mutex> lock(m);
    release = true;
  }
  cv.notify_all();
  std::unique_lock<std::mutex> lock(m);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return outcomes.size() == 2; }));
  EXPECT_EQ(outcomes[0], WafPool::Outcome::kExpired);
  EXPECT_EQ(outcomes[1], WafPool::Outcome::kRun);
  lock.unlock();
  WafPool::Stats s = pool.stats();
  EXPECT_EQ(s.submitted, 3u);
  EXPECT_EQ(s.rejected, 1u);
  EXPECT_EQ(s.expired, 1u);
  EXPECT_EQ(s.run, 2u);
}

TEST(WafPool, ShutdownCancelsQueuedJobs) {
  std::atomic<int> cancelled{0};
  std::atomic<bool> release{false};
  {
    WafPool pool(1, 4);
    std::atomic<bool> started{false};
    ASSERT_TRUE(
        pool.submit({WafPool::Clock::now() + std::chrono::seconds(30), [&](WafPool::Outcome) {
                       started = true;
                       while (!release) {
                         std::this_thread::sleep_for(std::chrono::milliseconds(1));
                       }
                     }}));
    while (!started) {
      std::this_thread::yield();
    }
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(
          pool.submit({WafPool::Clock::now() + std::chrono::seconds(30), [&](WafPool::Outcome o) {
                         if (o == WafPool::Outcome::kCancelled) {
                           ++cancelled;
                         }
                       }}));
    }
    std::thread releaser([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      release = true;
    });
    pool.shutdown();
    releaser.join();
    EXPECT_FALSE(pool.submit({WafPool::Clock::now(), [](WafPool::Outcome) {}}));
  }
  EXPECT_EQ(cancelled.load(), 3);
}

TEST(WafAudit, OneValidJsonLineWithoutThePayload) {
  WafVerdict v;
  v.intervention = true;
  v.status = 403;
  v.anomaly_score = 10;
  v.matches.push_back({942100, 2, "SQL Injection Attack Detected via libinjection",
                       "Matched Data: s&1c found within ARGS:q: 1\" OR \"1\"=\"1\n\x01"});
  v.matches.push_back({941100, 2, "XSS \xff\xfe bad bytes", std::string(500, 'x') + "\xc3\xa9"});
  std::string line = wafAuditLine(v, {"waf-main", "req-7", "message", "close"});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["type"], "waf");
  EXPECT_EQ(j["filter"], "waf-main");
  EXPECT_EQ(j["request_id"], "req-7");
  EXPECT_EQ(j["subject"], "message");
  EXPECT_EQ(j["action"], "close");
  EXPECT_EQ(j["status"], 403);
  EXPECT_EQ(j["anomaly_score"], 10);
  ASSERT_EQ(j["rules"].size(), 2u);
  EXPECT_EQ(j["rules"][0]["id"], 942100);
  EXPECT_EQ(j["rules"][0]["data"],
            "Matched Data: s&1c found within ARGS:q: 1\" OR \"1\"=\"1\n\x01");
  EXPECT_EQ(j["rules"][1]["msg"], "XSS \xef\xbf\xbd\xef\xbf\xbd bad bytes");
  EXPECT_EQ(j["rules"][1]["data"].get<std::string>().size(), kMaxMatchData);
}

TEST(WafAudit, EscapingCutsAtCharacterBoundaries) {
  std::string out;
  appendJsonEscaped(out, "ab\xc3\xa9", 3);  // "é" would be split: cut before it
  EXPECT_EQ(out, "ab");
  out.clear();
  appendJsonEscaped(out,
                    "\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf");  // surrogate, > U+10FFFF, overlong
  EXPECT_EQ(out.find('\xed'), std::string::npos);
  EXPECT_NO_THROW(nlohmann::json::parse("\"" + out + "\""));
}

}  // namespace
}  // namespace sluice::filters::waf
