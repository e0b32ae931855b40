// The `jwt` filter: where tokens come from, what is forwarded, the statuses and challenges of
// refusals, the per-worker cache, WebSocket expiry timers, and keys fetched from a URL (the
// first fetch, unknown kids, failures keeping the last good set).

#include <gtest/gtest.h>

#include <openssl/hmac.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "filters/jwt/base64url.h"
#include "filters/jwt/jwt_filter.h"
#include "filters/log.h"
#include "tests/unit/support/fakes.h"
#include "tests/unit/support/filter_config.h"

namespace sluice::filters::jwt {
namespace {

constexpr int64_t kNow = 1700000000;
const std::string kSecret = "0123456789abcdef0123456789abcdef-secret";  // 39 bytes
const std::string kData = SLUICE_SOURCE_DIR "/tests/unit/data/jwt/";

std::string hs256(const std::string& payload, const std::string& kid = "",
                  const std::string& secret = kSecret) {
  std::string header = kid.empty() ? R"({"alg":"HS256","typ":"JWT"})"
                                   : R"({"alg":"HS256","typ":"JWT","kid":")" + kid + "\"}";
  std::string input = encodeBase64Url(header) + "." + encodeBase64Url(payload);
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + encodeBase64Url(std::string_view(reinterpret_cast<char*>(mac), len));
}

std::string claims(int64_t exp, const std::string& more = "") {
  return R"({"sub":"alice","exp":)" + std::to_string(exp) + more + "}";
}

// A temporary directory with files the configs name.
class Files {
 public:
  Files() {
    dir_ = std::filesystem::temp_directory_path() /
           ("sluice-jwt-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(dir_);
  }
  ~Files() { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path dir_;
};

std::shared_ptr<JwtFilter> build(const std::string& toml, conf::Diagnostics* out = nullptr) {
  conf::Diagnostics d;
  FilterPtr f = buildFilter(
      testing::filterConfig("name = \"j\"\ntype = \"jwt\"\n" + toml, "/etc/sluice/test.toml"), d);
  if (out != nullptr) {
    *out = d;
  } else {
    EXPECT_TRUE(f) << (d.empty() ? "" : d[0].message);
  }
  auto j = std::dynamic_pointer_cast<JwtFilter>(f);
  if (j) {
    j->setWallClock([] { return kNow * 1000; });
  }
  return j;
}

std::string errors(const std::string& toml) {
  conf::Diagnostics d;
  build(toml, &d);
  std::string out;
  for (const auto& e : d) {
    out += e.message + "\n";
  }
  return out;
}

// One request through one stream of the filter.
struct Pass {
  testing::FakeCallbacks cb;
  std::unique_ptr<StreamFilter> stream;
  RequestHead head;
  Status status = Status::kContinue;

  Pass(const std::shared_ptr<JwtFilter>& f, std::vector<Header> headers, std::string url = "/app",
       WorkerState* state = nullptr, bool websocket = false) {
    head.method = "GET";
    head.url = std::move(url);
    head.headers = std::move(headers);
    cb.state_ = state;
    cb.info_.websocket = websocket;
    stream = f->create();
    stream->setCallbacks(cb);
    status = stream->onRequestHead(head);
  }
  ~Pass() { stream->onDestroy(); }
  bool allowed() const { return status == Status::kContinue && cb.reply_status == 0; }
  std::string header(std::string_view name) const {
    return std::string(head.get(name).value_or("<none>"));
  }
};

std::string secretConfig(Files& files, const std::string& more = "") {
  return "secrets = [\"" + files.write("secret", kSecret + "\n") + "\"]\nleeway = \"0s\"\n" + more;
}

// ---- config --------------------------------------------------------------------------------

TEST(JwtFilterConfig, RefusesWhatCannotWork) {
  EXPECT_NE(errors("algorithms = [\"RS256\"]").find("has no keys"), std::string::npos);
  Files files;
  std::string keys = secretConfig(files);
  EXPECT_NE(errors(keys + "algorithms = [\"none\"]").find("'none' is never accepted"),
            std::string::npos);
  EXPECT_NE(errors(keys + "algorithms = [\"HS257\"]").find("unknown algorithm"), std::string::npos);
  EXPECT_NE(errors(keys + "token_from = [\"body:x\"]").find("is not a token source"),
            std::string::npos);
  EXPECT_NE(errors(keys + "token_from = [\"cookie:\"]").find("needs a name"), std::string::npos);
  EXPECT_NE(errors(keys + "forward_claims = { sub = \"Content-Length\" }").find("may not be"),
            std::string::npos);
  EXPECT_NE(errors(keys + "forward_claims = { sub = \"X A\" }").find("must be a header name"),
            std::string::npos);
  EXPECT_NE(errors(keys + "on_expiry = \"kill\"").find("on_expiry"), std::string::npos);
  EXPECT_NE(errors("jwks_url = \"http://auth.example.com/jwks\"").find("https://"),
            std::string::npos);
  EXPECT_EQ(errors("jwks_url = \"http://127.0.0.1:8080/jwks\""), "");
  EXPECT_NE(errors(keys + "secret = \"x\"").find("secret"), std::string::npos);  // unknown key
  // A secret under 32 bytes, and a PEM public key given as a secret.
  EXPECT_NE(errors("secrets = [\"" + files.write("short", "short\n") + "\"]").find("short'"),
            std::string::npos);
  EXPECT_NE(errors("secrets = [\"" + kData + "rsa.pub\"]").find("rsa.pub'"), std::string::npos);
  EXPECT_NE(errors("keys = [\"" + kData + "missing.pub\"]").find("cannot read"), std::string::npos);
}

TEST(JwtFilterConfig, SecretFileLineEndingIsNotPartOfTheSecret) {
  Files files;
  auto f = build("secrets = [\"" + files.write("s", kSecret + "\r\n\n") + "\"]");
  Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60))}});
  EXPECT_TRUE(r.allowed()) << r.cb.reply_reason;
}

