#include "filters/jwt/key_set.h"

#include <atomic>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "filters/jwt/base64url.h"
#include "filters/jwt/json_strict.h"
#include "filters/jwt/log_text.h"

namespace sluice::filters::jwt {

namespace {

using Json = nlohmann::json;

constexpr size_t kMinHmacSecret = 32;
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 16384;

std::atomic<uint64_t> next_generation{1};

template <class T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, Deleter<EVP_MAC_CTX, EVP_MAC_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, Deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, Deleter<OSSL_PARAM, OSSL_PARAM_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, Deleter<ECDSA_SIG, ECDSA_SIG_free>>;
struct OpensslFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};

std::shared_ptr<EVP_PKEY> share(PkeyPtr p) {
  return {p.release(), EVP_PKEY_free};
}

// Algorithms are fetched from the provider once, not at every verification (EVP_sha256() and
// friends fetch implicitly on each use). Never freed: they live as long as the process.
struct Algorithms {
  EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  EVP_MD* sha384 = EVP_MD_fetch(nullptr, "SHA384", nullptr);
  EVP_MD* sha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
};

const Algorithms& algorithms() {
  static const Algorithms* a = new Algorithms();
  return *a;
}

const EVP_MD* digestFor(Alg alg) {
  const Algorithms& a = algorithms();
  switch (algHashBytes(alg)) {
    case 32:
      return a.sha256;
    case 48:
      return a.sha384;
    default:
      return a.sha512;
  }
}

struct Curve {
  KeyType type;
  const char* jwk_name;   // "P-256"
  const char* ossl_name;  // OpenSSL's group name
  int nid;
  size_t bytes;  // of a coordinate, and of r and s
};
constexpr Curve kCurves[] = {
    {KeyType::kEcP256, "P-256", "prime256v1", NID_X9_62_prime256v1, 32},
    {KeyType::kEcP384, "P-384", "secp384r1", NID_secp384r1, 48},
    {KeyType::kEcP521, "P-521", "secp521r1", NID_secp521r1, 66},
};

const Curve* curveByType(KeyType type) {
  for (const Curve& c : kCurves) {
    if (c.type == type) {
      return &c;
    }
  }
  return nullptr;
}

// The order n of each curve, for the range check of r and s.
const BIGNUM* curveOrder(const Curve& curve) {
  struct Orders {
    const BIGNUM* n[3] = {nullptr, nullptr, nullptr};
    Orders() {
      for (size_t i = 0; i < 3; ++i) {
        EC_GROUP* g = EC_GROUP_new_by_curve_name(kCurves[i].nid);
        if (g != nullptr) {
          n[i] = BN_dup(EC_GROUP_get0_order(g));
          EC_GROUP_free(g);
        }
      }
    }
  };
  static const Orders* orders = new Orders();
  return orders->n[&curve - kCurves];
}

bool publicKeyValid(EVP_PKEY* pkey) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  return ctx != nullptr && EVP_PKEY_public_check(ctx.get()) == 1;
}

// Types a public key loaded from PEM or built from a JWK. Empty `why` and a type, or `why`.
std::optional<KeyType> classify(EVP_PKEY* pkey, std::string* why) {
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS: {
      int bits = EVP_PKEY_get_bits(pkey);
      if (bits < kMinRsaBits || bits > kMaxRsaBits) {
        *why = "RSA key of " + std::to_string(bits) + " bits (2048 to 16384 are accepted)";
        return std::nullopt;
      }
      return EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA ? KeyType::kRsa : KeyType::kRsaPss;
    }
    case EVP_PKEY_EC: {
      char name[64] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(pkey, name, sizeof name, &len) != 1) {
        *why = "EC key without a named curve";
        return std::nullopt;
      }
      int nid = OBJ_sn2nid(name);
      if (nid == NID_undef) {
        nid = EC_curve_nist2nid(name);
      }
      for (const Curve& c : kCurves) {
        if (c.nid == nid) {
          if (!publicKeyValid(pkey)) {
            *why = "EC public key is not a valid point of its curve";
            return std::nullopt;
          }
          return c.type;
        }
      }
      *why = std::string("EC curve ") + name + " not supported (P-256, P-384, P-521 are)";
      return std::nullopt;
    }
    case EVP_PKEY_ED25519:
      return KeyType::kEd25519;
    default:
      *why = "key type not supported (RSA, EC and Ed25519 are)";
      return std::nullopt;
  }
}

}  // namespace

