#include <gtest/gtest.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <fstream>
#include <map>
#include <sstream>

#include "filters/jwt/base64url.h"
#include "filters/jwt/cache.h"
#include "filters/jwt/json_strict.h"
#include "filters/jwt/key_set.h"
#include "filters/jwt/verifier.h"

namespace sluice::filters::jwt {
namespace {

// ---- Test helpers: files, keys, and a signer so that every attack token carries a valid
// signature and is refused for the reason under test, not for a bad signature.

constexpr int64_t kNow = 1700000000;

std::string dataFile(const std::string& name) {
  std::ifstream in(SLUICE_SOURCE_DIR "/tests/unit/data/jwt/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The RFC example tokens of vectors.txt, by name.
const std::map<std::string, std::string>& vectors() {
  static const std::map<std::string, std::string> v = [] {
    std::map<std::string, std::string> out;
    std::istringstream in(dataFile("vectors.txt"));
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] != '#') {
        size_t sp = line.find(' ');
        out[line.substr(0, sp)] = line.substr(sp + 1);
      }
    }
    return out;
  }();
  return v;
}

const std::string& vec(const std::string& name) {
  return vectors().at(name);
}

KeySet jwks(const std::string& text) {
  KeySetResult r = parseJwks(text);
  EXPECT_TRUE(r.ok()) << r.error;
  return r.ok() ? *r.keys : KeySet();
}

KeySet pem(const std::string& file, std::string_view kid = {}) {
  KeySetResult r = parsePem(dataFile(file), kid);
  EXPECT_TRUE(r.ok()) << file << ": " << r.error;
  return r.ok() ? *r.keys : KeySet();
}

KeySet secret(std::string_view s, std::string_view kid = {}) {
  KeySetResult r = hmacSecret(s, kid);
  EXPECT_TRUE(r.ok()) << r.error;
  return r.ok() ? *r.keys : KeySet();
}

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

PkeyPtr privateKey(const std::string& file) {
  std::string text = dataFile(file);
  BIO* bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
  EVP_PKEY* k = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  EXPECT_NE(k, nullptr) << file;
  return PkeyPtr(k, EVP_PKEY_free);
}

const EVP_MD* md(Alg alg) {
  switch (algHashBytes(alg)) {
    case 32:
      return EVP_sha256();
    case 48:
      return EVP_sha384();
    default:
      return EVP_sha512();
  }
}

std::string hmac(Alg alg, std::string_view key, std::string_view input) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md(alg), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// Raw JWS signature bytes of `input` with a private key (ECDSA converted to r||s).
std::string sign(Alg alg, EVP_PKEY* key, std::string_view input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  bool ed = alg == Alg::kEdDsa;
  EXPECT_EQ(EVP_DigestSignInit(ctx, &pctx, ed ? nullptr : md(alg), nullptr, key), 1);
  if (algFamily(alg) == AlgFamily::kRsaPss) {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
  }
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  EVP_DigestSign(ctx, nullptr, &len, in, input.size());
  std::string sig(len, '\0');
  EXPECT_EQ(
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size()), 1);
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (algFamily(alg) != AlgFamily::kEcdsa) {
    return sig;
  }
  size_t half = alg == Alg::kEs256 ? 32 : alg == Alg::kEs384 ? 48 : 66;
  const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* ecdsa = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
  std::string raw(2 * half, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa), reinterpret_cast<unsigned char*>(raw.data()),
               static_cast<int>(half));
  BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa), reinterpret_cast<unsigned char*>(raw.data()) + half,
               static_cast<int>(half));
  ECDSA_SIG_free(ecdsa);
  return raw;
}

std::string signingInput(std::string_view header, std::string_view payload) {
  return encodeBase64Url(header) + "." + encodeBase64Url(payload);
}

std::string tokenWith(EVP_PKEY* key, Alg alg, std::string_view header, std::string_view payload) {
  std::string input = signingInput(header, payload);
  return input + "." + encodeBase64Url(sign(alg, key, input));
}

constexpr std::string_view kSecret =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

std::string hsToken(std::string_view header, std::string_view payload,
                    std::string_view key = kSecret, Alg alg = Alg::kHs256) {
  std::string input = signingInput(header, payload);
  return input + "." + encodeBase64Url(hmac(alg, key, input));
}

// A JWK for a public key, built from the key itself.
std::string jwkOf(EVP_PKEY* key, const std::string& kid) {
  auto b64bn = [&](const char* name) {
    BIGNUM* bn = nullptr;
    EVP_PKEY_get_bn_param(key, name, &bn);
    std::string out(BN_num_bytes(bn), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
    BN_free(bn);
    return encodeBase64Url(out);
  };
  std::string kid_member = kid.empty() ? "" : "\"kid\":\"" + kid + "\",";
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
      return "{" + kid_member + "\"kty\":\"RSA\",\"n\":\"" + b64bn(OSSL_PKEY_PARAM_RSA_N) +
             "\",\"e\":\"" + b64bn(OSSL_PKEY_PARAM_RSA_E) + "\"}";
    case EVP_PKEY_EC: {
      unsigned char pub[200];
      size_t len = 0;
      EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len);
      size_t half = (len - 1) / 2;
      const char* crv = half == 32 ? "P-256" : half == 48 ? "P-384" : "P-521";
      std::string x(reinterpret_cast<char*>(pub) + 1, half);
      std::string y(reinterpret_cast<char*>(pub) + 1 + half, half);
      return "{" + kid_member + "\"kty\":\"EC\",\"crv\":\"" + crv + "\",\"x\":\"" +
             encodeBase64Url(x) + "\",\"y\":\"" + encodeBase64Url(y) + "\"}";
    }
    default: {
      unsigned char pub[32];
      size_t len = sizeof pub;
      EVP_PKEY_get_raw_public_key(key, pub, &len);
      return "{" + kid_member + "\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" +
             encodeBase64Url(std::string(reinterpret_cast<char*>(pub), len)) + "\"}";
    }
  }
}

std::vector<Alg> allAlgs() {
  std::vector<Alg> all;
  for (size_t i = 0; i < kAlgCount; ++i) {
    all.push_back(static_cast<Alg>(i));
  }
  return all;
}

Verifier verifier(std::vector<Alg> algs = allAlgs()) {
  VerifierConfig c;
  c.algorithms = std::move(algs);
  return Verifier(std::move(c));
}

// A refusal for `why`, or an acceptance; either way the detail is printed on failure.
template <class R>
::testing::AssertionResult refused(const R& r, Reason why) {
  if (r.ok()) {
    return ::testing::AssertionFailure() << "accepted, expected " << reasonName(why);
  }
  if (r.error.reason != why) {
    return ::testing::AssertionFailure() << "refused for " << reasonName(r.error.reason) << " ("
                                         << r.error.detail << "), expected " << reasonName(why);
  }
  return ::testing::AssertionSuccess();
}