// ---- sources and forwarding ----------------------------------------------------------------

TEST(JwtFilter, BearerTokenPassesAndClaimsAreForwarded) {
  Files files;
  auto f =
      build(secretConfig(files, "forward_claims = { sub = \"X-User-Id\", role = \"X-Role\" }"));
  Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60, R"(,"role":["a","b"])"))},
             {"X-User-Id", "mallory"},
             {"x-user-id", "mallory2"}});
  ASSERT_TRUE(r.allowed()) << r.cb.reply_reason;
  EXPECT_EQ(r.head.count("X-User-Id"), 1u);
  EXPECT_EQ(r.header("X-User-Id"), "alice");
  EXPECT_EQ(r.header("X-Role"), R"(["a","b"])");
  EXPECT_NE(r.header("Authorization"), "<none>");  // strip_token is off
  EXPECT_EQ(r.cb.log_auth, "j:allow:verified");
  // Every verified claim is an attribute for the filters after this one.
  EXPECT_EQ(r.cb.attribute("claim:sub"), "alice");
  EXPECT_EQ(r.cb.attribute("claim:role"), R"(["a","b"])");
  EXPECT_EQ(r.cb.attribute("claim:nope"), std::nullopt);
}

TEST(JwtFilter, ClientHeadersOfForwardedClaimsGoEvenWhenTheClaimIsAbsent) {
  Files files;
  auto f = build(secretConfig(files, "forward_claims = { tenant = \"X-Tenant\" }"));
  Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60))}, {"X-Tenant", "evil"}});
  ASSERT_TRUE(r.allowed());
  EXPECT_EQ(r.header("X-Tenant"), "<none>");
}

TEST(JwtFilter, ClaimWithControlCharactersIsNeverAHeader) {
  Files files;
  auto f = build(secretConfig(files, "forward_claims = { sub = \"X-User-Id\" }"));
  std::string evil = R"({"sub":"alice\r\nX-Admin: 1","exp":)" + std::to_string(kNow + 60) + "}";
  Pass r(f, {{"Authorization", "Bearer " + hs256(evil)}});
  EXPECT_EQ(r.cb.reply_status, 401);
  EXPECT_EQ(r.cb.log_auth, "j:deny:invalid_claim");
  EXPECT_EQ(r.header("X-User-Id"), "<none>");
}