// Builds sets; a friend of KeySet so that the sets stay immutable for everyone else.
struct KeySetBuilder {
  KeySet set;
  void add(std::shared_ptr<const Key> key) { set.keys_.push_back(std::move(key)); }
  void skip(std::string note) { set.skipped_.push_back(std::move(note)); }
  KeySetResult done() { return {std::move(set), {}}; }
  static KeySetResult fail(std::string why) {
    ERR_clear_error();
    return {std::nullopt, std::move(why)};
  }
};

std::string_view keyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kOct:
      return "oct";
    case KeyType::kRsa:
      return "RSA";
    case KeyType::kRsaPss:
      return "RSA-PSS";
    case KeyType::kEcP256:
      return "EC P-256";
    case KeyType::kEcP384:
      return "EC P-384";
    case KeyType::kEcP521:
      return "EC P-521";
    case KeyType::kEd25519:
      break;
  }
  return "Ed25519";
}

Key::Key(std::string kid, std::string secret, std::optional<Alg> only)
    : kid_(std::move(kid)), type_(KeyType::kOct), secret_(std::move(secret)), only_(only) {}

Key::Key(std::string kid, KeyType type, std::shared_ptr<evp_pkey_st> pkey, std::optional<Alg> only)
    : kid_(std::move(kid)), type_(type), pkey_(std::move(pkey)), only_(only) {}

bool Key::fits(Alg alg) const {
  if (only_ && *only_ != alg) {
    return false;
  }
  switch (algFamily(alg)) {
    case AlgFamily::kHmac:
      return type_ == KeyType::kOct && secret_.size() >= algHashBytes(alg);
    case AlgFamily::kRsaPkcs1:
      return type_ == KeyType::kRsa;
    case AlgFamily::kRsaPss:
      return type_ == KeyType::kRsa || type_ == KeyType::kRsaPss;
    case AlgFamily::kEcdsa:
      return (alg == Alg::kEs256 && type_ == KeyType::kEcP256) ||
             (alg == Alg::kEs384 && type_ == KeyType::kEcP384) ||
             (alg == Alg::kEs512 && type_ == KeyType::kEcP521);
    case AlgFamily::kEdDsa:
      return type_ == KeyType::kEd25519;
  }
  return false;
}

namespace {

bool verifyHmac(Alg alg, const std::string& secret, std::string_view input, std::string_view sig) {
  const EVP_MD* md = digestFor(alg);
  const Algorithms& a = algorithms();
  if (sig.size() != algHashBytes(alg) || md == nullptr || a.hmac == nullptr) {
    return false;
  }
  MacCtxPtr ctx(EVP_MAC_CTX_new(a.hmac));
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                       const_cast<char*>(EVP_MD_get0_name(md)), 0),
      OSSL_PARAM_construct_end(),
  };
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t len = 0;
  if (ctx == nullptr ||
      EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
                   params) != 1 ||
      EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(input.data()),
                     input.size()) != 1 ||
      EVP_MAC_final(ctx.get(), mac, &len, sizeof mac) != 1 || len != sig.size()) {
    return false;
  }
  return CRYPTO_memcmp(mac, sig.data(), len) == 0;
}

bool digestVerify(EVP_PKEY* pkey, const EVP_MD* md, bool pss, std::string_view input,
                  std::string_view sig) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (ctx == nullptr || EVP_DigestVerifyInit(ctx.get(), &pctx, md, nullptr, pkey) != 1) {
    return false;
  }
  // RFC 7518 3.5: MGF1 with the same hash, and a salt as long as the hash.
  if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
              EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1 ||
              EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
}

// JWS carries ECDSA signatures as r||s, each left-padded to the curve's size (RFC 7518 3.4);
// OpenSSL wants DER. r and s must lie in [1, n-1]: zero values are how "psychic signatures"
// (CVE-2022-21449) passed Java's check, so we refuse them here, whatever OpenSSL would do.
bool verifyEcdsa(EVP_PKEY* pkey, const Curve& curve, const EVP_MD* md, std::string_view input,
                 std::string_view sig) {
  const BIGNUM* order = curveOrder(curve);
  if (sig.size() != 2 * curve.bytes || order == nullptr) {
    return false;
  }
  const auto* raw = reinterpret_cast<const unsigned char*>(sig.data());
  BnPtr r(BN_bin2bn(raw, static_cast<int>(curve.bytes), nullptr));
  BnPtr s(BN_bin2bn(raw + curve.bytes, static_cast<int>(curve.bytes), nullptr));
  if (r == nullptr || s == nullptr || BN_is_zero(r.get()) || BN_is_zero(s.get()) ||
      BN_cmp(r.get(), order) >= 0 || BN_cmp(s.get(), order) >= 0) {
    return false;
  }
  EcdsaSigPtr ecdsa(ECDSA_SIG_new());
  if (ecdsa == nullptr || ECDSA_SIG_set0(ecdsa.get(), r.get(), s.get()) != 1) {
    return false;
  }
  (void)r.release();  // owned by ecdsa now
  (void)s.release();
  unsigned char* der = nullptr;
  int der_len = i2d_ECDSA_SIG(ecdsa.get(), &der);
  if (der_len <= 0) {
    return false;
  }
  bool ok =
      digestVerify(pkey, md, false, input, std::string_view(reinterpret_cast<char*>(der), der_len));
  OPENSSL_free(der);
  return ok;
}

}  // namespace