template <class R>
::testing::AssertionResult accepted(const R& r) {
  if (!r.ok()) {
    return ::testing::AssertionFailure()
           << "refused for " << reasonName(r.error.reason) << ": " << r.error.detail;
  }
  return ::testing::AssertionSuccess();
}

#define EXPECT_REFUSED(result, why) EXPECT_TRUE(refused((result), (why)))
#define EXPECT_ACCEPTED(result) EXPECT_TRUE(accepted((result)))

// ---- base64url and JSON

TEST(JwtBase64Url, StrictDecoding) {
  std::string out;
  EXPECT_TRUE(decodeBase64Url("Zm9vYmFy", out));
  EXPECT_EQ(out, "foobar");
  out.clear();
  EXPECT_TRUE(decodeBase64Url("Zm9vYg", out));
  EXPECT_EQ(out, "foob");
  out.clear();
  EXPECT_TRUE(decodeBase64Url("-_8", out));
  EXPECT_EQ(out, "\xfb\xff");
  for (std::string_view bad :
       {"Zm9vYg==", "Zm9vYg=", "+_8", "-/8", "Zm9v Yg", "Zm9vY", "QR", "Zm9vYh", "Zm9v\nYg"}) {
    out.clear();
    EXPECT_FALSE(decodeBase64Url(bad, out)) << bad;
  }
  // JWK documents may be padded; tokens may not.
  out.clear();
  EXPECT_TRUE(decodeBase64Url("Zm9vYg==", out, true));
  EXPECT_EQ(out, "foob");
  out.clear();
  EXPECT_FALSE(decodeBase64Url("Zm9vY===", out, true));
  EXPECT_EQ(encodeBase64Url("\xfb\xff"), "-_8");
}

TEST(JwtJson, StrictParsing) {
  std::string why;
  EXPECT_TRUE(parseStrictJson(R"({"a":[1,{"b":null}],"c":"\u00e9"})", &why));
  EXPECT_FALSE(parseStrictJson(R"({"a":1,"a":2})", &why));
  EXPECT_EQ(why, "duplicate key");
  // The same key spelled with an escape is the same key.
  EXPECT_FALSE(parseStrictJson(R"({"alg":"HS256","\u0061lg":"none"})", &why));
  EXPECT_FALSE(parseStrictJson(R"({"o":{"k":1,"k":1}})", &why));
  EXPECT_TRUE(parseStrictJson(R"([{"k":1},{"k":1}])", &why));  // same key, two objects
  EXPECT_FALSE(parseStrictJson(R"({"a":1} x)", &why));
  EXPECT_FALSE(parseStrictJson(R"({"a":1e400})", &why));
  EXPECT_EQ(why, "number out of range");
  EXPECT_FALSE(parseStrictJson(R"({"a":NaN})", &why));
  EXPECT_FALSE(parseStrictJson("{\"a\":\"\xff\"}", &why));  // not UTF-8
  EXPECT_FALSE(parseStrictJson(R"({"a":1,/*c*/"b":2})", &why));
  EXPECT_FALSE(parseStrictJson("", &why));
  std::string deep(20, '[');
  deep += std::string(20, ']');
  EXPECT_FALSE(parseStrictJson(deep, &why, 16));
  EXPECT_EQ(why, "nested too deep");
  EXPECT_TRUE(parseStrictJson(deep, &why, 20));
}

// ---- RFC examples

TEST(JwtRfc, Rfc7515AppendixA) {
  KeySet keys = jwks(dataFile("rfc7515.jwks.json"));
  ASSERT_EQ(keys.size(), 4u);
  std::vector<Alg> algs = allAlgs();
  // A.4 signs the text "Payload", not claims: the JWS layer alone checks it.
  for (const char* name : {"rfc7515_a1", "rfc7515_a2", "rfc7515_a3", "rfc7515_a4"}) {
    EXPECT_ACCEPTED(verifyJws(vec(name), keys, algs)) << name;
  }
  EXPECT_EQ(verifyJws(vec("rfc7515_a4"), keys, algs).jws->payload, "Payload");

  // A.1 to A.3 are JWTs whose exp is 1300819380 (March 2011): valid only on an injected clock.
  Verifier v = verifier();
  for (const char* name : {"rfc7515_a1", "rfc7515_a2", "rfc7515_a3"}) {
    VerifyResult r = v.verify(vec(name), keys, 1300819000);
    ASSERT_TRUE(r.ok()) << name << ": " << r.error.detail;
    EXPECT_EQ(r.claims->get("iss"), "joe");
    EXPECT_EQ(r.claims->get("http://example.com/is_root"), "true");
    EXPECT_EQ(r.claims->exp(), 1300819380);
    EXPECT_REFUSED(v.verify(vec(name), keys, kNow), Reason::kExpired);
    EXPECT_REFUSED(v.verify(vec(name), keys, 1300819380 + 60), Reason::kExpired);
    EXPECT_ACCEPTED(v.verify(vec(name), keys, 1300819380 + 59));  // the leeway
  }
  EXPECT_EQ(v.verify(vec("rfc7515_a1"), keys, 1300819000).claims->alg(), Alg::kHs256);
}

TEST(JwtRfc, Rfc7520Section4) {
  KeySet keys = jwks(dataFile("rfc7520.jwks.json"));
  EXPECT_EQ(keys.size(), 3u);
  ASSERT_EQ(keys.skipped().size(), 1u);  // the "use": "enc" key
  EXPECT_NE(keys.skipped()[0].find("use"), std::string::npos);
  for (const char* name : {"rfc7520_4.1", "rfc7520_4.2", "rfc7520_4.3", "rfc7520_4.4"}) {
    JwsResult r = verifyJws(vec(name), keys, allAlgs());
    ASSERT_TRUE(r.ok()) << name << ": " << r.error.detail;
    EXPECT_EQ(r.jws->payload.substr(0, 6), "It\xe2\x80\x99s");
  }
  EXPECT_EQ(verifyJws(vec("rfc7520_4.2"), keys, allAlgs()).jws->alg, Alg::kPs384);
  EXPECT_EQ(verifyJws(vec("rfc7520_4.1"), keys, allAlgs()).jws->kid,
            "bilbo.baggins@hobbiton.example");
}

TEST(JwtRfc, Rfc8037Ed25519) {
  KeySet keys = jwks(dataFile("rfc8037.jwks.json"));
  JwsResult r = verifyJws(vec("rfc8037_a.4"), keys, allAlgs());
  ASSERT_TRUE(r.ok()) << r.error.detail;
  EXPECT_EQ(r.jws->payload, "Example of Ed25519 signing");
  EXPECT_EQ(r.jws->alg, Alg::kEdDsa);
}

