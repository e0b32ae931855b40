#include "filters/jwt/verifier.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "filters/jwt/base64url.h"
#include "filters/jwt/cache.h"
#include "filters/jwt/json_strict.h"
#include "filters/jwt/log_text.h"

namespace sluice::filters::jwt {

namespace {

using Json = nlohmann::json;

// Header and claims are small, flat objects; deeper nesting only costs.
constexpr size_t kMaxTokenJsonDepth = 8;

constexpr std::array<std::string_view, kReasonCount> kReasonNames = {
    "malformed",     "too_large",     "alg_none", "alg_not_allowed",
    "key_not_found", "bad_signature", "expired",  "not_yet_valid",
    "invalid_claim", "issuer",        "audience", "missing_claim",
};

Error error(Reason reason, std::string detail) {
  Error e;
  e.reason = reason;
  e.detail = std::move(detail);
  return e;
}

int64_t saturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? INT64_MAX : INT64_MIN;
  }
  return r;
}

int64_t saturatingSub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) {
    return b > 0 ? INT64_MIN : INT64_MAX;
  }
  return r;
}

// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional. Accepted when it is an
// integer within int64 or a finite double within int64's range; `round_up` rounds fractions
// toward the later time (for nbf and iat), else toward the earlier one (exp): both err on the
// side of refusing.
std::optional<int64_t> numericDate(const Json& v, bool round_up) {
  if (v.is_number_integer() && !v.is_number_unsigned()) {
    return v.get<int64_t>();
  }
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) {
      return std::nullopt;
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0) {
      return std::nullopt;
    }
    d = round_up ? std::ceil(d) : std::floor(d);
    if (d >= 9223372036854775808.0) {
      return std::nullopt;
    }
    return static_cast<int64_t>(d);
  }
  return std::nullopt;  // strings, booleans, null, arrays, objects
}

std::optional<Json> parseObject(std::string_view text, const char* what, Error* err) {
  std::string why;
  std::optional<Json> doc = parseStrictJson(text, &why, kMaxTokenJsonDepth);
  if (!doc) {
    *err = error(Reason::kMalformed, std::string(what) + " is not valid JSON: " + why);
    return std::nullopt;
  }
  if (!doc->is_object()) {
    *err = error(Reason::kMalformed, std::string(what) + " is not a JSON object");
    return std::nullopt;
  }
  return doc;
}

JwsResult verifyJwsImpl(std::string_view token, const KeySet& keys,
                        const std::bitset<kAlgCount>& allowed, size_t max_token_bytes) {
  JwsResult r;
  if (token.size() > max_token_bytes) {
    r.error =
        error(Reason::kTooLarge, "token of " + std::to_string(token.size()) + " bytes (limit " +
                                     std::to_string(max_token_bytes) + ")");
    return r;
  }
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    r.error = error(Reason::kMalformed, "not a compact JWS (three dot-separated parts)");
    return r;
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);

  std::string header_text;
  if (header_b64.empty() || !decodeBase64Url(header_b64, header_text)) {
    r.error = error(Reason::kMalformed, "header is not base64url");
    return r;
  }
  std::optional<Json> header = parseObject(header_text, "header", &r.error);
  if (!header) {
    return r;
  }
  auto alg_it = header->find("alg");
  if (alg_it == header->end() || !alg_it->is_string()) {
    r.error = error(Reason::kMalformed, "header has no alg string");
    return r;
  }
  const std::string& alg_name = alg_it->get_ref<const std::string&>();
  std::string lower = alg_name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
  if (lower == "none") {
    r.error = error(Reason::kAlgNone, "alg " + quotedForLog(alg_name) + " is never accepted");
    return r;
  }
  std::optional<Alg> alg = algFromName(alg_name);
  if (!alg) {
    r.error = error(Reason::kAlgNotAllowed, "alg " + quotedForLog(alg_name) + " is not supported");
    return r;
  }
  if (!allowed.test(static_cast<size_t>(*alg))) {
    r.error = error(Reason::kAlgNotAllowed, "alg " + quotedForLog(alg_name) + " is not allowed");
    return r;
  }
  // RFC 7515 4.1.11: a recipient must refuse a token whose crit names an extension it does not
  // understand; sluice understands none (b64 = false, in particular, is refused this way).
  if (header->contains("crit")) {
    r.error = error(Reason::kMalformed, "crit header not supported");
    return r;
  }
  std::string kid;
  if (auto kid_it = header->find("kid"); kid_it != header->end()) {
    if (!kid_it->is_string()) {
      r.error = error(Reason::kMalformed, "kid is not a string");
      return r;
    }
    kid = kid_it->get<std::string>();
  }

  std::string payload;
  if (!decodeBase64Url(payload_b64, payload)) {
    r.error = error(Reason::kMalformed, "payload is not base64url");
    return r;
  }
  std::string signature;
  if (!decodeBase64Url(signature_b64, signature)) {
    r.error = error(Reason::kMalformed, "signature is not base64url");
    return r;
  }

  std::vector<const Key*> candidates;
  keys.candidates(*alg, kid, candidates);
  if (candidates.empty()) {
    r.error = error(Reason::kKeyNotFound,
                    "no " + std::string(algName(*alg)) + " key" +
                        (kid.empty() ? std::string() : " with kid " + quotedForLog(kid)));
    r.error.kid = kid;
    return r;
  }
  std::string_view input = token.substr(0, dot2);
  for (const Key* key : candidates) {
    if (key->verify(*alg, input, signature)) {
      r.jws = Jws{*alg, std::move(kid), std::move(payload)};
      return r;
    }
  }
  r.error = error(Reason::kBadSignature,
                  std::string(algName(*alg)) + " signature of " + std::to_string(signature.size()) +
                      " bytes does not verify with " + std::to_string(candidates.size()) +
                      (candidates.size() == 1 ? " key" : " keys"));
  return r;
}