bool Key::verify(Alg alg, std::string_view input, std::string_view signature) const {
  bool ok = false;
  switch (algFamily(alg)) {
    case AlgFamily::kHmac:
      ok = verifyHmac(alg, secret_, input, signature);
      break;
    case AlgFamily::kRsaPkcs1:
    case AlgFamily::kRsaPss:
      // An RSA signature is exactly as long as the modulus (RFC 8017 8.2.2 step 1).
      ok = pkey_ != nullptr &&
           signature.size() == static_cast<size_t>(EVP_PKEY_get_size(pkey_.get())) &&
           digestVerify(pkey_.get(), digestFor(alg), algFamily(alg) == AlgFamily::kRsaPss, input,
                        signature);
      break;
    case AlgFamily::kEcdsa:
      if (const Curve* c = curveByType(type_); c != nullptr && pkey_ != nullptr) {
        ok = verifyEcdsa(pkey_.get(), *c, digestFor(alg), input, signature);
      }
      break;
    case AlgFamily::kEdDsa:
      ok = pkey_ != nullptr && signature.size() == 64 &&
           digestVerify(pkey_.get(), nullptr, false, input, signature);
      break;
  }
  if (!ok) {
    ERR_clear_error();  // leave nothing in this thread's queue for the TLS code to trip on
  }
  return ok;
}

KeySet::KeySet() : generation_(next_generation.fetch_add(1, std::memory_order_relaxed)) {}

KeySet KeySet::merge(const KeySet& other) const {
  KeySet out;
  out.keys_ = keys_;
  out.keys_.insert(out.keys_.end(), other.keys_.begin(), other.keys_.end());
  out.skipped_ = skipped_;
  out.skipped_.insert(out.skipped_.end(), other.skipped_.begin(), other.skipped_.end());
  return out;
}

void KeySet::candidates(Alg alg, std::string_view kid, std::vector<const Key*>& out) const {
  for (const auto& key : keys_) {
    if (key->fits(alg) && (kid.empty() || key->kid().empty() || key->kid() == kid)) {
      out.push_back(key.get());
    }
  }
}

// ---- PEM ----

KeySetResult parsePem(std::string_view pem, std::string_view kid) {
  if (pem.size() > kMaxJwksBytes) {
    return KeySetBuilder::fail("PEM text larger than 1 MiB");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) {
    return KeySetBuilder::fail("cannot read PEM text");
  }
  KeySetBuilder b;
  for (int block = 1;; ++block) {
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    ERR_clear_error();
    if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
      unsigned long err = ERR_peek_last_error();
      if (block > 1 && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        break;  // no more blocks
      }
      return KeySetBuilder::fail(block == 1
                                     ? "no PEM block found"
                                     : "PEM block " + std::to_string(block) + " is malformed");
    }
    std::string type(name);
    std::unique_ptr<char, OpensslFree> n(name), h(header);
    std::unique_ptr<unsigned char, OpensslFree> d(data);
    const unsigned char* p = data;
    PkeyPtr pkey;
    if (type == "PUBLIC KEY") {
      pkey.reset(d2i_PUBKEY(nullptr, &p, len));
    } else if (type == "RSA PUBLIC KEY") {
      pkey.reset(d2i_PublicKey(EVP_PKEY_RSA, nullptr, &p, len));
    } else if (type == "CERTIFICATE") {
      X509Ptr cert(d2i_X509(nullptr, &p, len));
      if (cert != nullptr) {
        pkey.reset(X509_get_pubkey(cert.get()));
      }
    } else if (type.find("PRIVATE KEY") != std::string::npos) {
      return KeySetBuilder::fail("PEM block " + std::to_string(block) +
                                 " is a private key: give the public key only");
    } else {
      return KeySetBuilder::fail("PEM block " + std::to_string(block) + " (" + type +
                                 ") is not a public key or certificate");
    }
    if (pkey == nullptr || p != data + len) {
      return KeySetBuilder::fail("PEM block " + std::to_string(block) + " (" + type +
                                 ") is malformed");
    }
    std::string why;
    std::optional<KeyType> t = classify(pkey.get(), &why);
    if (!t) {
      return KeySetBuilder::fail("PEM block " + std::to_string(block) + ": " + why);
    }
    b.add(std::make_shared<const Key>(std::string(kid), *t, share(std::move(pkey)), std::nullopt));
  }
  ERR_clear_error();
  return b.done();
}