TEST(JwtRfc, TamperedVectorsFail) {
  KeySet keys = jwks(dataFile("rfc7515.jwks.json"))
                    .merge(jwks(dataFile("rfc7520.jwks.json")))
                    .merge(jwks(dataFile("rfc8037.jwks.json")));
  for (const auto& [name, token] : vectors()) {
    EXPECT_ACCEPTED(verifyJws(token, keys, allAlgs())) << name;
    // Change one signature bit, then one payload character.
    std::string t = token;
    size_t sig = t.rfind('.') + 1;
    t[sig + 2] = t[sig + 2] == 'A' ? 'B' : 'A';
    EXPECT_REFUSED(verifyJws(t, keys, allAlgs()), Reason::kBadSignature) << name;
    t = token;
    size_t payload = t.find('.') + 1;
    t[payload] = t[payload] == 'S' ? 'T' : 'S';
    EXPECT_REFUSED(verifyJws(t, keys, allAlgs()), Reason::kBadSignature) << name;
  }
}

// ---- Every algorithm, with keys of our own

TEST(JwtAlgorithms, SignAndVerifyEach) {
  PkeyPtr rsa = privateKey("rsa.key");
  PkeyPtr ec256 = privateKey("ec256.key");
  PkeyPtr ec384 = privateKey("ec384.key");
  PkeyPtr ec521 = privateKey("ec521.key");
  PkeyPtr ed = privateKey("ed25519.key");
  KeySet keys = pem("rsa.pub")
                    .merge(pem("ec256.pub"))
                    .merge(pem("ec384.pub"))
                    .merge(pem("ec521.pub"))
                    .merge(pem("ed25519.pub"))
                    .merge(secret(kSecret));
  ASSERT_EQ(keys.size(), 6u);
  const std::string payload = R"({"sub":"alice","exp":1700000600})";
  struct Case {
    Alg alg;
    EVP_PKEY* key;
  };
  for (Case c :
       {Case{Alg::kRs256, rsa.get()}, Case{Alg::kRs384, rsa.get()}, Case{Alg::kRs512, rsa.get()},
        Case{Alg::kPs256, rsa.get()}, Case{Alg::kPs384, rsa.get()}, Case{Alg::kPs512, rsa.get()},
        Case{Alg::kEs256, ec256.get()}, Case{Alg::kEs384, ec384.get()},
        Case{Alg::kEs512, ec521.get()}, Case{Alg::kEdDsa, ed.get()}, Case{Alg::kHs256, nullptr},
        Case{Alg::kHs384, nullptr}, Case{Alg::kHs512, nullptr}}) {
    std::string header = R"({"alg":")" + std::string(algName(c.alg)) + R"(","typ":"JWT"})";
    std::string token = c.key != nullptr ? tokenWith(c.key, c.alg, header, payload)
                                         : hsToken(header, payload, kSecret, c.alg);
    VerifyResult r = verifier().verify(token, keys, kNow);
    ASSERT_TRUE(r.ok()) << algName(c.alg) << ": " << r.error.detail;
    EXPECT_EQ(r.claims->alg(), c.alg);
    EXPECT_EQ(r.claims->get("sub"), "alice");
    // Allowed by no one but itself.
    std::vector<Alg> others;
    for (Alg a : allAlgs()) {
      if (a != c.alg) {
        others.push_back(a);
      }
    }
    EXPECT_REFUSED(verifier(others).verify(token, keys, kNow), Reason::kAlgNotAllowed);
  }
}

TEST(JwtAlgorithms, KeysFitTheirFamilyOnly) {
  KeySet keys = pem("rsa.pub")
                    .merge(pem("ec256.pub"))
                    .merge(pem("ec384.pub"))
                    .merge(pem("ec521.pub"))
                    .merge(pem("ed25519.pub"))
                    .merge(secret(kSecret.substr(0, 32)));
  // Each key fits exactly these algorithms.
  const std::vector<std::vector<Alg>> fits = {
      {Alg::kRs256, Alg::kRs384, Alg::kRs512, Alg::kPs256, Alg::kPs384, Alg::kPs512},
      {Alg::kEs256},
      {Alg::kEs384},
      {Alg::kEs512},
      {Alg::kEdDsa},
      {Alg::kHs256},  // a 32-byte secret is too short for HS384 and HS512
  };
  for (size_t k = 0; k < keys.size(); ++k) {
    for (Alg a : allAlgs()) {
      bool expected = std::find(fits[k].begin(), fits[k].end(), a) != fits[k].end();
      EXPECT_EQ(keys.keys()[k]->fits(a), expected) << k << " " << algName(a);
    }
  }
}

// ---- Attacks

TEST(JwtAttack, AlgNoneInAnyCase) {
  KeySet keys = secret(kSecret).merge(pem("rsa.pub"));
  const std::string payload = encodeBase64Url(R"({"sub":"admin"})");
  for (const char* alg : {"none", "None", "NONE", "nOnE"}) {
    const std::string input =
        encodeBase64Url(R"({"alg":")" + std::string(alg) + R"("})") + "." + payload;
    EXPECT_REFUSED(verifier().verify(input + ".", keys, kNow), Reason::kAlgNone);
    // With a signature too, even a valid HMAC over the input.
    const std::string token = input + ".";
    EXPECT_REFUSED(
        verifier().verify(token + encodeBase64Url(hmac(Alg::kHs256, kSecret, input)), keys, kNow),
        Reason::kAlgNone);
  }
  // A lookalike is just an unknown algorithm.
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"none "})", "{}"), keys, kNow),
                 Reason::kAlgNotAllowed);
}

TEST(JwtAttack, AlgorithmConfusionRsaPemAsHmacSecret) {
  // The attacker knows the RSA public key and signs HS256 with its PEM text as the secret.
  const std::string public_pem = dataFile("rsa.pub");
  const std::string forged = hsToken(R"({"alg":"HS256"})", R"({"sub":"admin"})", public_pem);
  // Only the RSA key is configured: no key fits HS256, whatever the allow-list says.
  EXPECT_REFUSED(verifier().verify(forged, pem("rsa.pub"), kNow), Reason::kKeyNotFound);
  // The same key from a JWKS, or as a certificate.
  PkeyPtr rsa = privateKey("rsa.key");
  EXPECT_REFUSED(
      verifier().verify(forged, jwks(R"({"keys":[)" + jwkOf(rsa.get(), "") + "]}"), kNow),
      Reason::kKeyNotFound);
  EXPECT_REFUSED(verifier().verify(forged, pem("rsa.crt"), kNow), Reason::kKeyNotFound);
  // With an HMAC key configured too, only that key is tried.
  EXPECT_REFUSED(verifier().verify(forged, pem("rsa.pub").merge(secret(kSecret)), kNow),
                 Reason::kBadSignature);
  // The PEM cannot be configured as a secret by mistake either.
  EXPECT_FALSE(hmacSecret(public_pem).ok());
  // Signed with the key's DER (base64url of it, too): still no RSA key serves HS256.
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"HS256"})", "{}", "x" + public_pem),
                                   pem("rsa.pub"), kNow),
                 Reason::kKeyNotFound);
}