TEST(JwtFilter, MissingTokenGetsABareChallenge) {
  Files files;
  auto f = build(secretConfig(files));
  Pass r(f, {{"Authorization", "Basic dXNlcjpwYXNz"}});
  EXPECT_EQ(r.status, Status::kStop);
  EXPECT_EQ(r.cb.reply_status, 401);
  EXPECT_EQ(r.cb.reply_headers, "WWW-Authenticate: Bearer\r\n");
  EXPECT_EQ(r.cb.log_auth, "j:deny:missing_token");
}

TEST(JwtFilter, RefusalsCarryRfc6750Challenges) {
  Files files;
  auto f = build(secretConfig(files, "required_claims = [\"exp\", \"role\"]"));
  {
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow - 5, R"(,"role":"x")"))}});
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.reply_headers,
              "WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"exp " +
                  std::to_string(kNow - 5) + " is 5 s in the past\"\r\n");
    EXPECT_EQ(r.cb.log_auth, "j:deny:expired");
    EXPECT_EQ(r.cb.reply_reason, "token refused (expired)");
  }
  {
    // A valid token without a required claim: 403.
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60))}});
    EXPECT_EQ(r.cb.reply_status, 403);
    EXPECT_EQ(r.cb.reply_headers,
              "WWW-Authenticate: Bearer error=\"insufficient_scope\", error_description=\"claim "
              "'role' missing\"\r\n");
    EXPECT_EQ(r.cb.log_auth, "j:deny:missing_claim");
  }
  {
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "", kSecret + "x")}});
    EXPECT_EQ(r.cb.log_auth, "j:deny:bad_signature");
  }
  {
    Pass r(f, {{"Authorization", "Bearer not.a\"token"}});
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.log_auth, "j:deny:malformed");
    EXPECT_EQ(r.cb.reply_headers.find('\\'), std::string::npos);
  }
}

TEST(JwtFilter, SourcesInOrderAndTwoTokensAreRefused) {
  Files files;
  auto f = build(secretConfig(
      files,
      "token_from = [\"header:Authorization\", \"cookie:session\", \"query:access_token\"]"));
  std::string good = hs256(claims(kNow + 60));
  std::string expired = hs256(claims(kNow - 60));
  {
    Pass r(f, {{"Cookie", "a=1; session=" + good + "; b=2"}}, "/app?access_token=" + expired);
    EXPECT_TRUE(r.allowed()) << "the cookie comes before the query";
  }
  {
    Pass r(f, {}, "/app?x=1&access_token=" + good + "&y=2");
    EXPECT_TRUE(r.allowed());
    // The log never shows the token, even when it stays in the request (strip_token is off).
    EXPECT_EQ(r.cb.log_path, "/app?x=1&access_token=REDACTED&y=2");
    EXPECT_EQ(r.head.url, "/app?x=1&access_token=" + good + "&y=2");
  }
  {
    Pass r(f, {{"Authorization", "Bearer " + good}, {"Authorization", "Bearer " + good}});
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.log_auth, "j:deny:malformed");
  }
  {
    Pass r(f, {{"Authorization", "Basic dXNlcjpwYXNz"}, {"Authorization", "Bearer " + good}});
    EXPECT_EQ(r.cb.log_auth, "j:deny:malformed");
  }
  {
    Pass r(f, {}, "/app?access_token=" + good + "&access_token=" + expired);
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.log_path, "/app?access_token=REDACTED&access_token=REDACTED");
  }
  {
    Pass r(f, {{"Cookie", "session=" + good}, {"Cookie", "session=" + expired}});
    EXPECT_EQ(r.cb.log_auth, "j:deny:malformed");
  }
}