// ---- HMAC secrets ----

KeySetResult hmacSecret(std::string_view secret, std::string_view kid) {
  if (secret.find("-----BEGIN") != std::string_view::npos) {
    return KeySetBuilder::fail("the HMAC secret is PEM text: a public key is not a secret");
  }
  if (secret.size() < kMinHmacSecret) {
    return KeySetBuilder::fail("HMAC secret of " + std::to_string(secret.size()) +
                               " bytes (at least 32 are needed)");
  }
  KeySetBuilder b;
  b.add(std::make_shared<const Key>(std::string(kid), std::string(secret), std::nullopt));
  return b.done();
}

// ---- JWKS ----

namespace {

// A JWK member that must be a string when present. Returns false on a wrong type.
bool optionalString(const Json& jwk, const char* name, std::optional<std::string>& out) {
  auto it = jwk.find(name);
  if (it == jwk.end()) {
    return true;
  }
  if (!it->is_string()) {
    return false;
  }
  out = it->get<std::string>();
  return true;
}

// A required base64url member, decoded. Empty optional: missing, not a string, or bad base64.
std::optional<std::string> bytesMember(const Json& jwk, const char* name) {
  auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string()) {
    return std::nullopt;
  }
  std::string out;
  if (!decodeBase64Url(it->get_ref<const std::string&>(), out, /*allow_padding=*/true)) {
    return std::nullopt;
  }
  return out;
}

PkeyPtr fromData(const char* type, OSSL_PARAM_BLD* bld) {
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* pkey = nullptr;
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return nullptr;
  }
  return PkeyPtr(pkey);
}