TEST(JwtAttack, EcdsaZeroAndOutOfRangeSignatures) {
  KeySet keys = pem("ec256.pub");
  const std::string input = signingInput(R"({"alg":"ES256"})", R"({"sub":"admin"})");
  // The order n of P-256.
  const std::string n(
      "\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xbc\xe6\xfa\xad\xa7\x17"
      "\x9e\x84\xf3\xb9\xca\xc2\xfc\x63\x25\x51",
      32);
  ASSERT_EQ(n.size(), 32u);
  const std::string zero(32, '\0');
  const std::string one = std::string(31, '\0') + "\x01";
  const std::string ff(32, '\xff');
  PkeyPtr key = privateKey("ec256.key");
  const std::string good = sign(Alg::kEs256, key.get(), input);
  const std::string r = good.substr(0, 32);
  const std::string s = good.substr(32);
  EXPECT_ACCEPTED(verifier().verify(input + "." + encodeBase64Url(good), keys, kNow));
  for (const std::string& sig :
       {zero + zero, zero + s, r + zero, n + s, r + n, ff + s, r + ff, one + one}) {
    EXPECT_REFUSED(verifier().verify(input + "." + encodeBase64Url(sig), keys, kNow),
                   Reason::kBadSignature);
  }
}

TEST(JwtAttack, WrongSignatureLengths) {
  const std::string header = R"({"alg":"ES256"})";
  const std::string input = signingInput(header, "{}");
  PkeyPtr ec = privateKey("ec256.key");
  std::string good = sign(Alg::kEs256, ec.get(), input);
  KeySet ec_keys = pem("ec256.pub");
  auto with = [&](const std::string& in, const std::string& sig) {
    return in + "." + encodeBase64Url(sig);
  };
  EXPECT_ACCEPTED(verifier().verify(with(input, good), ec_keys, kNow));
  for (const std::string& sig : {good.substr(0, 63), good + '\0', '\0' + good, std::string()}) {
    EXPECT_REFUSED(verifier().verify(with(input, sig), ec_keys, kNow), Reason::kBadSignature);
  }
  // A DER signature (what OpenSSL produces) is not a JWS signature.
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, ec.get());
  unsigned char der[80];
  size_t der_len = sizeof der;
  EVP_DigestSign(ctx, der, &der_len, reinterpret_cast<const unsigned char*>(input.data()),
                 input.size());
  EVP_MD_CTX_free(ctx);
  EXPECT_REFUSED(verifier().verify(with(input, std::string(reinterpret_cast<char*>(der), der_len)),
                                   ec_keys, kNow),
                 Reason::kBadSignature);

  // RSA: exactly the modulus' length.
  PkeyPtr rsa = privateKey("rsa.key");
  const std::string rs_input = signingInput(R"({"alg":"RS256"})", "{}");
  std::string rs = sign(Alg::kRs256, rsa.get(), rs_input);
  KeySet rsa_keys = pem("rsa.pub");
  EXPECT_ACCEPTED(verifier().verify(with(rs_input, rs), rsa_keys, kNow));
  EXPECT_REFUSED(verifier().verify(with(rs_input, '\0' + rs), rsa_keys, kNow),
                 Reason::kBadSignature);
  EXPECT_REFUSED(verifier().verify(with(rs_input, rs.substr(1)), rsa_keys, kNow),
                 Reason::kBadSignature);

  // HMAC: a truncated MAC is not accepted, even when it is a correct prefix.
  const std::string hs_input = signingInput(R"({"alg":"HS256"})", "{}");
  std::string mac = hmac(Alg::kHs256, kSecret, hs_input);
  EXPECT_ACCEPTED(verifier().verify(with(hs_input, mac), secret(kSecret), kNow));
  EXPECT_REFUSED(verifier().verify(with(hs_input, mac.substr(0, 16)), secret(kSecret), kNow),
                 Reason::kBadSignature);
  EXPECT_REFUSED(verifier().verify(with(hs_input, mac + 'x'), secret(kSecret), kNow),
                 Reason::kBadSignature);

  // Ed25519: 64 bytes.
  PkeyPtr ed = privateKey("ed25519.key");
  const std::string ed_input = signingInput(R"({"alg":"EdDSA"})", "{}");
  std::string eds = sign(Alg::kEdDsa, ed.get(), ed_input);
  EXPECT_ACCEPTED(verifier().verify(with(ed_input, eds), pem("ed25519.pub"), kNow));
  EXPECT_REFUSED(verifier().verify(with(ed_input, eds.substr(0, 63)), pem("ed25519.pub"), kNow),
                 Reason::kBadSignature);
}

TEST(JwtAttack, KidIsAnOpaqueString) {
  PkeyPtr rsa = privateKey("rsa.key");
  KeySet keys = pem("rsa.pub", "2024-key");
  for (const char* kid : {"../../etc/passwd", "/dev/stdin", "2024-key/../2024-key", "2024-KEY",
                          "2024-key\n", "' OR 1=1 --"}) {
    std::string header = R"({"alg":"RS256","kid":)" + nlohmann::json(kid).dump() + "}";
    VerifyResult r = verifier().verify(tokenWith(rsa.get(), Alg::kRs256, header, "{}"), keys, kNow);
    EXPECT_REFUSED(r, Reason::kKeyNotFound);
    EXPECT_EQ(r.error.detail.find('\n'), std::string::npos);  // never echoed into a log raw
  }
  EXPECT_ACCEPTED(verifier().verify(
      tokenWith(rsa.get(), Alg::kRs256, R"({"alg":"RS256","kid":"2024-key"})", "{}"), keys, kNow));
  // A kid that is not a string is malformed.
  EXPECT_REFUSED(
      verifier().verify(tokenWith(rsa.get(), Alg::kRs256, R"({"alg":"RS256","kid":7})", "{}"), keys,
                        kNow),
      Reason::kMalformed);
}

TEST(JwtAttack, JkuX5uX5cAndJwkHeadersAreIgnored) {
  PkeyPtr trusted = privateKey("rsa.key");
  PkeyPtr attacker = privateKey("rsa2.key");
  KeySet keys = pem("rsa.pub");
  const std::string header = R"({"alg":"RS256","jku":"https://evil.example/jwks.json",)"
                             R"("x5u":"https://evil.example/cert.pem","x5c":["MIIB"],"jwk":)" +
                             jwkOf(attacker.get(), "") + "}";
  // Signed by the attacker, whose key the header carries and points to: never used.
  EXPECT_REFUSED(
      verifier().verify(tokenWith(attacker.get(), Alg::kRs256, header, "{}"), keys, kNow),
      Reason::kBadSignature);
  // Signed by the configured key: the headers do not make a good token fail.
  EXPECT_ACCEPTED(
      verifier().verify(tokenWith(trusted.get(), Alg::kRs256, header, "{}"), keys, kNow));
}