// Nothing in the checks throws on any input (types are tested before values are read); only
// allocation can fail. The entry points still catch, so that no exception reaches proxy code.
Error internalError() {
  return error(Reason::kMalformed, "internal error while verifying");
}

std::bitset<kAlgCount> toBits(std::span<const Alg> algs) {
  std::bitset<kAlgCount> bits;
  for (Alg a : algs) {
    bits.set(static_cast<size_t>(a));
  }
  return bits;
}

}  // namespace

std::string_view reasonName(Reason reason) {
  return kReasonNames[static_cast<size_t>(reason)];
}

Claims::Claims(Alg alg, std::string kid, std::string payload,
               std::vector<std::pair<std::string, std::string>> values, std::optional<int64_t> exp)
    : alg_(alg),
      kid_(std::move(kid)),
      payload_(std::move(payload)),
      values_(std::move(values)),
      exp_(exp) {}

std::optional<std::string_view> Claims::get(std::string_view name) const {
  auto it = std::lower_bound(values_.begin(), values_.end(), name,
                             [](const auto& v, std::string_view n) { return v.first < n; });
  if (it == values_.end() || it->first != name) {
    return std::nullopt;
  }
  return std::string_view(it->second);
}

JwsResult verifyJws(std::string_view token, const KeySet& keys, std::span<const Alg> allowed,
                    size_t max_token_bytes) {
  try {
    return verifyJwsImpl(token, keys, toBits(allowed), max_token_bytes);
  } catch (const std::exception&) {
    return {std::nullopt, internalError()};
  }
}

Verifier::Verifier(VerifierConfig config)
    : config_(std::move(config)), allowed_(toBits(config_.algorithms)) {
  config_.leeway_seconds = std::clamp<int64_t>(config_.leeway_seconds, 0, kMaxLeewaySeconds);
  if (config_.max_token_bytes == 0) {
    config_.max_token_bytes = kDefaultMaxTokenBytes;
  }
}

VerifyResult Verifier::verify(std::string_view token, const KeySet& keys, int64_t now) const {
  try {
    JwsResult jws = verifyJwsImpl(token, keys, allowed_, config_.max_token_bytes);
    if (!jws.ok()) {
      return {nullptr, std::move(jws.error), false};
    }
    return checkClaims(jws.jws->alg, std::move(jws.jws->kid), std::move(jws.jws->payload), now);
  } catch (const std::exception&) {
    return {nullptr, internalError(), false};
  }
}