TEST(JwtFilter, StripTokenFromHeaderAndQuery) {
  Files files;
  auto f = build(secretConfig(
      files, "strip_token = true\ntoken_from = [\"header:Authorization\", \"query:t\"]"));
  std::string good = hs256(claims(kNow + 60));
  {
    Pass r(f, {{"Authorization", "Bearer " + good}, {"X-Other", "1"}});
    ASSERT_TRUE(r.allowed());
    EXPECT_EQ(r.header("Authorization"), "<none>");
    EXPECT_EQ(r.header("X-Other"), "1");
  }
  {
    Pass r(f, {}, "/ws?room=1&t=" + good);
    ASSERT_TRUE(r.allowed());
    EXPECT_EQ(r.head.url, "/ws?room=1");
  }
  {
    Pass r(f, {}, "/ws?t=" + good);
    ASSERT_TRUE(r.allowed());
    EXPECT_EQ(r.head.url, "/ws");
  }
}

TEST(JwtFilter, SubprotocolTokenIsTakenAndNeverForwarded) {
  Files files;
  auto f = build(secretConfig(files, "token_from = [\"header:Authorization\", \"subprotocol\"]"));
  std::string good = hs256(claims(kNow + 60));
  {
    Pass r(f, {{"Sec-WebSocket-Protocol", "chat, " + good + ", v2.chat.example"}}, "/ws", nullptr,
           true);
    ASSERT_TRUE(r.allowed()) << r.cb.reply_reason;
    EXPECT_EQ(r.header("Sec-WebSocket-Protocol"), "chat, v2.chat.example");
  }
  {
    // The token alone: no protocol is offered to the backend at all.
    Pass r(f, {{"Sec-WebSocket-Protocol", good}}, "/ws", nullptr, true);
    ASSERT_TRUE(r.allowed());
    EXPECT_EQ(r.header("Sec-WebSocket-Protocol"), "<none>");
  }
  {
    // A header token wins; a token-shaped protocol entry is dropped all the same.
    Pass r(f,
           {{"Authorization", "Bearer " + good},
            {"Sec-WebSocket-Protocol", "chat"},
            {"Sec-WebSocket-Protocol", hs256(claims(kNow - 100))}},
           "/ws", nullptr, true);
    ASSERT_TRUE(r.allowed());
    EXPECT_EQ(r.header("Sec-WebSocket-Protocol"), "chat");
  }
  EXPECT_TRUE(looksLikeJws(good));
  EXPECT_FALSE(looksLikeJws("v1.chat.example"));
  EXPECT_FALSE(looksLikeJws("eyJ.a.b.c"));
  EXPECT_FALSE(looksLikeJws("eyJhb.x y.z"));
}