TEST(JwtAttack, SizeBound) {
  KeySet keys = secret(kSecret);
  std::string big(size_t{1024} * 1024, 'A');
  EXPECT_REFUSED(verifier().verify(big, keys, kNow), Reason::kTooLarge);
  EXPECT_REFUSED(
      verifier().verify(hsToken(R"({"alg":"HS256"})", R"({"pad":")" + big + "\"}"), keys, kNow),
      Reason::kTooLarge);
  // The bound is configurable and exact.
  std::string token = hsToken(R"({"alg":"HS256"})", R"({"sub":"a"})");
  VerifierConfig c;
  c.algorithms = {Alg::kHs256};
  c.max_token_bytes = token.size();
  EXPECT_ACCEPTED(Verifier(c).verify(token, keys, kNow));
  c.max_token_bytes = token.size() - 1;
  EXPECT_REFUSED(Verifier(c).verify(token, keys, kNow), Reason::kTooLarge);
}

TEST(JwtAttack, BadBase64UrlAndShape) {
  KeySet keys = secret(kSecret);
  const std::string good = hsToken(R"({"alg":"HS256"})", R"({"sub":"a"})");
  EXPECT_ACCEPTED(verifier().verify(good, keys, kNow));
  size_t dot1 = good.find('.');
  size_t dot2 = good.rfind('.');
  std::vector<std::string> bad = {
      good.substr(0, dot1) + "=" + good.substr(dot1),  // padded header
      good.substr(0, dot2) + "=" + good.substr(dot2),  // padded payload
      good + "=",                                      // padded signature
      good + "==",
      "+" + good.substr(1),  // standard alphabet
      good.substr(0, dot2 + 1) + "/" + good.substr(dot2 + 2),
      good.substr(0, dot1) + " " + good.substr(dot1),  // whitespace
      good + ".",                                      // four parts
      good + ".x.y",                                   // JWE-like
      good.substr(0, dot2),                            // two parts
      good.substr(dot1),                               // no header
      "..",
      "",
      "a.b.c",
  };
  for (const std::string& t : bad) {
    EXPECT_REFUSED(verifier().verify(t, keys, kNow), Reason::kMalformed) << t;
  }
}

TEST(JwtAttack, DuplicateKeysInHeaderAndClaims) {
  KeySet keys = secret(kSecret);
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"HS256","alg":"none"})", "{}"), keys, kNow),
                 Reason::kMalformed);
  EXPECT_REFUSED(
      verifier().verify(hsToken(R"({"alg":"HS256","kid":"a","kid":"b"})", "{}"), keys, kNow),
      Reason::kMalformed);
  VerifyResult r = verifier().verify(
      hsToken(R"({"alg":"HS256"})", R"({"sub":"alice","sub":"admin"})"), keys, kNow);
  EXPECT_REFUSED(r, Reason::kMalformed);
  EXPECT_NE(r.error.detail.find("duplicate"), std::string::npos);
}

TEST(JwtAttack, HeaderShape) {
  KeySet keys = secret(kSecret);
  const std::string claims = R"({"sub":"a"})";
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"typ":"JWT"})", claims), keys, kNow),
                 Reason::kMalformed);  // no alg
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":256})", claims), keys, kNow),
                 Reason::kMalformed);
  EXPECT_REFUSED(verifier().verify(hsToken(R"(["HS256"])", claims), keys, kNow),
                 Reason::kMalformed);
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"hs256"})", claims), keys, kNow),
                 Reason::kAlgNotAllowed);  // names are case-sensitive
  EXPECT_REFUSED(
      verifier().verify(hsToken(R"({"alg":"HS256","crit":["exp"],"exp":1})", claims), keys, kNow),
      Reason::kMalformed);
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"HS256","b64":false,"crit":["b64"]})", claims),
                                   keys, kNow),
                 Reason::kMalformed);
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"HS256"})", "not json"), keys, kNow),
                 Reason::kMalformed);
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"HS256"})", R"(["a"])"), keys, kNow),
                 Reason::kMalformed);
  std::string deep = R"({"a":)" + std::string(10, '[') + std::string(10, ']') + "}";
  EXPECT_REFUSED(verifier().verify(hsToken(R"({"alg":"HS256"})", deep), keys, kNow),
                 Reason::kMalformed);
}

TEST(JwtAttack, NumericDatesOutOfRange) {
  KeySet keys = secret(kSecret);
  auto verify = [&](const std::string& claims) {
    return verifier().verify(hsToken(R"({"alg":"HS256"})", claims), keys, kNow);
  };
  for (const char* claims :
       {R"({"exp":"1700000600"})", R"({"exp":1e300})", R"({"exp":-1e300})",
        R"({"exp":9223372036854775808})", R"({"exp":18446744073709551616})", R"({"exp":true})",
        R"({"exp":null})", R"({"exp":[1700000600]})", R"({"nbf":"0"})", R"({"iat":1e19})"}) {
    EXPECT_REFUSED(verify(claims), Reason::kInvalidClaim) << claims;
  }
  // Not JSON at all.
  for (const char* claims : {R"({"exp":NaN})", R"({"exp":Infinity})", R"({"exp":1e400})",
                             R"({"exp":0x10})", R"({"exp":+1})"}) {
    EXPECT_REFUSED(verify(claims), Reason::kMalformed) << claims;
  }
  EXPECT_ACCEPTED(verify(R"({"exp":1700000600})"));
  EXPECT_ACCEPTED(verify(R"({"exp":1700000600.75})"));
  EXPECT_ACCEPTED(verify(R"({"exp":9223372036854775807})"));
  EXPECT_REFUSED(verify(R"({"exp":-9223372036854775808})"), Reason::kExpired);
  EXPECT_REFUSED(verify(R"({"exp":0})"), Reason::kExpired);
}

// ---- Claims

TEST(JwtClaims, TimeChecksWithLeeway) {
  KeySet keys = secret(kSecret);
  VerifierConfig c;
  c.algorithms = {Alg::kHs256};
  c.leeway_seconds = 30;
  Verifier v(c);
  auto verify = [&](const std::string& claims, int64_t now = kNow) {
    return v.verify(hsToken(R"({"alg":"HS256"})", claims), keys, now);
  };
  EXPECT_ACCEPTED(verify(R"({"exp":1700000000})", kNow + 29));
  EXPECT_REFUSED(verify(R"({"exp":1700000000})", kNow + 30), Reason::kExpired);
  EXPECT_ACCEPTED(verify(R"({"nbf":1700000030})"));
  EXPECT_REFUSED(verify(R"({"nbf":1700000031})"), Reason::kNotYetValid);
  EXPECT_REFUSED(verify(R"({"nbf":1700000030.5})"), Reason::kNotYetValid);  // rounded up
  EXPECT_ACCEPTED(verify(R"({"iat":1700000030})"));
  EXPECT_REFUSED(verify(R"({"iat":1700000031})"), Reason::kNotYetValid);
  EXPECT_ACCEPTED(verify(R"({"iat":1})"));  // old tokens are fine; exp decides
  // exp without leeway, fractional: rounded down.
  c.leeway_seconds = 0;
  Verifier strict(c);
  EXPECT_REFUSED(
      strict.verify(hsToken(R"({"alg":"HS256"})", R"({"exp":1700000000.9})"), keys, kNow),
      Reason::kExpired);
  // The leeway is bounded.
  c.leeway_seconds = int64_t{1} << 62;
  EXPECT_EQ(Verifier(c).config().leeway_seconds, kMaxLeewaySeconds);
}

