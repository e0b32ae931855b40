#pragma once

#include <string>
#include <string_view>

namespace sluice::filters::jwt {

// Text from a token or a JWKS for a log line: short printable ASCII comes out quoted; anything
// else (long, control characters, quotes, non-ASCII) only as its length, so that nothing an
// attacker sends can forge or flood a log line.
inline std::string quotedForLog(std::string_view s) {
  bool plain = s.size() <= 64;
  for (char c : s) {
    plain = plain && c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  }
  return plain ? "\"" + std::string(s) + "\"" : "(" + std::to_string(s.size()) + " bytes)";
}

}  // namespace sluice::filters::jwt