TEST(JwtFilter, Rfc7515Es256ExampleWithAJwksFile) {
  auto f = build("jwks_file = \"" + kData + "rfc7515.jwks.json\"\nalgorithms = [\"ES256\"]\n");
  f->setWallClock([] { return int64_t{1300819000} * 1000; });
  std::ifstream in(kData + "vectors.txt");
  std::string line, token;
  while (std::getline(in, line)) {
    if (line.starts_with("rfc7515_a3 ")) {
      token = line.substr(11);
    }
  }
  ASSERT_FALSE(token.empty());
  Pass ok(f, {{"Authorization", "Bearer " + token}});
  EXPECT_TRUE(ok.allowed()) << ok.cb.reply_reason;
  f->setWallClock([] { return int64_t{1300819380 + 61} * 1000; });  // past exp + 60 s leeway
  Pass late(f, {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(late.cb.log_auth, "j:deny:expired");
}

// ---- the per-worker cache ------------------------------------------------------------------

TEST(JwtFilter, WorkerCacheAnswersTheSecondTime) {
  Files files;
  auto f = build(secretConfig(files));
  testing::FakeDispatcher worker;
  std::shared_ptr<WorkerState> state = f->createWorkerState(worker);
  std::string token = hs256(claims(kNow + 60));
  Pass first(f, {{"Authorization", "Bearer " + token}}, "/", state.get());
  Pass second(f, {{"Authorization", "Bearer " + token}}, "/", state.get());
  EXPECT_EQ(first.cb.log_auth, "j:allow:verified");
  EXPECT_EQ(second.cb.log_auth, "j:allow:cached");
  // A refused token is never cached.
  std::string bad = hs256(claims(kNow + 60), "", kSecret + "!");
  Pass third(f, {{"Authorization", "Bearer " + bad}}, "/", state.get());
  Pass fourth(f, {{"Authorization", "Bearer " + bad}}, "/", state.get());
  EXPECT_EQ(fourth.cb.log_auth, "j:deny:bad_signature");
}

// ---- WebSocket expiry ----------------------------------------------------------------------

TEST(JwtFilter, SessionClosesWith1008WhenTheTokenExpires) {
  Files files;
  auto f = build(secretConfig(files, "on_expiry = \"close\"\nexpiry_grace = \"2s\""));
  int64_t now_ms = kNow * 1000;
  f->setWallClock([&] { return now_ms; });
  Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 10))}}, "/ws", nullptr, true);
  ASSERT_TRUE(r.allowed());
  EXPECT_EQ(r.cb.dispatcher_.armedTimers(), 1u);
  auto advance = [&](uint64_t ms) {
    now_ms += static_cast<int64_t>(ms);
    r.cb.dispatcher_.advance(ms);
  };
  advance(11'999);
  EXPECT_EQ(r.cb.close_code, 0);
  advance(1);
  EXPECT_EQ(r.cb.close_code, 1008);
  EXPECT_EQ(r.cb.close_reason, "token expired");
  EXPECT_EQ(r.cb.log_auth, "j:allow:verified j:deny:session_expired");
}

TEST(JwtFilter, ExpiryTimerFollowsTheWallClockAndEndsWithTheSession) {
  Files files;
  auto f = build(secretConfig(files, "on_expiry = \"close\""));
  int64_t now_ms = kNow * 1000;
  f->setWallClock([&] { return now_ms; });
  {
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 5))}}, "/ws", nullptr, true);
    // The wall clock is set back 3 s: the timer fires after 5 s, finds the token valid for 3 s
    // more by the wall clock, and waits for them.
    now_ms -= 3000;
    now_ms += 5000;
    r.cb.dispatcher_.advance(5000);
    EXPECT_EQ(r.cb.close_code, 0);
    now_ms += 2999;
    r.cb.dispatcher_.advance(2999);
    EXPECT_EQ(r.cb.close_code, 0);
    now_ms += 1;
    r.cb.dispatcher_.advance(1);
    EXPECT_EQ(r.cb.close_code, 1008);
  }
  {
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 5))}}, "/ws", nullptr, true);
    r.stream->onDestroy();
    EXPECT_EQ(r.cb.dispatcher_.armedTimers(), 0u);
  }
  {
    // Plain HTTP requests get no timer.
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 5))}}, "/api", nullptr, false);
    EXPECT_EQ(r.cb.dispatcher_.armedTimers(), 0u);
  }
}

// ---- keys from a URL -----------------------------------------------------------------------

class FakeServices : public Services {
 public:
  struct Pending {
    FetchRequest request;
    std::function<void(FetchResult)> done;
  };
  Dispatcher& mainDispatcher() override { return main; }
  void fetch(const FetchRequest& request, std::function<void(FetchResult)> done) override {
    pending.push_back({request, std::move(done)});
  }
  // Answers the oldest fetch.
  void answer(uint16_t status, const std::string& body, const std::string& error = "") {
    ASSERT_FALSE(pending.empty());
    Pending p = std::move(pending.front());
    pending.erase(pending.begin());
    FetchResult r;
    r.status = status;
    r.body = body;
    r.error = error;
    p.done(r);
  }

  testing::FakeDispatcher main;
  std::vector<Pending> pending;
};

// The filters' log lines while one lives (filters/log.h's sink is process-wide).
class CapturedLog {
 public:
  CapturedLog() {
    lines().clear();
    setLogSink({[](LogLevel) { return true; },
                [](LogLevel, std::string_view line) { lines().emplace_back(line); }});
  }
  ~CapturedLog() {
    setLogSink({[](LogLevel) { return false; }, [](LogLevel, std::string_view) {}});
  }
  static std::vector<std::string>& lines() {
    static std::vector<std::string> captured;
    return captured;
  }
};