TEST(JwtClaims, IssuerAudienceRequired) {
  KeySet keys = secret(kSecret);
  VerifierConfig c;
  c.algorithms = {Alg::kHs256};
  c.issuers = {"https://idp.example.com/"};
  c.audiences = {"api", "ws"};
  c.required_claims = {"sub", "exp"};
  Verifier v(c);
  auto verify = [&](const std::string& claims) {
    return v.verify(hsToken(R"({"alg":"HS256"})", claims), keys, kNow);
  };
  const std::string ok_prefix = R"({"iss":"https://idp.example.com/","sub":"u1","exp":1700000600,)";
  EXPECT_ACCEPTED(verify(ok_prefix + R"("aud":"api"})"));
  EXPECT_ACCEPTED(verify(ok_prefix + R"("aud":["other","ws"]})"));
  EXPECT_REFUSED(verify(ok_prefix + R"("aud":["other"]})"), Reason::kAudience);
  EXPECT_REFUSED(verify(ok_prefix + R"("aud":"API"})"), Reason::kAudience);
  EXPECT_REFUSED(verify(ok_prefix + R"("aud":{"api":1}})"), Reason::kAudience);
  EXPECT_REFUSED(verify(ok_prefix + R"("aud":[]})"), Reason::kAudience);
  EXPECT_REFUSED(verify(R"({"iss":"https://idp.example.com/","sub":"u1","exp":1700000600})"),
                 Reason::kAudience);
  EXPECT_REFUSED(verify(R"({"iss":"https://evil.example.com/","sub":"u1","aud":"api"})"),
                 Reason::kIssuer);
  EXPECT_REFUSED(verify(R"({"sub":"u1","aud":"api"})"), Reason::kIssuer);
  EXPECT_REFUSED(verify(R"({"iss":["https://idp.example.com/"],"aud":"api"})"), Reason::kIssuer);
  EXPECT_REFUSED(verify(R"({"iss":"https://idp.example.com/","aud":"api","exp":1700000600})"),
                 Reason::kMissingClaim);
  EXPECT_REFUSED(verify(R"({"iss":"https://idp.example.com/","aud":"api","sub":"u1"})"),
                 Reason::kMissingClaim);
}

TEST(JwtClaims, ValuesAsText) {
  KeySet keys = secret(kSecret);
  VerifyResult r = verifier().verify(
      hsToken(R"({"alg":"HS256","kid":"k"})",
              R"({"sub":"alice","n":42,"f":1.5,"neg":-3,"b":false,"z":null,"roles":["a","b"],)"
              R"("o":{"k":"v"},"s":"caf\u00e9 \"q\"","exp":1700000600})"),
      keys, kNow);
  ASSERT_TRUE(r.ok()) << r.error.detail;
  const Claims& c = *r.claims;
  EXPECT_EQ(c.get("sub"), "alice");
  EXPECT_EQ(c.get("n"), "42");
  EXPECT_EQ(c.get("f"), "1.5");
  EXPECT_EQ(c.get("neg"), "-3");
  EXPECT_EQ(c.get("b"), "false");
  EXPECT_EQ(c.get("z"), "null");
  EXPECT_EQ(c.get("roles"), R"(["a","b"])");
  EXPECT_EQ(c.get("o"), R"({"k":"v"})");
  EXPECT_EQ(c.get("s"), "caf\xc3\xa9 \"q\"");
  EXPECT_FALSE(c.get("missing"));
  EXPECT_TRUE(c.has("exp"));
  EXPECT_EQ(c.exp(), 1700000600);
  EXPECT_EQ(c.kid(), "k");
  EXPECT_EQ(c.values().size(), 10u);
  EXPECT_TRUE(std::is_sorted(c.values().begin(), c.values().end()));
}

// ---- Keys

TEST(JwtKeys, JwksTypesAndSkips) {
  PkeyPtr rsa = privateKey("rsa.key");
  PkeyPtr ec384 = privateKey("ec384.key");
  PkeyPtr ed = privateKey("ed25519.key");
  const std::string text =
      R"({"keys":[)" + jwkOf(rsa.get(), "r") + "," + jwkOf(ec384.get(), "e") + "," +
      jwkOf(ed.get(), "o") + "," + R"({"kty":"oct","kid":"h","alg":"HS512","k":")" +
      encodeBase64Url(std::string(kSecret)) + R"("},)" + R"({"kty":"PQC","kid":"future"},)" +
      R"({"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"},)" +
      R"({"kty":"OKP","crv":"Ed448","x":"AA"},)" +
      R"({"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},)" +
      R"({"kty":"RSA","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},)" +
      R"({"kty":"oct","k":"c2hvcnQ"},)" + R"({"kty":"oct","alg":"RS256","k":")" +
      encodeBase64Url(std::string(kSecret)) + R"("}]})";
  KeySetResult r = parseJwks(text);
  ASSERT_TRUE(r.ok()) << r.error;
  const KeySet& keys = *r.keys;
  ASSERT_EQ(keys.size(), 4u);
  EXPECT_EQ(keys.keys()[0]->type(), KeyType::kRsa);
  EXPECT_EQ(keys.keys()[0]->kid(), "r");
  EXPECT_EQ(keys.keys()[1]->type(), KeyType::kEcP384);
  EXPECT_EQ(keys.keys()[2]->type(), KeyType::kEd25519);
  EXPECT_EQ(keys.keys()[3]->type(), KeyType::kOct);
  EXPECT_EQ(keys.keys()[3]->only(), Alg::kHs512);
  EXPECT_FALSE(keys.keys()[3]->fits(Alg::kHs256));  // its JWK said HS512
  ASSERT_EQ(keys.skipped().size(), 7u);
  EXPECT_NE(keys.skipped()[0].find("kty \"PQC\""), std::string::npos) << keys.skipped()[0];
  // Tokens signed by each loaded key verify.
  EXPECT_ACCEPTED(verifier().verify(
      tokenWith(rsa.get(), Alg::kPs256, R"({"alg":"PS256","kid":"r"})", "{}"), keys, kNow));
  EXPECT_ACCEPTED(verifier().verify(
      tokenWith(ec384.get(), Alg::kEs384, R"({"alg":"ES384","kid":"e"})", "{}"), keys, kNow));
  EXPECT_ACCEPTED(verifier().verify(
      tokenWith(ed.get(), Alg::kEdDsa, R"({"alg":"EdDSA","kid":"o"})", "{}"), keys, kNow));
  EXPECT_ACCEPTED(verifier().verify(
      hsToken(R"({"alg":"HS512","kid":"h"})", "{}", kSecret, Alg::kHs512), keys, kNow));
}