PkeyPtr rsaFromJwk(const std::string& n, const std::string& e) {
  const auto* nb = reinterpret_cast<const unsigned char*>(n.data());
  const auto* eb = reinterpret_cast<const unsigned char*>(e.data());
  BnPtr bn_n(BN_bin2bn(nb, static_cast<int>(n.size()), nullptr));
  BnPtr bn_e(BN_bin2bn(eb, static_cast<int>(e.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (bn_n == nullptr || bn_e == nullptr || bld == nullptr ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return nullptr;
  }
  return fromData("RSA", bld.get());
}

PkeyPtr ecFromJwk(const Curve& curve, const std::string& x, const std::string& y) {
  std::string point = "\x04" + x + y;  // uncompressed SEC1 point
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (bld == nullptr ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, curve.ossl_name, 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return nullptr;
  }
  return fromData("EC", bld.get());
}

// One JWKS entry: adds a key, or a skipped note, or returns an error.
std::optional<std::string> addJwk(KeySetBuilder& b, const Json& jwk, size_t index) {
  std::string where = "key " + std::to_string(index);
  if (!jwk.is_object()) {
    return where + " is not an object";
  }
  std::optional<std::string> kty, kid, use, alg_name;
  if (!optionalString(jwk, "kty", kty) || !kty) {
    return where + " has no kty string";
  }
  if (!optionalString(jwk, "kid", kid) || !optionalString(jwk, "use", use) ||
      !optionalString(jwk, "alg", alg_name)) {
    return where + ": kid, use and alg must be strings";
  }
  if (kid) {
    where += " (kid " + quotedForLog(*kid) + ")";
  }
  auto skip = [&](const std::string& why) {
    b.skip(where + ": " + why);
    return std::nullopt;
  };
  if (use && *use != "sig") {
    return skip("use " + quotedForLog(*use) + " is not \"sig\"");
  }
  std::optional<Alg> only;
  if (alg_name) {
    only = algFromName(*alg_name);
    if (!only) {
      return skip("alg " + quotedForLog(*alg_name) + " is not a JWS algorithm sluice verifies");
    }
  }

  std::shared_ptr<const Key> key;
  std::string id = kid.value_or("");
  if (*kty == "oct") {
    std::optional<std::string> k = bytesMember(jwk, "k");
    if (!k) {
      return where + ": k is missing or not base64url";
    }
    if (k->size() < kMinHmacSecret) {
      return skip("oct key of " + std::to_string(k->size()) + " bytes (at least 32 are needed)");
    }
    key = std::make_shared<const Key>(id, std::move(*k), only);
  } else if (*kty == "RSA") {
    std::optional<std::string> n = bytesMember(jwk, "n");
    std::optional<std::string> e = bytesMember(jwk, "e");
    if (!n || !e || n->empty() || e->empty() || n->size() > kMaxRsaBits / 8 + 1 || e->size() > 8) {
      return where + ": n or e is missing, not base64url or out of range";
    }
    PkeyPtr pkey = rsaFromJwk(*n, *e);
    if (pkey == nullptr) {
      return where + ": not a valid RSA public key";
    }
    std::string why;
    std::optional<KeyType> t = classify(pkey.get(), &why);
    if (!t) {
      return skip(why);
    }
    key = std::make_shared<const Key>(id, *t, share(std::move(pkey)), only);
  } else if (*kty == "EC") {
    std::optional<std::string> crv;
    if (!optionalString(jwk, "crv", crv) || !crv) {
      return where + " has no crv string";
    }
    const Curve* curve = nullptr;
    for (const Curve& c : kCurves) {
      if (*crv == c.jwk_name) {
        curve = &c;
      }
    }
    if (curve == nullptr) {
      return skip("EC curve " + quotedForLog(*crv) + " not supported (P-256, P-384, P-521 are)");
    }
    std::optional<std::string> x = bytesMember(jwk, "x");
    std::optional<std::string> y = bytesMember(jwk, "y");
    if (!x || !y || x->size() != curve->bytes || y->size() != curve->bytes) {
      return where + ": x or y is missing, not base64url or not " + std::to_string(curve->bytes) +
             " bytes";
    }
    PkeyPtr pkey = ecFromJwk(*curve, *x, *y);
    std::string why;
    std::optional<KeyType> t;
    if (pkey != nullptr) {
      t = classify(pkey.get(), &why);
    }
    if (!t) {
      return where + ": not a point of " + curve->jwk_name;
    }
    key = std::make_shared<const Key>(id, *t, share(std::move(pkey)), only);
  } else if (*kty == "OKP") {
    std::optional<std::string> crv;
    if (!optionalString(jwk, "crv", crv) || !crv) {
      return where + " has no crv string";
    }
    if (*crv != "Ed25519") {
      return skip("OKP curve " + quotedForLog(*crv) + " not supported (Ed25519 is)");
    }
    std::optional<std::string> x = bytesMember(jwk, "x");
    if (!x || x->size() != 32) {
      return where + ": x is missing, not base64url or not 32 bytes";
    }
    PkeyPtr pkey(EVP_PKEY_new_raw_public_key(
        EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(x->data()), 32));
    if (pkey == nullptr) {
      return where + ": not a valid Ed25519 public key";
    }
    key = std::make_shared<const Key>(id, KeyType::kEd25519, share(std::move(pkey)), only);
  } else {
    return skip("kty " + quotedForLog(*kty) + " not supported");
  }
  if (only && !key->fits(*only)) {
    return skip("alg " + quotedForLog(*alg_name) + " does not fit a " +
                std::string(keyTypeName(key->type())) + " key");
  }
  b.add(std::move(key));
  return std::nullopt;
}

}  // namespace

KeySetResult parseJwks(std::string_view text) {
  if (text.size() > kMaxJwksBytes) {
    return KeySetBuilder::fail("JWKS larger than 1 MiB");
  }
  std::string why;
  std::optional<Json> doc = parseStrictJson(text, &why);
  if (!doc) {
    return KeySetBuilder::fail("JWKS is not valid JSON: " + why);
  }
  auto keys = doc->is_object() ? doc->find("keys") : doc->end();
  if (!doc->is_object() || keys == doc->end() || !keys->is_array()) {
    return KeySetBuilder::fail("JWKS has no \"keys\" array");
  }
  if (keys->size() > kMaxJwksKeys) {
    return KeySetBuilder::fail("JWKS has more than " + std::to_string(kMaxJwksKeys) + " keys");
  }
  KeySetBuilder b;
  size_t index = 0;
  for (const Json& jwk : *keys) {
    if (std::optional<std::string> error = addJwk(b, jwk, ++index)) {
      return KeySetBuilder::fail(std::move(*error));
    }
  }
  ERR_clear_error();
  return b.done();
}

}  // namespace sluice::filters::jwt
