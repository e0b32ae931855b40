// Fuzzes JWT verification over a fixed key set (the RFC 7515 and RFC 8037 example keys: an HMAC
// secret, RSA, EC P-256, EC P-521, Ed25519) and JWKS parsing. The first byte picks the mode:
//   0: the rest is a token, verified as it is (and again through a cache);
//   1: the rest is "header\0claims" (or only claims, under {"alg":"HS256"}), HMAC-signed here
//      with the set's secret, so that the claim checks run on fuzzed JSON behind a valid
//      signature;
//   2: the rest is a JWKS document.
// Nothing may crash, throw or leak; every refusal has a reason and a single-line detail.

#include <cstddef>
#include <cstdint>
#include <string>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "filters/jwt/base64url.h"
#include "filters/jwt/cache.h"
#include "filters/jwt/key_set.h"
#include "filters/jwt/verifier.h"

namespace {

using namespace sluice::filters::jwt;

constexpr int64_t kNow = 1300819000;  // before the RFC 7515 examples' exp

const char kJwks[] = R"({"keys":[
{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
{"kty":"RSA","kid":"rsa","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"},
{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
{"kty":"EC","crv":"P-521","x":"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk","y":"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"},
{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})";

struct Fixture {
  KeySet keys;
  std::string secret;
  Verifier plain;
  Verifier strict;
  Fixture() : plain(config(false)), strict(config(true)) {
    KeySetResult r = parseJwks(kJwks);
    if (!r.ok() || r.keys->size() != 5) {
      __builtin_trap();
    }
    keys = *r.keys;
    decodeBase64Url(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
        secret);
  }
  static VerifierConfig config(bool strict) {
    VerifierConfig c;
    for (size_t i = 0; i < kAlgCount; ++i) {
      c.algorithms.push_back(static_cast<Alg>(i));
    }
    if (strict) {
      c.issuers = {"joe"};
      c.audiences = {"api"};
      c.required_claims = {"sub", "exp"};
    }
    return c;
  }
};

const Fixture& fixture() {
  static const Fixture* f = new Fixture();
  return *f;
}

void checkDetail(const std::string& detail) {
  if (detail.empty() || detail.find_first_of("\r\n") != std::string::npos) {
    __builtin_trap();
  }
}

void check(const VerifyResult& r, const Verifier& v) {
  if (r.ok()) {
    if (r.claims->payload().empty()) {
      __builtin_trap();
    }
    if (r.claims->exp() && kNow >= *r.claims->exp() + v.config().leeway_seconds) {
      __builtin_trap();  // accepted after its expiry
    }
    for (const auto& [name, value] : r.claims->values()) {
      if (r.claims->get(name) != value) {
        __builtin_trap();
      }
    }
  } else {
    if (static_cast<size_t>(r.error.reason) >= kReasonCount) {
      __builtin_trap();
    }
    checkDetail(r.error.detail);
  }
}

void verifyBoth(const std::string& token) {
  const Fixture& f = fixture();
  for (const Verifier* v : {&f.plain, &f.strict}) {
    VerificationCache cache(4);
    VerifyResult a = v->verify(token, f.keys, kNow, cache);
    check(a, *v);
    VerifyResult b = v->verify(token, f.keys, kNow, cache);
    check(b, *v);
    if (a.ok() != b.ok() || (b.ok() && !b.cached)) {
      __builtin_trap();  // the cache changed the answer, or did not remember
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      verifyBoth(rest);
      break;
    case 1: {
      size_t nul = rest.find('\0');
      std::string header = nul == std::string::npos ? R"({"alg":"HS256"})" : rest.substr(0, nul);
      std::string claims = nul == std::string::npos ? rest : rest.substr(nul + 1);
      std::string input = encodeBase64Url(header) + "." + encodeBase64Url(claims);
      unsigned char mac[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      const std::string& secret = fixture().secret;
      HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
      verifyBoth(input + "." + encodeBase64Url(std::string(reinterpret_cast<char*>(mac), len)));
      break;
    }
    default: {
      KeySetResult r = parseJwks(rest);
      if (r.ok()) {
        if (r.keys->size() > kMaxJwksKeys) {
          __builtin_trap();
        }
        for (const std::string& note : r.keys->skipped()) {
          checkDetail(note);
        }
        // A token checked against the new set must not crash either.
        (void)fixture().plain.verify("eyJhbGciOiJSUzI1NiJ9.e30.AAAA", r.keys->merge(fixture().keys),
                                     kNow);
      } else {
        checkDetail(r.error);
      }
    }
  }
  return 0;
}