TEST(JwtKeys, JwksErrors) {
  PkeyPtr ec = privateKey("ec256.key");
  std::string good_ec = jwkOf(ec.get(), "");
  EXPECT_TRUE(parseJwks(R"({"keys":[]})").ok());
  EXPECT_TRUE(parseJwks(R"({"keys":[)" + good_ec + "]}").ok());
  // y changed by one bit: not a point of the curve.
  std::string off_curve = good_ec;
  size_t y = off_curve.find("\"y\":\"") + 5;
  off_curve[y + 3] = off_curve[y + 3] == 'A' ? 'B' : 'A';
  std::string short_x = good_ec;
  short_x.replace(short_x.find("\"x\":\"") + 5, 4, "");
  std::string dup = good_ec;
  dup.insert(1, R"("kty":"EC",)");
  std::string too_many = R"({"keys":[)";
  for (int i = 0; i <= 100; ++i) {
    too_many += (i ? "," : "") + std::string(R"({"kty":"x"})");
  }
  too_many += "]}";
  for (const std::string& bad :
       {std::string("not json"), std::string("[]"), std::string(R"({"keys":{}})"),
        std::string(R"({"kids":[]})"), std::string(R"({"keys":[1]})"),
        std::string(R"({"keys":[{"kid":"no kty"}]})"), std::string(R"({"keys":[{"kty":1}]})"),
        std::string(R"({"keys":[{"kty":"RSA","e":"AQAB"}]})"),
        std::string(R"({"keys":[{"kty":"RSA","n":"a+b/","e":"AQAB"}]})"),
        std::string(R"({"keys":[{"kty":"oct"}]})"),
        std::string(R"({"keys":[{"kty":"EC","x":"AA","y":"AA"}]})"),
        std::string(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]})"),
        std::string(R"({"keys":[{"kty":"oct","kid":5,"k":"AA"}]})"),
        R"({"keys":[)" + off_curve + "]}", R"({"keys":[)" + short_x + "]}",
        R"({"keys":[)" + dup + "]}", too_many,
        R"({"keys":[],"pad":")" + std::string(kMaxJwksBytes, 'a') + "\"}"}) {
    KeySetResult r = parseJwks(bad);
    EXPECT_FALSE(r.ok()) << bad.substr(0, 200);
    EXPECT_FALSE(r.error.empty());
  }
  // Padded base64url is tolerated in JWKS (some issuers emit it), not in tokens.
  std::string padded =
      R"({"keys":[{"kty":"oct","k":")" + encodeBase64Url(std::string(34, 'k')) + R"(=="}]})";
  EXPECT_TRUE(parseJwks(padded).ok()) << parseJwks(padded).error;
}

TEST(JwtKeys, PemFiles) {
  EXPECT_EQ(pem("rsa.pub").keys()[0]->type(), KeyType::kRsa);
  EXPECT_EQ(pem("rsa_pkcs1.pub").keys()[0]->type(), KeyType::kRsa);
  EXPECT_EQ(pem("rsa.crt").keys()[0]->type(), KeyType::kRsa);
  EXPECT_EQ(pem("ec521.pub").keys()[0]->type(), KeyType::kEcP521);
  EXPECT_EQ(pem("ed25519.pub").keys()[0]->type(), KeyType::kEd25519);
  // Several blocks in one file, all with the given kid.
  KeySetResult both = parsePem(dataFile("rsa.pub") + "\n" + dataFile("ec256.pub"), "k1");
  ASSERT_TRUE(both.ok()) << both.error;
  ASSERT_EQ(both.keys->size(), 2u);
  EXPECT_EQ(both.keys->keys()[1]->kid(), "k1");
  // A token signed by the certificate's key verifies with the certificate.
  PkeyPtr rsa = privateKey("rsa.key");
  EXPECT_ACCEPTED(verifier().verify(tokenWith(rsa.get(), Alg::kRs256, R"({"alg":"RS256"})", "{}"),
                                    pem("rsa.crt"), kNow));
  EXPECT_ACCEPTED(verifier().verify(tokenWith(rsa.get(), Alg::kRs256, R"({"alg":"RS256"})", "{}"),
                                    pem("rsa_pkcs1.pub"), kNow));

  for (const std::string& bad :
       {dataFile("rsa.key"), dataFile("ec256.key"), dataFile("rsa1024.pub"), std::string(),
        std::string("garbage"),
        std::string("-----BEGIN PUBLIC KEY-----\nAAAA\n"
                    "-----END PUBLIC KEY-----\n"),
        dataFile("rsa.pub") + "-----BEGIN X-----\nAAAA\n-----END X-----\n"}) {
    KeySetResult r = parsePem(bad);
    EXPECT_FALSE(r.ok()) << bad.substr(0, 40);
    EXPECT_FALSE(r.error.empty());
  }
  EXPECT_NE(parsePem(dataFile("rsa.key")).error.find("private"), std::string::npos);
  EXPECT_NE(parsePem(dataFile("rsa1024.pub")).error.find("1024"), std::string::npos);
}

TEST(JwtKeys, HmacSecrets) {
  EXPECT_TRUE(hmacSecret(std::string(32, 's')).ok());
  EXPECT_FALSE(hmacSecret(std::string(31, 's')).ok());
  EXPECT_FALSE(hmacSecret("").ok());
  EXPECT_FALSE(hmacSecret(dataFile("rsa.pub")).ok());
  // HS512 needs 64 bytes of secret: a 32-byte one fits HS256 only.
  KeySet keys = secret(kSecret.substr(0, 32));
  EXPECT_REFUSED(
      verifier().verify(hsToken(R"({"alg":"HS512"})", "{}", kSecret.substr(0, 32), Alg::kHs512),
                        keys, kNow),
      Reason::kKeyNotFound);
}

TEST(JwtKeys, KidSelection) {
  PkeyPtr rsa = privateKey("rsa.key");
  PkeyPtr rsa2 = privateKey("rsa2.key");
  KeySet keys = pem("rsa.pub", "one").merge(pem("rsa2.pub", "two"));
  std::vector<const Key*> c;
  keys.candidates(Alg::kRs256, "two", c);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0]->kid(), "two");
  c.clear();
  keys.candidates(Alg::kRs256, "", c);
  EXPECT_EQ(c.size(), 2u);  // no kid: every key that fits is tried
  c.clear();
  keys.candidates(Alg::kEs256, "", c);
  EXPECT_TRUE(c.empty());
  EXPECT_ACCEPTED(verifier().verify(tokenWith(rsa2.get(), Alg::kRs256, R"({"alg":"RS256"})", "{}"),
                                    keys, kNow));
  // The kid picks the key: rsa2's token claiming kid "one" is checked against rsa only.
  EXPECT_REFUSED(
      verifier().verify(tokenWith(rsa2.get(), Alg::kRs256, R"({"alg":"RS256","kid":"one"})", "{}"),
                        keys, kNow),
      Reason::kBadSignature);
  // Keys without a kid serve tokens with any kid.
  EXPECT_ACCEPTED(verifier().verify(
      tokenWith(rsa.get(), Alg::kRs256, R"({"alg":"RS256","kid":"whatever"})", "{}"),
      pem("rsa.pub"), kNow));
}

