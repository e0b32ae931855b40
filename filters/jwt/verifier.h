#pragma once

// JWT verification (RFC 7519 over compact JWS, RFC 7515): the engine behind the `jwt` filter.
// Pure code: the key set, the time and the cache come in as arguments; nothing here reads a
// clock or a file. A Verifier is immutable and may be shared by every worker; a
// VerificationCache (cache.h) belongs to one worker.
//
// Every refusal carries a Reason (a short, fixed name for metrics) and a detail for the log.
// Details name what was wrong ("exp 1300819380 is 120 s in the past"), never the token.

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "filters/jwt/alg.h"
#include "filters/jwt/key_set.h"

namespace sluice::filters::jwt {

class VerificationCache;

enum class Reason : uint8_t {
  kMalformed,      // not a compact JWS with JSON header and claims (bad base64url, duplicate keys,
                   // crit, ...)
  kTooLarge,       // longer than max_token_bytes; nothing was parsed
  kAlgNone,        // alg "none" in any case: never accepted
  kAlgNotAllowed,  // an alg sluice does not know, or not in the allow-list
  kKeyNotFound,    // no key fits the alg (and kid): also what algorithm confusion ends in
  kBadSignature,   // keys were tried and none verified the signature
  kExpired,        // now >= exp + leeway
  kNotYetValid,    // now + leeway < nbf, or iat > now + leeway
  kInvalidClaim,   // exp/nbf/iat not a NumericDate (a string, out of int64 range, ...)
  kIssuer,         // iss missing or not allowed (only when issuers are configured)
  kAudience,       // aud missing or none allowed (only when audiences are configured)
  kMissingClaim,   // a required claim is absent
};
inline constexpr size_t kReasonCount = 12;
// "malformed", "too_large", "alg_none", "alg_not_allowed", "key_not_found", "bad_signature",
// "expired", "not_yet_valid", "invalid_claim", "issuer", "audience", "missing_claim".
std::string_view reasonName(Reason reason);

struct Error {
  Reason reason = Reason::kMalformed;
  std::string detail;
  // kKeyNotFound: the token's kid (empty when it has none), so that a caller may fetch a fresher
  // key set when the kid is one it has never seen.
  std::string kid;
};

// The claims of a verified token. Immutable; shared between the cache and its users.
class Claims {
 public:
  Claims(Alg alg, std::string kid, std::string payload,
         std::vector<std::pair<std::string, std::string>> values, std::optional<int64_t> exp);

  // A top-level claim as text: a string as it is (unescaped), anything else as compact JSON
  // (123, true, ["a","b"], {"k":1}). Absent claims give nullopt. Values are whatever the
  // issuer signed: a caller putting them into a header must refuse or encode CR, LF and other
  // control characters itself.
  std::optional<std::string_view> get(std::string_view name) const;
  bool has(std::string_view name) const { return get(name).has_value(); }
  // Every top-level claim, sorted by name.
  const std::vector<std::pair<std::string, std::string>>& values() const { return values_; }

  // exp, rounded down to whole seconds; nullopt when the token has none.
  std::optional<int64_t> exp() const { return exp_; }
  // The decoded payload, exactly as signed (a JSON object).
  const std::string& payload() const { return payload_; }
  Alg alg() const { return alg_; }
  const std::string& kid() const { return kid_; }

 private:
  Alg alg_;
  std::string kid_;
  std::string payload_;
  std::vector<std::pair<std::string, std::string>> values_;
  std::optional<int64_t> exp_;
};

struct VerifyResult {
  std::shared_ptr<const Claims> claims;  // set when the token was accepted
  Error error;                           // why not, otherwise
  bool cached = false;                   // answered by the cache, no signature checked
  bool ok() const { return claims != nullptr; }
};

inline constexpr size_t kDefaultMaxTokenBytes = size_t{16} * 1024;
inline constexpr int64_t kMaxLeewaySeconds = int64_t{24} * 3600;

struct VerifierConfig {
  std::vector<Alg> algorithms;               // the allow-list; empty refuses every token
  std::vector<std::string> issuers;          // empty: iss is not checked
  std::vector<std::string> audiences;        // empty: aud is not checked
  std::vector<std::string> required_claims;  // top-level names that must be present ("exp")
  int64_t leeway_seconds = 60;               // clock skew allowed for exp, nbf, iat
  size_t max_token_bytes = kDefaultMaxTokenBytes;
};

class Verifier {
 public:
  // leeway_seconds is clamped to [0, kMaxLeewaySeconds]; max_token_bytes of 0 means the default.
  explicit Verifier(VerifierConfig config);

  const VerifierConfig& config() const { return config_; }
  bool allows(Alg alg) const { return allowed_.test(static_cast<size_t>(alg)); }

  // Verifies `token` (the bare compact JWS, without "Bearer ") with `keys` at time `now`
  // (seconds since the epoch): size, syntax, alg, key, signature, then exp, nbf, iat, iss,
  // aud and the required claims, in that order; the first failure is returned.
  VerifyResult verify(std::string_view token, const KeySet& keys, int64_t now) const;

  // The same, remembering accepted tokens in `cache` (which must only ever be used with this
  // verifier: it does not know the verifier's claim rules). A hit costs a SHA-256 of the token
  // and a lookup; entries die at exp + leeway, and all of them when `keys` is another set.
  VerifyResult verify(std::string_view token, const KeySet& keys, int64_t now,
                      VerificationCache& cache) const;

 private:
  VerifyResult checkClaims(Alg alg, std::string kid, std::string payload, int64_t now) const;

  VerifierConfig config_;
  std::bitset<kAlgCount> allowed_;
};

// ---- The JWS layer alone (no claims): the signature check of compact JWS over any payload.
// Verifier::verify uses it; it is public for payloads that are not JWT claims (the RFC 7515 and
// RFC 8037 examples sign plain text).

struct Jws {
  Alg alg;
  std::string kid;      // empty when the header has none
  std::string payload;  // decoded
};

struct JwsResult {
  std::optional<Jws> jws;
  Error error;
  bool ok() const { return jws.has_value(); }
};

// Checks, in order: size <= max_token_bytes, three strict base64url parts, a header that is a
// strict JSON object with a string alg, not "none" (any case), a known alg in `allowed`, no
// "crit", a string kid if any, a key in `keys` fitting alg and kid, and a signature that one of
// those keys verifies. jku, x5u, x5c, jwk and every other header member are never looked at.
JwsResult verifyJws(std::string_view token, const KeySet& keys, std::span<const Alg> allowed,
                    size_t max_token_bytes = kDefaultMaxTokenBytes);

}  // namespace sluice::filters::jwt
