#include "filters/jwt/base64url.h"

#include <array>
#include <cstdint>

namespace sluice::filters::jwt {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr uint8_t kInvalid = 0xff;

constexpr std::array<uint8_t, 256> makeTable() {
  std::array<uint8_t, 256> t{};
  for (uint8_t& v : t) {
    v = kInvalid;
  }
  for (uint8_t i = 0; i < 64; ++i) {
    t[static_cast<uint8_t>(kAlphabet[i])] = i;
  }
  return t;
}

constexpr std::array<uint8_t, 256> kTable = makeTable();

}  // namespace

bool decodeBase64Url(std::string_view in, std::string& out, bool allow_padding) {
  if (allow_padding && in.size() % 4 == 0 && !in.empty()) {
    // At most two '=' and only where the unpadded length would need them.
    size_t pad = 0;
    while (pad < 2 && in.size() > pad && in[in.size() - 1 - pad] == '=') {
      ++pad;
    }
    in.remove_suffix(pad);
  }
  if (in.size() % 4 == 1) {
    return false;
  }
  out.reserve(out.size() + in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    uint8_t v = kTable[static_cast<uint8_t>(c)];
    if (v == kInvalid) {
      return false;
    }
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // The bits left over (2 or 4) belong to no byte; a canonical encoder leaves them zero.
  return (acc & ((1u << bits) - 1)) == 0;
}

std::string encodeBase64Url(std::string_view in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    acc = (acc << 8) | static_cast<uint8_t>(c);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) {
    out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  }
  return out;
}

}  // namespace sluice::filters::jwt