std::string octJwks(const std::vector<std::pair<std::string, std::string>>& keys) {
  std::string out = R"({"keys":[)";
  for (size_t i = 0; i < keys.size(); ++i) {
    out += (i ? "," : "") + std::string(R"({"kty":"oct","kid":")") + keys[i].first + R"(","k":")" +
           encodeBase64Url(keys[i].second) + "\"}";
  }
  return out + "]}";
}

const std::string kSecret2 = "another-secret-of-at-least-32-bytes!!";

TEST(JwtFilterRemote, FirstRequestsWaitForTheFirstFetch) {
  auto f = build(
      "jwks_url = \"https://auth.example.test/first/jwks.json\"\njwks_ca = \"/ca.pem\"\n"
      "jwks_timeout = \"2s\"\n");
  FakeServices services;
  testing::FakeDispatcher worker;
  std::shared_ptr<WorkerState> state = f->createWorkerState(worker);
  f->start(services);
  ASSERT_EQ(services.pending.size(), 1u);
  EXPECT_EQ(services.pending[0].request.url, "https://auth.example.test/first/jwks.json");
  EXPECT_EQ(services.pending[0].request.ca_file, "/ca.pem");
  EXPECT_EQ(services.pending[0].request.timeout, std::chrono::seconds(2));

  Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k1")}}, "/", state.get());
  EXPECT_EQ(r.status, Status::kStop);
  EXPECT_EQ(r.cb.reply_status, 0);
  services.answer(200, octJwks({{"k1", kSecret}}));
  EXPECT_EQ(r.cb.resumes, 0);  // the workers hear of it through a posted task
  worker.runPosted();
  EXPECT_EQ(r.cb.resumes, 1);
  EXPECT_EQ(r.cb.log_auth, "j:allow:verified");
  // The next refresh is scheduled on the main thread's timer.
  EXPECT_EQ(services.main.armedTimers(), 1u);
  f->stop();
}

TEST(JwtFilterRemote, UnknownKidRefreshesOnceAndAFailedFetchKeepsTheLastGoodSet) {
  auto f = build(
      "jwks_url = \"https://auth.example.test/rotate/jwks.json\"\njwks_min_refresh = \"10s\"\n"
      "jwks_refresh = \"5m\"\n");
  CapturedLog logs;
  FakeServices services;
  testing::FakeDispatcher worker;
  std::shared_ptr<WorkerState> state = f->createWorkerState(worker);
  f->start(services);
  services.answer(200, octJwks({{"k1", kSecret}}));
  {
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k1")}}, "/", state.get());
    EXPECT_TRUE(r.allowed());
  }
  // A token signed with a key published since: the stream waits, one fetch goes out.
  std::string rotated = hs256(claims(kNow + 60), "k2", kSecret2);
  Pass waiting(f, {{"Authorization", "Bearer " + rotated}}, "/", state.get());
  EXPECT_EQ(waiting.status, Status::kStop);
  services.main.runPosted();
  ASSERT_EQ(services.pending.size(), 1u);
  // Another unknown kid within jwks_min_refresh waits for the same fetch...
  Pass also(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k3", kSecret2)}}, "/",
            state.get());
  EXPECT_EQ(also.status, Status::kStop);
  services.main.runPosted();
  EXPECT_EQ(services.pending.size(), 1u);
  services.answer(200, octJwks({{"k1", kSecret}, {"k2", kSecret2}}));
  worker.runPosted();
  EXPECT_EQ(waiting.cb.resumes, 1);
  EXPECT_EQ(also.cb.reply_status, 401);
  EXPECT_EQ(also.cb.log_auth, "j:deny:key_not_found");
  // ...and once that fetch is over, the rate limit answers at once.
  Pass limited(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k9", kSecret2)}}, "/",
               state.get());
  EXPECT_EQ(limited.cb.reply_status, 401);
  services.main.runPosted();
  EXPECT_TRUE(services.pending.empty());

  // The interval's refresh fails: the last good set stays, and one warning says so.
  services.main.advance(uint64_t{5} * 60 * 1000);
  ASSERT_EQ(services.pending.size(), 1u);
  services.answer(0, "", "connection refused");
  ASSERT_EQ(logs.lines().size(), 3u);  // after two lines for the sets that were loaded
  EXPECT_NE(logs.lines().back().find("the last good key set stays in force"), std::string::npos);
  Pass still(f, {{"Authorization", "Bearer " + rotated}}, "/", state.get());
  EXPECT_TRUE(still.allowed());
  // A retry comes sooner than the interval (1 s), fails again, and is not logged again.
  services.main.advance(1000);
  ASSERT_EQ(services.pending.size(), 1u);
  services.answer(503, "down");
  EXPECT_EQ(logs.lines().size(), 3u);
  services.main.advance(2000);
  services.answer(200, "{\"keys\": [{\"kty\": \"oct\"}]}");  // malformed: still the old set
  Pass again(f, {{"Authorization", "Bearer " + rotated}}, "/", state.get());
  EXPECT_TRUE(again.allowed());
  f->stop();
}