TEST(JwtKeys, Rotation) {
  PkeyPtr old_key = privateKey("rsa.key");
  PkeyPtr new_key = privateKey("rsa2.key");
  const std::string old_token =
      tokenWith(old_key.get(), Alg::kRs256, R"({"alg":"RS256","kid":"2023"})", "{}");
  const std::string new_token =
      tokenWith(new_key.get(), Alg::kRs256, R"({"alg":"RS256","kid":"2024"})", "{}");
  auto set = [&](const std::string& jwks_text) {
    return std::make_shared<const KeySet>(jwks(jwks_text));
  };
  const std::string old_jwk = jwkOf(old_key.get(), "2023");
  const std::string new_jwk = jwkOf(new_key.get(), "2024");
  Verifier v = verifier();
  std::shared_ptr<const KeySet> current = set(R"({"keys":[)" + old_jwk + "]}");
  EXPECT_ACCEPTED(v.verify(old_token, *current, kNow));
  EXPECT_REFUSED(v.verify(new_token, *current, kNow), Reason::kKeyNotFound);
  // The issuer publishes the new key next to the old one.
  current = set(R"({"keys":[)" + old_jwk + "," + new_jwk + "]}");
  EXPECT_ACCEPTED(v.verify(old_token, *current, kNow));
  EXPECT_ACCEPTED(v.verify(new_token, *current, kNow));
  // Then retires the old one.
  current = set(R"({"keys":[)" + new_jwk + "]}");
  EXPECT_REFUSED(v.verify(old_token, *current, kNow), Reason::kKeyNotFound);
  EXPECT_ACCEPTED(v.verify(new_token, *current, kNow));
}

TEST(JwtKeys, Generations) {
  KeySet a = secret(kSecret);
  KeySet b = secret(kSecret);
  EXPECT_NE(a.generation(), b.generation());
  EXPECT_EQ(KeySet(a).generation(), a.generation());  // a copy has the same keys
  KeySet merged = a.merge(b);
  EXPECT_NE(merged.generation(), a.generation());
  EXPECT_EQ(merged.size(), 2u);
}

// ---- The cache

std::string hsWithExp(int64_t exp, const std::string& sub = "a") {
  return hsToken(R"({"alg":"HS256"})",
                 R"({"sub":")" + sub + R"(","exp":)" + std::to_string(exp) + "}");
}

TEST(JwtCache, HitAndExpiryAtExp) {
  KeySet keys = secret(kSecret);
  VerifierConfig c;
  c.algorithms = {Alg::kHs256};
  c.leeway_seconds = 10;
  Verifier v(c);
  VerificationCache cache(16);
  const std::string token = hsWithExp(kNow + 100);
  VerifyResult first = v.verify(token, keys, kNow, cache);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first.cached);
  VerifyResult second = v.verify(token, keys, kNow + 50, cache);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second.cached);
  EXPECT_EQ(second.claims, first.claims);  // the same shared claims, no copy
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_TRUE(v.verify(token, keys, kNow + 109, cache).cached);  // exp + leeway - 1
  VerifyResult late = v.verify(token, keys, kNow + 110, cache);
  EXPECT_REFUSED(late, Reason::kExpired);
  EXPECT_FALSE(late.cached);
  EXPECT_EQ(cache.size(), 0u);
  // A token without exp stays until evicted or the keys change.
  const std::string forever = hsToken(R"({"alg":"HS256"})", R"({"sub":"x"})");
  EXPECT_FALSE(v.verify(forever, keys, kNow, cache).cached);
  EXPECT_TRUE(v.verify(forever, keys, kNow + 100000000, cache).cached);
}

TEST(JwtCache, BoundedLru) {
  KeySet keys = secret(kSecret);
  Verifier v = verifier({Alg::kHs256});
  VerificationCache cache(2);
  const std::string t1 = hsWithExp(kNow + 100, "1");
  const std::string t2 = hsWithExp(kNow + 100, "2");
  const std::string t3 = hsWithExp(kNow + 100, "3");
  v.verify(t1, keys, kNow, cache);
  v.verify(t2, keys, kNow, cache);
  EXPECT_TRUE(v.verify(t1, keys, kNow, cache).cached);  // t1 is now the most recent
  v.verify(t3, keys, kNow, cache);                      // evicts t2
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.evictions(), 1u);
  EXPECT_TRUE(v.verify(t1, keys, kNow, cache).cached);
  EXPECT_TRUE(v.verify(t3, keys, kNow, cache).cached);
  EXPECT_FALSE(v.verify(t2, keys, kNow, cache).cached);
  // Refused tokens are never stored.
  for (int i = 0; i < 10; ++i) {
    std::string bad = hsWithExp(kNow + 100, "x") + "A";
    EXPECT_FALSE(v.verify(bad, keys, kNow, cache).ok());
  }
  EXPECT_EQ(cache.size(), 2u);
  // Capacity 0 caches nothing.
  VerificationCache none(0);
  v.verify(t1, keys, kNow, none);
  EXPECT_FALSE(v.verify(t1, keys, kNow, none).cached);
}

TEST(JwtCache, InvalidatedWhenKeysChange) {
  PkeyPtr rsa = privateKey("rsa.key");
  const std::string token =
      tokenWith(rsa.get(), Alg::kRs256, R"({"alg":"RS256"})", R"({"exp":1700000600})");
  Verifier v = verifier();
  VerificationCache cache(16);
  auto with_key = std::make_shared<const KeySet>(pem("rsa.pub"));
  EXPECT_FALSE(v.verify(token, *with_key, kNow, cache).cached);
  EXPECT_TRUE(v.verify(token, *with_key, kNow, cache).cached);
  // The key is removed: the cached answer must not outlive it.
  auto without_key = std::make_shared<const KeySet>(pem("rsa2.pub"));
  VerifyResult r = v.verify(token, *without_key, kNow, cache);
  EXPECT_FALSE(r.cached);
  EXPECT_REFUSED(r, Reason::kBadSignature);
  EXPECT_EQ(cache.size(), 0u);
  // A reloaded set with the same key is a new generation: verified again, then cached.
  auto reloaded = std::make_shared<const KeySet>(pem("rsa.pub"));
  EXPECT_FALSE(v.verify(token, *reloaded, kNow, cache).cached);
  EXPECT_TRUE(v.verify(token, *reloaded, kNow, cache).cached);
}

TEST(JwtNames, ReasonsAndAlgorithms) {
  EXPECT_EQ(reasonName(Reason::kMalformed), "malformed");
  EXPECT_EQ(reasonName(Reason::kAlgNone), "alg_none");
  EXPECT_EQ(reasonName(Reason::kMissingClaim), "missing_claim");
  for (Alg a : allAlgs()) {
    EXPECT_EQ(algFromName(algName(a)), a);
  }
  EXPECT_FALSE(algFromName("none"));
  EXPECT_FALSE(algFromName("ES256K"));
}

}  // namespace
}  // namespace sluice::filters::jwt
