#include "filters/jwt/jwt_filter.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "filters/jwt/alg.h"
#include "filters/log.h"
#include "filters/options.h"
#include "filters/request_key.h"

namespace sluice::filters::jwt {

namespace {

using Clock = std::chrono::steady_clock;

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

int64_t systemMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The last good remote set per URL, for the whole process: a reload builds a new filter, which
// starts with what the old one had instead of an empty set (the JWKS server may be down just
// then). Main thread only in practice; the lock keeps it honest.
struct RemoteSet {
  std::shared_ptr<const KeySet> keys;
  std::array<uint8_t, 32> digest{};
};
std::mutex& lastGoodMutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, RemoteSet>& lastGood() {
  static std::map<std::string, RemoteSet> m;
  return m;
}

bool isTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool validHeaderName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), isTokenChar);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// A header value may carry a claim only without control characters (CR and LF above all: they
// would end the header line). Bytes from 0x80 are UTF-8 and pass.
bool safeHeaderValue(std::string_view v) {
  return std::none_of(v.begin(), v.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// RFC 6750's error_description allows %x20-21 / %x23-5B / %x5D-7E: the verifier's details
// quote with '"', which becomes '\''; anything else outside the set becomes '?'.
std::string challengeText(std::string_view s) {
  std::string out;
  out.reserve(std::min<size_t>(s.size(), 160));
  for (char c : s.substr(0, 160)) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"') {
      out.push_back('\'');
    } else if (c == '\\' || u < 0x20 || u >= 0x7f) {
      out.push_back('?');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// How many values a source carries, and the first.
struct Found {
  size_t count = 0;
  std::string_view value;
};

Found first(const std::vector<std::string_view>& values) {
  Found f;
  f.count = values.size();
  if (!values.empty()) {
    f.value = values.front();
  }
  return f;
}

// Every comma-separated entry of the Sec-WebSocket-Protocol lines, trimmed.
std::vector<std::string_view> protocolEntries(const HeaderFields& head) {
  std::vector<std::string_view> out;
  for (const Header& h : head.headers) {
    if (!iequals(h.name, "sec-websocket-protocol")) {
      continue;
    }
    std::string_view v = h.value;
    while (true) {
      size_t comma = v.find(',');
      std::string_view e = trim(v.substr(0, comma));
      if (!e.empty()) {
        out.push_back(e);
      }
      if (comma == std::string_view::npos) {
        break;
      }
      v.remove_prefix(comma + 1);
    }
  }
  return out;
}

}  // namespace

// ---- token sources -------------------------------------------------------------------------

std::optional<TokenSource> TokenSource::parse(std::string_view text, std::string* why) {
  TokenSource s;
  s.text = text;
  if (text == "subprotocol") {
    s.kind = Kind::kSubprotocol;
    return s;
  }
  size_t colon = text.find(':');
  std::string_view kind = text.substr(0, colon);
  std::string_view name = colon == std::string_view::npos ? "" : text.substr(colon + 1);
  if (kind == "header") {
    s.kind = Kind::kHeader;
  } else if (kind == "cookie") {
    s.kind = Kind::kCookie;
  } else if (kind == "query") {
    s.kind = Kind::kQuery;
  } else {
    *why = "'" + std::string(text) +
           "' is not a token source (\"header:NAME\", \"cookie:NAME\", \"query:NAME\" or "
           "\"subprotocol\")";
    return std::nullopt;
  }
  if (!validHeaderName(name) || (s.kind == Kind::kQuery && name.find('=') != std::string::npos)) {
    *why = "'" + std::string(text) + "' needs a name after the colon (letters, digits, -_.)";
    return std::nullopt;
  }
  s.name = name;
  return s;
}

bool looksLikeJws(std::string_view e) {
  if (!e.starts_with("eyJ")) {
    return false;
  }
  int dots = 0;
  for (char c : e) {
    if (c == '.') {
      ++dots;
    } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_')) {
      return false;
    }
  }
  return dots == 2;
}

// ---- per worker ----------------------------------------------------------------------------

class JwtStream;

class JwtWorkerState : public WorkerState {
 public:
  JwtWorkerState(const JwtFilter& filter, size_t cache_entries)
      : filter_(filter), cache(cache_entries) {}

  // The filter's key set, re-read only when it was replaced.
  const KeySet& keys() {
    uint64_t v = filter_.keysVersion();
    if (v != version_ || keys_ == nullptr) {
      version_ = v;
      keys_ = filter_.keys();
    }
    return *keys_;
  }

  // A fetch ended: the streams that waited for it try again.
  void wake();

  const JwtFilter& filter_;
  VerificationCache cache;
  std::vector<JwtStream*> waiting;

 private:
  std::shared_ptr<const KeySet> keys_;
  uint64_t version_ = 0;
};

// ---- per stream ----------------------------------------------------------------------------

class JwtStream : public StreamFilter {
 public:
  explicit JwtStream(const JwtFilter& f) : f_(f), s_(f.settings()) {}

  Status onRequestHead(RequestHead& head) override {
    head_ = &head;
    // Headers the filter sets are never taken from the client, whatever becomes of its token.
    for (const auto& [claim, header] : s_.forward_claims) {
      head.remove(header);
    }
    size_t found = findToken(head);
    if (from_ != nullptr && from_->kind == TokenSource::Kind::kQuery) {
      // The access log shows the target without the token, whatever happens next.
      callbacks().setLogField(LogField::kPath,
                              rewriteQueryParam(head.url, from_->name, "REDACTED"));
    }
    if (found == 0) {
      deny(401, "missing_token", "no token", f_.counters().deny_missing);
      return Status::kStop;
    }
    if (found > 1) {
      // The backend might read another one than sluice checked.
      deny(401, "malformed", "more than one token in " + from_->text, f_.counters().deny_ambiguous);
      return Status::kStop;
    }
    removeProtocolTokens(head);
    return verify(/*may_wait=*/true);
  }

  void onDestroy() override {
    if (state_ != nullptr) {
      std::erase(state_->waiting, this);
    }
    wait_timer_.reset();
    expiry_timer_.reset();
    head_ = nullptr;
  }

  // After a fetch (or the wait's timeout): one more try, never another wait.
  void retry() {
    wait_timer_.reset();
    if (head_ == nullptr) {
      return;
    }
    if (verify(/*may_wait=*/false) == Status::kContinue) {
      callbacks().resume();
    }
  }

 private:
  JwtWorkerState* state() {
    if (state_ == nullptr) {
      state_ = static_cast<JwtWorkerState*>(callbacks().workerState());
    }
    return state_;
  }

  // How many tokens the first source that carries any has (from_ names it, token_ holds the
  // first), or 0.
  size_t findToken(const RequestHead& head) {
    for (const TokenSource& src : s_.token_from) {
      Found found;
      switch (src.kind) {
        case TokenSource::Kind::kHeader: {
          size_t lines = 0;
          for (const Header& h : head.headers) {
            if (!iequals(h.name, src.name)) {
              continue;
            }
            ++lines;
            std::string_view v = trim(h.value);
            if (v.size() > 7 && iequals(v.substr(0, 7), "bearer ")) {
              v = trim(v.substr(7));
            } else if (iequals(src.name, "authorization")) {
              continue;  // another scheme (Basic, ...): not a bearer token
            }
            if (!v.empty() && found.count++ == 0) {
              found.value = v;
            }
          }
          // A token beside another line of the same header is as ambiguous as two tokens.
          if (found.count > 0) {
            found.count = lines;
          }
          break;
        }
        case TokenSource::Kind::kCookie:
          found = first(cookieValues(head, src.name));
          break;
        case TokenSource::Kind::kQuery:
          found = first(queryValues(head.url, src.name));
          break;
        case TokenSource::Kind::kSubprotocol:
          for (std::string_view e : protocolEntries(head)) {
            if (looksLikeJws(e) && found.count++ == 0) {
              found.value = e;
            }
          }
          break;
      }
      if (found.count > 0) {
        token_ = found.value;
        from_ = &src;
        return found.count;
      }
    }
    return 0;
  }

  // With "subprotocol" among the sources, entries shaped like a token never reach the backend
  // (which could echo one back in its 101); the app's real subprotocols stay.
  void removeProtocolTokens(RequestHead& head) {
    bool any = std::any_of(s_.token_from.begin(), s_.token_from.end(), [](const TokenSource& t) {
      return t.kind == TokenSource::Kind::kSubprotocol;
    });
    if (!any || head.find("sec-websocket-protocol") == nullptr) {
      return;
    }
    std::string kept;
    bool removed = false;
    for (std::string_view e : protocolEntries(head)) {
      if (looksLikeJws(e)) {
        removed = true;
        continue;
      }
      kept += (kept.empty() ? "" : ", ") + std::string(e);
    }
    if (!removed) {
      return;
    }
    head.remove("sec-websocket-protocol");
    if (!kept.empty()) {
      head.add("Sec-WebSocket-Protocol", kept);
    }
  }

  Status verify(bool may_wait) {
    JwtWorkerState* st = state();
    int64_t now = f_.wallMs() / 1000;
    VerifyResult r;
    if (st != nullptr) {
      r = f_.verifier().verify(token_, st->keys(), now, st->cache);
    } else {
      r = f_.verifier().verify(token_, *f_.keys(), now);
    }
    if (r.ok()) {
      return allow(*r.claims, r.cached);
    }
    if (r.error.reason == Reason::kKeyNotFound && may_wait && st != nullptr && f_.remote() &&
        refreshMayHelp(st->keys(), r.error.kid) && f_.requestRefresh()) {
      // Wait for the fetch's outcome (announced through JwtWorkerState::wake), bounded.
      st->waiting.push_back(this);
      wait_timer_ = callbacks().dispatcher().createTimer([this] {
        std::erase(state_->waiting, this);
        retry();
      });
      wait_timer_->arm(s_.jwks_timeout + std::chrono::milliseconds(500));
      return Status::kStop;
    }
    Reason reason = r.error.reason;
    uint16_t status = reason == Reason::kMissingClaim ? 403 : 401;
    deny(status, reasonName(reason), r.error.detail,
         f_.counters().deny[static_cast<size_t>(reason)]);
    return Status::kStop;
  }

  bool refreshMayHelp(const KeySet& keys, const std::string& kid) const {
    if (!f_.remoteLoaded()) {
      return true;
    }
    if (kid.empty()) {
      return false;
    }
    return std::none_of(keys.keys().begin(), keys.keys().end(),
                        [&](const auto& k) { return k->kid() == kid; });
  }

  Status allow(const Claims& claims, bool cached) {
    RequestHead& head = *head_;
    // The verified claims, for the filters after this one (a rate limit keyed on "claim:sub").
    for (const auto& [name, value] : claims.values()) {
      callbacks().setAttribute("claim:" + name, value);
    }
    for (const auto& [claim, header] : s_.forward_claims) {
      std::optional<std::string_view> v = claims.get(claim);
      if (!v) {
        continue;
      }
      if (!safeHeaderValue(*v)) {
        deny(401, "invalid_claim",
             "claim '" + claim + "' holds control characters and cannot be forwarded",
             f_.counters().deny_claim_value);
        return Status::kStop;
      }
      head.set(header, *v);
    }
    if (s_.strip_token) {
      if (from_->kind == TokenSource::Kind::kHeader) {
        head.remove(from_->name);
      } else if (from_->kind == TokenSource::Kind::kQuery) {
        head.url = rewriteQueryParam(head.url, from_->name, std::nullopt);
      }
    }
    unsigned worker = callbacks().dispatcher().workerId();
    (cached ? f_.counters().allow_cached : f_.counters().allow_verified).inc(worker);
    callbacks().setLogField(LogField::kAuth,
                            f_.name() + ":allow:" + (cached ? "cached" : "verified"));
    if (s_.close_on_expiry && callbacks().info().websocket && claims.exp()) {
      // The session lasts as long as a new upgrade with this token would be accepted, plus the
      // grace period.
      int64_t leeway = f_.verifier().config().leeway_seconds;
      expires_at_ms_ = (*claims.exp() + leeway) * 1000 + s_.expiry_grace.count();
      expiry_timer_ = callbacks().dispatcher().createTimer([this] { onExpiryTimer(); });
      armExpiry();
    }
    head_ = nullptr;  // the head phase is over for this filter
    return Status::kContinue;
  }

  void armExpiry() {
    // Long waits are cut into steps of at most a day and checked again against the wall clock,
    // which may have been set since.
    constexpr int64_t kMaxStepMs = int64_t{24} * 3600 * 1000;
    int64_t left = expires_at_ms_ - f_.wallMs();
    expiry_timer_->arm(std::chrono::milliseconds(std::clamp<int64_t>(left, 0, kMaxStepMs)));
  }

  void onExpiryTimer() {
    if (f_.wallMs() < expires_at_ms_) {
      armExpiry();
      return;
    }
    f_.counters().deny_session_expired.inc(callbacks().dispatcher().workerId());
    callbacks().setLogField(LogField::kAuth, f_.name() + ":deny:session_expired");
    callbacks().closeWebSocket(1008, "token expired");
  }

  void deny(uint16_t status, std::string_view reason, const std::string& detail,
            const Counter& counter) {
    counter.inc(callbacks().dispatcher().workerId());
    callbacks().setLogField(LogField::kAuth, f_.name() + ":deny:" + std::string(reason));
    std::string challenge = "WWW-Authenticate: Bearer";
    if (reason != "missing_token") {
      // RFC 6750 3.1: no error code when the request carried no token at all.
      challenge += status == 403 ? " error=\"insufficient_scope\"" : " error=\"invalid_token\"";
      challenge += ", error_description=\"" + challengeText(detail) + "\"";
    }
    challenge += "\r\n";
    head_ = nullptr;
    callbacks().sendLocalReply(status, "token refused (" + std::string(reason) + ")", challenge);
  }

  const JwtFilter& f_;  // kept alive by the stream's FilterManager
  const JwtFilter::Settings& s_;
  JwtWorkerState* state_ = nullptr;
  RequestHead* head_ = nullptr;  // while the head phase waits for this filter
  std::string token_;
  const TokenSource* from_ = nullptr;
  std::unique_ptr<Timer> wait_timer_;
  std::unique_ptr<Timer> expiry_timer_;
  int64_t expires_at_ms_ = 0;
};

void JwtWorkerState::wake() {
  // One at a time, each taken off the list first: a retry may end its own stream.
  while (!waiting.empty()) {
    JwtStream* s = waiting.back();
    waiting.pop_back();
    s->retry();
  }
}

// ---- the filter ----------------------------------------------------------------------------

JwtFilter::JwtFilter(std::string name, Settings settings, KeySet local_keys)
    : Filter(std::move(name)),
      settings_(std::move(settings)),
      verifier_(settings_.verifier),
      local_(std::move(local_keys)),
      clock_(&systemMs),
      keys_(std::make_shared<const KeySet>(local_)) {}

JwtFilter::~JwtFilter() = default;

std::unique_ptr<StreamFilter> JwtFilter::create() const {
  return std::make_unique<JwtStream>(*this);
}

std::shared_ptr<WorkerState> JwtFilter::createWorkerState(Dispatcher& dispatcher) const {
  auto state = std::make_shared<JwtWorkerState>(*this, settings_.cache_entries);
  if (remote()) {
    std::lock_guard lock(states_mutex_);
    std::erase_if(states_, [](const auto& s) { return s.second.expired(); });
    states_.emplace_back(&dispatcher, state);
  }
  return state;
}

void JwtFilter::bindStats(Stats& stats) {
  const char* family = "sluice_auth_decisions_total";
  const char* help = "Authentication decisions, by filter, result and reason.";
  auto c = [&](const char* result, std::string_view reason) {
    return stats.counter(family, help,
                         {{"filter", name()}, {"result", result}, {"reason", std::string(reason)}});
  };
  counters_.allow_verified = c("allow", "verified");
  counters_.allow_cached = c("allow", "cached");
  for (size_t i = 0; i < kReasonCount; ++i) {
    counters_.deny[i] = c("deny", reasonName(static_cast<Reason>(i)));
  }
  counters_.deny_missing = c("deny", "missing_token");
  counters_.deny_ambiguous = c("deny", "malformed");  // the same series as the verifier's
  counters_.deny_claim_value = c("deny", "invalid_claim");
  counters_.deny_session_expired = c("deny", "session_expired");
  if (remote()) {
    const char* rf = "sluice_filter_jwks_refreshes_total";
    const char* rh =
        "JWKS fetches of jwt filters, by result (ok: a new set, unchanged, error: "
        "the last good set stays).";
    counters_.refresh_ok = stats.counter(rf, rh, {{"filter", name()}, {"result", "ok"}});
    counters_.refresh_unchanged =
        stats.counter(rf, rh, {{"filter", name()}, {"result", "unchanged"}});
    counters_.refresh_error = stats.counter(rf, rh, {{"filter", name()}, {"result", "error"}});
  }
}

void JwtFilter::start(Services& services) {
  if (!remote() || started_) {
    return;
  }
  services_ = &services;
  started_ = true;
  main_.store(&services.mainDispatcher(), std::memory_order_release);
  {
    std::lock_guard lock(lastGoodMutex());
    auto it = lastGood().find(settings_.jwks_url);
    if (it != lastGood().end()) {
      remote_digest_ = it->second.digest;
      publish(it->second.keys);
    }
  }
  std::weak_ptr<JwtFilter> weak = weak_from_this();
  timer_ = services.mainDispatcher().createTimer([weak] {
    if (auto f = weak.lock()) {
      f->refresh("interval");
    }
  });
  refresh("start");
}

void JwtFilter::stop() {
  if (!started_) {
    return;
  }
  started_ = false;
  stopped_.store(true, std::memory_order_release);
  timer_.reset();
  notifyWorkers();  // waiting streams decide now, with what there is
}

bool JwtFilter::requestRefresh() const {
  Dispatcher* main = main_.load(std::memory_order_acquire);
  if (main == nullptr || stopped_.load(std::memory_order_acquire)) {
    return false;
  }
  if (fetching_.load(std::memory_order_acquire)) {
    return true;  // its outcome is announced
  }
  int64_t now = steadyMs();
  int64_t last = last_kid_refresh_ms_.load(std::memory_order_relaxed);
  if (now - last < settings_.jwks_min_refresh.count()) {
    return false;
  }
  if (!last_kid_refresh_ms_.compare_exchange_strong(last, now)) {
    return true;  // another stream asked a moment ago
  }
  std::weak_ptr<const JwtFilter> weak = weak_from_this();
  main->post([weak] {
    if (auto f = weak.lock()) {
      std::const_pointer_cast<JwtFilter>(f)->refresh("unknown kid");
    }
  });
  return true;
}

void JwtFilter::refresh(const char* why) {
  if (!started_ || fetching_.load()) {
    return;
  }
  fetching_.store(true, std::memory_order_release);
  FetchRequest r;
  r.url = settings_.jwks_url;
  r.ca_file = settings_.jwks_ca;
  r.timeout = settings_.jwks_timeout;
  r.max_body_bytes = kMaxJwksBytes;
  std::weak_ptr<JwtFilter> weak = weak_from_this();
  services_->fetch(r, [weak](const FetchResult& result) {
    if (auto f = weak.lock()) {
      f->onFetched(result);
    }
  });
}

void JwtFilter::onFetched(const FetchResult& result) {
  fetching_.store(false, std::memory_order_release);
  if (!started_) {
    return;
  }
  std::string error;
  std::optional<KeySet> fetched;
  if (result.status == 0) {
    error = result.error;
  } else if (result.status != 200) {
    error = "HTTP status " + std::to_string(result.status);
  } else {
    KeySetResult parsed = parseJwks(result.body);
    if (!parsed.ok()) {
      error = "invalid JWKS: " + parsed.error;
    } else if (parsed.keys->empty()) {
      error = "the JWKS holds no key sluice can use";
    } else {
      fetched = std::move(parsed.keys);
    }
  }
  const unsigned cell = 0;  // the main thread is the only writer of these series
  if (!fetched) {
    counters_.refresh_error.inc(cell);
    if (!failing_) {
      logLine(LogLevel::kWarn, "filter '" + name() + "': JWKS fetch from " + settings_.jwks_url +
                                   " failed: " + error +
                                   (remoteLoaded() ? "; the last good key set stays in force"
                                                   : "; no key set yet: tokens are refused"));
    }
    failing_ = true;
    scheduleNext(false);
    notifyWorkers();
    return;
  }
  std::optional<VerificationCache::Digest> digest = VerificationCache::digest(result.body);
  bool unchanged = digest && remoteLoaded() && *digest == remote_digest_;
  if (failing_) {
    logLine(LogLevel::kInfo,
            "filter '" + name() + "': JWKS fetch from " + settings_.jwks_url + " works again");
  }
  failing_ = false;
  if (unchanged) {
    counters_.refresh_unchanged.inc(cell);
  } else {
    counters_.refresh_ok.inc(cell);
    auto remote = std::make_shared<const KeySet>(std::move(*fetched));
    remote_digest_ = digest.value_or(std::array<uint8_t, 32>{});
    {
      std::lock_guard lock(lastGoodMutex());
      lastGood()[settings_.jwks_url] = RemoteSet{remote, remote_digest_};
    }
    publish(remote);
    logLine(LogLevel::kInfo, "filter '" + name() + "': " + std::to_string(keys()->size()) +
                                 " keys in force after a JWKS fetch from " + settings_.jwks_url);
  }
  scheduleNext(true);
  notifyWorkers();
}

void JwtFilter::publish(const std::shared_ptr<const KeySet>& remote) {
  keys_.store(std::make_shared<const KeySet>(local_.merge(*remote)), std::memory_order_release);
  remote_loaded_.store(true, std::memory_order_release);
  keys_version_.fetch_add(1, std::memory_order_acq_rel);
}

void JwtFilter::scheduleNext(bool ok) {
  if (timer_ == nullptr) {
    return;
  }
  conf::Duration next = settings_.jwks_refresh;
  if (ok) {
    backoff_ = conf::Duration{0};
  } else {
    // Failures retry sooner, doubling from 1 s up to the refresh interval (at most a minute).
    conf::Duration cap = std::min<conf::Duration>(settings_.jwks_refresh, std::chrono::minutes(1));
    backoff_ = backoff_.count() == 0 ? std::chrono::seconds(1) : std::min(backoff_ * 2, cap);
    next = std::min(backoff_, cap);
  }
  timer_->arm(next);
}

void JwtFilter::notifyWorkers() const {
  std::lock_guard lock(states_mutex_);
  std::erase_if(states_, [](const auto& s) { return s.second.expired(); });
  for (const auto& [dispatcher, weak] : states_) {
    std::weak_ptr<JwtWorkerState> w = weak;
    dispatcher->post([w] {
      if (auto s = w.lock()) {
        s->wake();
      }
    });
  }
}

}  // namespace sluice::filters::jwt