TEST(JwtFilterRemote, UnchangedSetKeepsTheCacheWarm) {
  auto f = build("jwks_url = \"https://auth.example.test/same/jwks.json\"\n");
  FakeServices services;
  testing::FakeDispatcher worker;
  std::shared_ptr<WorkerState> state = f->createWorkerState(worker);
  f->start(services);
  std::string jwks = octJwks({{"k1", kSecret}});
  services.answer(200, jwks);
  uint64_t version = f->keysVersion();
  std::string token = hs256(claims(kNow + 60), "k1");
  { Pass r(f, {{"Authorization", "Bearer " + token}}, "/", state.get()); }
  services.main.advance(uint64_t{5} * 60 * 1000);
  services.answer(200, jwks);
  EXPECT_EQ(f->keysVersion(), version);
  Pass r(f, {{"Authorization", "Bearer " + token}}, "/", state.get());
  EXPECT_EQ(r.cb.log_auth, "j:allow:cached");
  f->stop();
}

TEST(JwtFilterRemote, ANewFilterForTheSameUrlStartsWithTheLastGoodSet) {
  std::string config = "jwks_url = \"https://auth.example.test/reload/jwks.json\"\n";
  auto first = build(config);
  FakeServices services;
  first->start(services);
  services.answer(200, octJwks({{"k1", kSecret}}));
  first->stop();
  // A reload while the JWKS server is down.
  auto second = build(config);
  second->start(services);
  Pass r(second, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k1")}});
  EXPECT_TRUE(r.allowed()) << r.cb.reply_reason;
  services.answer(0, "", "connection refused");
  Pass after(second, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k1")}});
  EXPECT_TRUE(after.allowed());
  second->stop();
}

TEST(JwtFilterRemote, AWaitIsBoundedAndEndsWithTheStream) {
  auto f =
      build("jwks_url = \"https://auth.example.test/slow/jwks.json\"\njwks_timeout = \"1s\"\n");
  FakeServices services;
  testing::FakeDispatcher worker;
  std::shared_ptr<WorkerState> state = f->createWorkerState(worker);
  f->start(services);
  {
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k1")}}, "/", state.get());
    EXPECT_EQ(r.status, Status::kStop);
    r.cb.dispatcher_.advance(1500);
    EXPECT_EQ(r.cb.reply_status, 401);
    EXPECT_EQ(r.cb.log_auth, "j:deny:key_not_found");
  }
  {
    // The client goes away while waiting: the fetch's announcement finds nobody.
    Pass r(f, {{"Authorization", "Bearer " + hs256(claims(kNow + 60), "k1")}}, "/", state.get());
    EXPECT_EQ(r.status, Status::kStop);
  }
  services.answer(200, octJwks({{"k1", kSecret}}));
  worker.runPosted();
  f->stop();
}

}  // namespace
}  // namespace sluice::filters::jwt
