#pragma once

// Verification keys and immutable sets of them, built from PEM text (public keys, certificates'
// public keys), HMAC secrets and JWKS documents (RFC 7517). Pure code: callers read the files
// or fetch the JWKS and hand the text over; nothing here does I/O.
//
// A key is typed once, when it is loaded (oct, RSA, RSA-PSS, EC with its curve, Ed25519), and a
// token's `alg` must fit that type: an HMAC algorithm only ever uses an `oct` key, so a public
// key can never be abused as an HMAC secret (the classic RS256 -> HS256 confusion). Weak keys
// are refused when loaded: RSA under 2048 bits (RFC 7518 3.3), HMAC secrets under 32 bytes
// (RFC 7518 3.2 asks for the hash size; an HS384/HS512 token needs a 48/64-byte secret).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "filters/jwt/alg.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, kept out of this header

namespace sluice::filters::jwt {

enum class KeyType : uint8_t { kOct, kRsa, kRsaPss, kEcP256, kEcP384, kEcP521, kEd25519 };
std::string_view keyTypeName(KeyType type);

class Key {
 public:
  // Use the KeySet builders below; these are public for make_shared.
  Key(std::string kid, std::string secret, std::optional<Alg> only);  // oct
  Key(std::string kid, KeyType type, std::shared_ptr<evp_pkey_st> pkey, std::optional<Alg> only);

  // Empty when the key has none (PEM keys, secrets). A key without a kid matches any token's.
  const std::string& kid() const { return kid_; }
  KeyType type() const { return type_; }
  // The JWK's "alg", when it named one: then the key serves that algorithm only.
  std::optional<Alg> only() const { return only_; }

  // True when a token signed with `alg` may be checked with this key: the key type matches the
  // algorithm family (and curve), the secret is long enough, and the JWK's "alg" agrees.
  bool fits(Alg alg) const;

  // Checks `signature` (raw bytes, as decoded from the token) over `input`. The caller has
  // checked fits(alg). Length rules are enforced here: an HMAC of the hash's size, an RSA
  // signature of the modulus' size, ECDSA r||s of exactly twice the curve's size with r and s
  // in [1, n-1], an Ed25519 signature of 64 bytes.
  bool verify(Alg alg, std::string_view input, std::string_view signature) const;

 private:
  std::string kid_;
  KeyType type_;
  std::string secret_;                 // kOct
  std::shared_ptr<evp_pkey_st> pkey_;  // the others
  std::optional<Alg> only_;
};

class KeySet {
 public:
  KeySet();  // empty, with a generation of its own

  const std::vector<std::shared_ptr<const Key>>& keys() const { return keys_; }
  size_t size() const { return keys_.size(); }
  bool empty() const { return keys_.empty(); }

  // JWKS entries that were skipped, one short note each ("key 3: kty \"foo\" not supported").
  // Skipping is not an error: an issuer may publish keys sluice does not use.
  const std::vector<std::string>& skipped() const { return skipped_; }

  // A number unique to this set's contents in this process: every set built or merged gets a
  // new one (copies keep it). Caches of verified tokens key on it, so that swapping the set
  // forgets what the old keys verified.
  uint64_t generation() const { return generation_; }

  // This set's keys followed by `other`'s (skipped notes too), as a new set.
  KeySet merge(const KeySet& other) const;

  // The keys a token with `alg` and `kid` may have been signed with, in set order: those that
  // fit `alg` and whose kid equals `kid` or is empty. A token without a kid (`kid` empty) may
  // use any key that fits. The kid is compared as an opaque string, nothing more.
  void candidates(Alg alg, std::string_view kid, std::vector<const Key*>& out) const;

 private:
  friend struct KeySetBuilder;
  std::vector<std::shared_ptr<const Key>> keys_;
  std::vector<std::string> skipped_;
  uint64_t generation_;
};

// A key set, or why there is none.
struct KeySetResult {
  std::optional<KeySet> keys;
  std::string error;
  bool ok() const { return keys.has_value(); }
};

inline constexpr size_t kMaxJwksBytes = size_t{1024} * 1024;
inline constexpr size_t kMaxJwksKeys = 100;

// A JWKS document: {"keys": [...]}. RSA (n, e), EC (crv P-256/P-384/P-521, x, y), OKP (crv
// Ed25519, x) and oct (k) keys are loaded, with "kid" and "alg" when present. Skipped and noted
// (not errors): unknown kty, unsupported curves (Ed448, secp256k1, ...), keys with "use" other
// than "sig", keys whose "alg" is not a JWS algorithm sluice knows (e.g. "RSA-OAEP"), RSA keys
// under 2048 bits and oct keys under 32 bytes. Errors (the whole document is refused): invalid or
// duplicate-key JSON, a known key type with missing or malformed members, EC points not on the
// curve, more than kMaxJwksKeys entries or kMaxJwksBytes of text. Private members ("d", ...) are
// ignored; "x5c", "x5u" and "jku" are never used.
KeySetResult parseJwks(std::string_view text);

// Every PEM block in `pem`: "PUBLIC KEY" (RSA, RSA-PSS, EC P-256/384/521, Ed25519),
// "RSA PUBLIC KEY" (PKCS#1) and "CERTIFICATE" (its public key; the certificate's dates and
// chain are not looked at: it is only a container for the key). Private keys are refused: sluice
// only needs the public half, and the operator should not hand it more. All keys get `kid`.
KeySetResult parsePem(std::string_view pem, std::string_view kid = {});

// An HMAC secret, used as raw bytes (no trimming: strip a trailing newline before calling if the
// file format wants that). Refused when shorter than 32 bytes or when it looks like PEM text: a
// public key is never an HMAC secret.
KeySetResult hmacSecret(std::string_view secret, std::string_view kid = {});

}  // namespace sluice::filters::jwt