VerifyResult Verifier::verify(std::string_view token, const KeySet& keys, int64_t now,
                              VerificationCache& cache) const {
  if (token.size() > config_.max_token_bytes) {
    return verify(token, keys, now);  // refused by size before anything is hashed
  }
  std::optional<VerificationCache::Digest> digest = VerificationCache::digest(token);
  if (!digest) {
    return verify(token, keys, now);
  }
  if (std::shared_ptr<const Claims> claims = cache.lookup(*digest, keys.generation(), now)) {
    return {std::move(claims), {}, true};
  }
  VerifyResult r = verify(token, keys, now);
  if (r.ok()) {
    int64_t expires_at =
        r.claims->exp() ? saturatingAdd(*r.claims->exp(), config_.leeway_seconds) : INT64_MAX;
    cache.insert(*digest, keys.generation(), expires_at, now, r.claims);
  }
  return r;
}

VerifyResult Verifier::checkClaims(Alg alg, std::string kid, std::string payload,
                                   int64_t now) const {
  VerifyResult r;
  std::optional<Json> claims = parseObject(payload, "claims", &r.error);
  if (!claims) {
    return r;
  }
  const int64_t leeway = config_.leeway_seconds;
  auto date = [&](const char* name, bool round_up, std::optional<int64_t>* out) {
    auto it = claims->find(name);
    if (it == claims->end()) {
      return true;
    }
    *out = numericDate(*it, round_up);
    if (!*out) {
      r.error = error(Reason::kInvalidClaim, std::string(name) + " is not a NumericDate");
      return false;
    }
    return true;
  };
  std::optional<int64_t> exp, nbf, iat;
  if (!date("exp", false, &exp) || !date("nbf", true, &nbf) || !date("iat", true, &iat)) {
    return r;
  }
  if (exp && now >= saturatingAdd(*exp, leeway)) {
    r.error =
        error(Reason::kExpired, "exp " + std::to_string(*exp) + " is " +
                                    std::to_string(saturatingSub(now, *exp)) + " s in the past");
    return r;
  }
  if (nbf && saturatingAdd(now, leeway) < *nbf) {
    r.error = error(Reason::kNotYetValid, "nbf " + std::to_string(*nbf) + " is " +
                                              std::to_string(saturatingSub(*nbf, now)) +
                                              " s in the future");
    return r;
  }
  if (iat && *iat > saturatingAdd(now, leeway)) {
    r.error = error(Reason::kNotYetValid, "iat " + std::to_string(*iat) + " is " +
                                              std::to_string(saturatingSub(*iat, now)) +
                                              " s in the future");
    return r;
  }

  if (!config_.issuers.empty()) {
    auto it = claims->find("iss");
    if (it == claims->end() || !it->is_string()) {
      r.error = error(Reason::kIssuer, "iss missing or not a string");
      return r;
    }
    const std::string& iss = it->get_ref<const std::string&>();
    if (std::find(config_.issuers.begin(), config_.issuers.end(), iss) == config_.issuers.end()) {
      r.error = error(Reason::kIssuer, "iss " + quotedForLog(iss) + " not allowed");
      return r;
    }
  }

  if (!config_.audiences.empty()) {
    auto it = claims->find("aud");
    auto allowed = [&](const Json& v) {
      return v.is_string() && std::find(config_.audiences.begin(), config_.audiences.end(),
                                        v.get_ref<const std::string&>()) != config_.audiences.end();
    };
    bool match = false;
    if (it == claims->end()) {
      r.error = error(Reason::kAudience, "aud missing");
      return r;
    }
    if (it->is_string()) {
      match = allowed(*it);
    } else if (it->is_array()) {
      match = std::any_of(it->begin(), it->end(), allowed);
    } else {
      r.error = error(Reason::kAudience, "aud is neither a string nor an array");
      return r;
    }
    if (!match) {
      r.error = error(Reason::kAudience, "no aud allowed");
      return r;
    }
  }

  for (const std::string& name : config_.required_claims) {
    if (!claims->contains(name)) {
      r.error = error(Reason::kMissingClaim, "claim " + quotedForLog(name) + " missing");
      return r;
    }
  }

  std::vector<std::pair<std::string, std::string>> values;
  values.reserve(claims->size());
  for (auto it = claims->begin(); it != claims->end(); ++it) {
    // Strings were checked for valid UTF-8 by the parser, so dump() does not throw here.
    values.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  }
  // nlohmann's objects are std::maps: items() come sorted by name already.
  r.claims = std::make_shared<const Claims>(alg, std::move(kid), std::move(payload),
                                            std::move(values), exp);
  return r;
}

}  // namespace sluice::filters::jwt
