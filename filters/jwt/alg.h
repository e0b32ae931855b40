#pragma once

// The JWS algorithms sluice verifies (RFC 7518 section 3, RFC 8037 for EdDSA). "none" is not
// one of them: it has no enum value, so no configuration can allow it.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sluice::filters::jwt {

enum class Alg : uint8_t {
  kHs256,
  kHs384,
  kHs512,
  kRs256,
  kRs384,
  kRs512,
  kPs256,
  kPs384,
  kPs512,
  kEs256,
  kEs384,
  kEs512,
  kEdDsa,  // Ed25519 only
};
inline constexpr size_t kAlgCount = 13;

// The exact JOSE name ("HS256", ..., "EdDSA"); names are case-sensitive (RFC 7515 4.1.1).
std::optional<Alg> algFromName(std::string_view name);
std::string_view algName(Alg alg);

enum class AlgFamily : uint8_t { kHmac, kRsaPkcs1, kRsaPss, kEcdsa, kEdDsa };
AlgFamily algFamily(Alg alg);
// Bytes of the algorithm's hash: 32, 48 or 64 (EdDSA: 64, its signature half-size is 32).
size_t algHashBytes(Alg alg);

}  // namespace sluice::filters::jwt