// ---- config --------------------------------------------------------------------------------

namespace sluice::filters::jwt {

namespace {

constexpr size_t kMaxKeyFileBytes = size_t{1024} * 1024;

// The whole file, or nullopt with `why` set.
std::optional<std::string> readFile(const std::string& path, std::string* why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *why = "cannot read '" + path + "'";
    return std::nullopt;
  }
  std::string text;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxKeyFileBytes) {
      *why = "'" + path + "' is larger than 1 MiB";
      return std::nullopt;
    }
  }
  return text;
}

// Headers a claim may never be written into: the message's framing and routing, hop-by-hop
// headers, and the WebSocket handshake.
bool reservedHeader(std::string_view name) {
  for (std::string_view r : {"host", "content-length", "transfer-encoding", "connection", "upgrade",
                             "te", "trailer", "keep-alive", "proxy-connection", "expect"}) {
    if (iequals(name, r)) {
      return true;
    }
  }
  return name.size() >= 14 && iequals(name.substr(0, 14), "sec-websocket-");
}

bool loopbackHost(std::string_view url) {
  std::string_view rest = url.substr(url.find("://") + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  return rest == "localhost" || rest.starts_with("localhost:") || rest.starts_with("127.") ||
         rest.starts_with("[::1]");
}

}  // namespace

