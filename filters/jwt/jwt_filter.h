#pragma once

// type "jwt": JWS-signed tokens verified at the edge (docs/filters/jwt.md).
//
// A request (or WebSocket upgrade) is let through only with a token that the Verifier accepts:
// taken from the first of `token_from` that carries one (the Authorization header's Bearer
// token, another header, a cookie, a query parameter, or a Sec-WebSocket-Protocol entry), then
// checked against the keys (PEM files, HMAC secret files, a JWKS file, a JWKS URL). Refusals
// answer 401 (403 when a required claim is missing) with a WWW-Authenticate challenge (RFC 6750)
// before any 101; every decision is counted in sluice_auth_decisions_total{filter,result,reason}
// and named in the access log's `auth` field, never with the token.
//
// Keys from a URL are fetched by the main thread (Services::fetch) when the filter starts, on an
// interval, and when a token names a kid the set lacks (at most once per jwks_min_refresh); a
// failed fetch keeps the last good set. A new set reaches the workers through an atomic
// shared_ptr, which each worker re-reads only when a version number moved. Requests that need
// a set still being fetched wait for that fetch (bounded by jwks_timeout) instead of failing.
//
// Per worker: a cache of verified tokens (VerificationCache) so that a reconnecting client
// costs a hash and a lookup; the streams waiting for a fetch.
//
// WebSocket sessions with on_expiry = "close" get a timer at their token's exp (plus leeway
// and expiry_grace) that closes the session with 1008.

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "filters/filter.h"
#include "filters/jwt/cache.h"
#include "filters/jwt/key_set.h"
#include "filters/jwt/verifier.h"

namespace sluice::filters::jwt {

// Where a token may come from: "header:NAME", "cookie:NAME", "query:NAME" or "subprotocol".
struct TokenSource {
  enum class Kind : uint8_t { kHeader, kCookie, kQuery, kSubprotocol };
  Kind kind = Kind::kHeader;
  std::string name;  // header, cookie or parameter name
  std::string text;  // as written

  static std::optional<TokenSource> parse(std::string_view text, std::string* why);
};

// True for a Sec-WebSocket-Protocol entry that has the shape of a compact JWS: three base64url
// parts, the first starting "eyJ" (the encoding of `{"`).
bool looksLikeJws(std::string_view entry);

class JwtWorkerState;

class JwtFilter : public Filter, public std::enable_shared_from_this<JwtFilter> {
 public:
  struct Settings {
    VerifierConfig verifier;
    std::vector<TokenSource> token_from;                              // in order
    std::vector<std::pair<std::string, std::string>> forward_claims;  // claim, header
    bool strip_token = false;
    bool close_on_expiry = false;
    conf::Duration expiry_grace{0};
    size_t cache_entries = 4096;
    std::string jwks_url;  // empty: no remote keys
    std::string jwks_ca;   // empty: the system's CAs
    conf::Duration jwks_refresh = std::chrono::minutes(5);
    conf::Duration jwks_min_refresh = std::chrono::seconds(10);
    conf::Duration jwks_timeout = std::chrono::seconds(5);
  };
  // Milliseconds since the epoch (the system clock; tests set their own).
  using WallClock = std::function<int64_t()>;

  JwtFilter(std::string name, Settings settings, KeySet local_keys);
  ~JwtFilter() override;
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  uint8_t phases() const override { return kRequestHead; }
  std::unique_ptr<StreamFilter> create() const override;
  std::shared_ptr<WorkerState> createWorkerState(Dispatcher& dispatcher) const override;
  void bindStats(Stats& stats) override;
  void start(Services& services) override;
  void stop() override;

  const Settings& settings() const { return settings_; }
  const Verifier& verifier() const { return verifier_; }
  bool remote() const { return !settings_.jwks_url.empty(); }
  void setWallClock(WallClock clock) { clock_ = std::move(clock); }
  int64_t wallMs() const { return clock_(); }

  // The key set in force (local keys, and the last good remote set once there is one), and a
  // number that changes whenever it is replaced.
  std::shared_ptr<const KeySet> keys() const { return keys_.load(std::memory_order_acquire); }
  uint64_t keysVersion() const { return keys_version_.load(std::memory_order_acquire); }
  // A remote set has been loaded (by this filter, or carried over from an earlier one).
  bool remoteLoaded() const { return remote_loaded_.load(std::memory_order_acquire); }

  // Any thread: a token named a kid the set does not hold (or no remote set is loaded yet).
  // Asks the main thread for a fetch, at most once per jwks_min_refresh. True when the outcome
  // of a fetch will be announced to the workers (so that the stream may wait for it).
  bool requestRefresh() const;

  // Main thread: what a finished fetch brought (public for tests).
  void onFetched(const FetchResult& result);

  // Decision counters, by reason (bound in bindStats; empty before).
  struct Counters {
    Counter allow_verified, allow_cached;
    Counter deny[kReasonCount];
    Counter deny_missing, deny_ambiguous, deny_claim_value, deny_session_expired;
    Counter refresh_ok, refresh_unchanged, refresh_error;
  };
  const Counters& counters() const { return counters_; }

 private:
  void refresh(const char* why);
  void publish(const std::shared_ptr<const KeySet>& remote);
  void notifyWorkers() const;
  void scheduleNext(bool ok);

  Settings settings_;
  Verifier verifier_;
  KeySet local_;
  WallClock clock_;
  Counters counters_;

  std::atomic<std::shared_ptr<const KeySet>> keys_;
  std::atomic<uint64_t> keys_version_{1};
  std::atomic<bool> remote_loaded_{false};

  // Main thread, between start() and stop().
  Services* services_ = nullptr;
  std::unique_ptr<Timer> timer_;
  bool started_ = false;
  std::array<uint8_t, 32> remote_digest_{};  // of the JWKS text in force
  conf::Duration backoff_{0};
  bool failing_ = false;  // the last fetch failed (logged once per streak)
  // Read by workers.
  std::atomic<Dispatcher*> main_{nullptr};
  std::atomic<bool> fetching_{false};
  std::atomic<bool> stopped_{false};
  mutable std::atomic<int64_t> last_kid_refresh_ms_{INT64_MIN / 2};

  // The workers' states, for announcing fetches to the streams that wait for one.
  mutable std::mutex states_mutex_;
  mutable std::vector<std::pair<Dispatcher*, std::weak_ptr<JwtWorkerState>>> states_;
};

}  // namespace sluice::filters::jwt
