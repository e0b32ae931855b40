#include "filters/jwt/alg.h"

#include <array>

namespace sluice::filters::jwt {

namespace {

constexpr std::array<std::string_view, kAlgCount> kNames = {
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
};

}  // namespace

std::optional<Alg> algFromName(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) {
      return static_cast<Alg>(i);
    }
  }
  return std::nullopt;
}

std::string_view algName(Alg alg) {
  return kNames[static_cast<size_t>(alg)];
}

AlgFamily algFamily(Alg alg) {
  switch (alg) {
    case Alg::kHs256:
    case Alg::kHs384:
    case Alg::kHs512:
      return AlgFamily::kHmac;
    case Alg::kRs256:
    case Alg::kRs384:
    case Alg::kRs512:
      return AlgFamily::kRsaPkcs1;
    case Alg::kPs256:
    case Alg::kPs384:
    case Alg::kPs512:
      return AlgFamily::kRsaPss;
    case Alg::kEs256:
    case Alg::kEs384:
    case Alg::kEs512:
      return AlgFamily::kEcdsa;
    case Alg::kEdDsa:
      break;
  }
  return AlgFamily::kEdDsa;
}

size_t algHashBytes(Alg alg) {
  switch (alg) {
    case Alg::kHs256:
    case Alg::kRs256:
    case Alg::kPs256:
    case Alg::kEs256:
      return 32;
    case Alg::kHs384:
    case Alg::kRs384:
    case Alg::kPs384:
    case Alg::kEs384:
      return 48;
    default:
      return 64;
  }
}

}  // namespace sluice::filters::jwt