FilterPtr JwtFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  Settings s;
  KeySet keys;
  std::string why;

  // Algorithms: every one by default (keys are typed, so none can be used with another's key).
  std::vector<Alg> algs;
  if (auto names = o.strings("algorithms")) {
    for (const std::string& n : *names) {
      std::optional<Alg> a = algFromName(n);
      if (!a) {
        std::string lower = n;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
          return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
        });
        o.error("algorithms", lower == "none" ? "'none' is never accepted"
                                              : "unknown algorithm '" + n +
                                                    "' (known: HS256, HS384, HS512, RS256, RS384, "
                                                    "RS512, PS256, PS384, PS512, ES256, ES384, "
                                                    "ES512, EdDSA)");
        continue;
      }
      algs.push_back(*a);
    }
    if (names->empty()) {
      o.error("algorithms", "'algorithms' is empty: no token could pass");
    }
  } else {
    for (size_t i = 0; i < kAlgCount; ++i) {
      algs.push_back(static_cast<Alg>(i));
    }
  }
  s.verifier.algorithms = algs;

  // Keys.
  auto resolve = [&](std::string_view key, const std::string& text) -> std::optional<std::string> {
    std::optional<std::string> p = conf::detail::resolvePath(text, o.file().dir, why);
    if (!p) {
      o.error(key, "'" + text + "': " + why);
    }
    return p;
  };
  bool any_keys = false;
  if (auto files = o.strings("keys")) {
    any_keys = true;
    for (const std::string& f : *files) {
      std::optional<std::string> path = resolve("keys", f);
      std::optional<std::string> text = path ? readFile(*path, &why) : std::nullopt;
      if (path && !text) {
        o.error("keys", why);
      }
      if (text) {
        KeySetResult r = parsePem(*text);
        if (r.ok()) {
          keys = keys.merge(*r.keys);
        } else {
          o.error("keys", "'" + *path + "': " + r.error);
        }
      }
    }
  }
  if (auto files = o.strings("secrets")) {
    any_keys = true;
    for (const std::string& f : *files) {
      std::optional<std::string> path = resolve("secrets", f);
      std::optional<std::string> text = path ? readFile(*path, &why) : std::nullopt;
      if (path && !text) {
        o.error("secrets", why);
      }
      if (text) {
        // A secret file's line ending is not part of the secret (echo adds one).
        while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) {
          text->pop_back();
        }
        KeySetResult r = hmacSecret(*text);
        if (r.ok()) {
          keys = keys.merge(*r.keys);
        } else {
          o.error("secrets", "'" + *path + "': " + r.error);
        }
      }
    }
  }
  if (auto path = o.path("jwks_file")) {
    any_keys = true;
    std::optional<std::string> text = readFile(*path, &why);
    if (!text) {
      o.error("jwks_file", why);
    } else {
      KeySetResult r = parseJwks(*text);
      if (r.ok()) {
        keys = keys.merge(*r.keys);
      } else {
        o.error("jwks_file", "'" + *path + "': " + r.error);
      }
    }
  }
  if (auto url = o.string("jwks_url")) {
    any_keys = true;
    s.jwks_url = *url;
    if (!url->starts_with("https://") && !(url->starts_with("http://") && loopbackHost(*url))) {
      o.error("jwks_url",
              "'jwks_url' must be an https:// URL (plain http:// only to a loopback address): "
              "keys fetched in clear could be replaced on the way");
    }
  }
  s.jwks_ca = o.path("jwks_ca").value_or("");
  s.jwks_refresh = o.duration("jwks_refresh").value_or(s.jwks_refresh);
  s.jwks_min_refresh = o.duration("jwks_min_refresh").value_or(s.jwks_min_refresh);
  s.jwks_timeout = o.duration("jwks_timeout").value_or(s.jwks_timeout);
  if (s.jwks_refresh < std::chrono::seconds(1)) {
    o.error("jwks_refresh", "'jwks_refresh' must be at least 1s");
  }
  if (s.jwks_timeout.count() <= 0) {
    o.error("jwks_timeout", "'jwks_timeout' must be more than 0s");
  }
  if (!any_keys) {
    o.error("type", "filter '" + config.name +
                        "' (jwt) has no keys: set 'keys', 'secrets', 'jwks_file' or 'jwks_url'");
  }

  // Claims.
  s.verifier.issuers = o.strings("issuers").value_or(std::vector<std::string>{});
  s.verifier.audiences = o.strings("audiences").value_or(std::vector<std::string>{});
  s.verifier.required_claims =
      o.strings("required_claims").value_or(std::vector<std::string>{"exp"});
  if (auto leeway = o.duration("leeway")) {
    if (*leeway > std::chrono::hours(24)) {
      o.error("leeway", "'leeway' must be at most 24h");
    }
    s.verifier.leeway_seconds = std::chrono::duration_cast<std::chrono::seconds>(*leeway).count();
  }
  if (auto max = o.size("max_token_bytes")) {
    if (*max < 64 || *max > uint64_t{1024} * 1024) {
      o.error("max_token_bytes", "'max_token_bytes' must be between 64 and 1MiB");
    }
    s.verifier.max_token_bytes = static_cast<size_t>(*max);
  }

  // Where tokens come from, what goes on.
  std::vector<std::string> from =
      o.strings("token_from").value_or(std::vector<std::string>{"header:Authorization"});
  for (const std::string& t : from) {
    if (auto src = TokenSource::parse(t, &why)) {
      s.token_from.push_back(std::move(*src));
    } else {
      o.error("token_from", why);
    }
  }
  if (from.empty()) {
    o.error("token_from", "'token_from' is empty: no token could be found");
  }
  if (const toml::table* t = o.table("forward_claims")) {
    for (const auto& [claim, node] : *t) {
      const toml::value<std::string>* header = node.as_string();
      if (header == nullptr || !validHeaderName(header->get())) {
        o.error("forward_claims",
                "'forward_claims." + std::string(claim.str()) + "' must be a header name");
        continue;
      }
      if (reservedHeader(header->get())) {
        o.error("forward_claims", "a claim may not be forwarded in '" + header->get() + "'");
        continue;
      }
      for (const auto& [c, h] : s.forward_claims) {
        if (iequals(h, header->get())) {
          o.error("forward_claims", "two claims forwarded in '" + header->get() + "'");
        }
      }
      s.forward_claims.emplace_back(std::string(claim.str()), header->get());
    }
  }
  s.strip_token = o.boolean("strip_token").value_or(false);
  s.close_on_expiry = o.oneOf("on_expiry", {"ignore", "close"}).value_or("ignore") == "close";
  s.expiry_grace = o.duration("expiry_grace").value_or(conf::Duration{0});
  s.cache_entries = o.integer<size_t>("cache_entries", 0, 10'000'000).value_or(s.cache_entries);
  o.finish();
  if (!o.ok()) {
    return nullptr;
  }
  return std::make_shared<JwtFilter>(config.name, std::move(s), std::move(keys));
}

}  // namespace sluice::filters::jwt
