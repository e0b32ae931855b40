#pragma once

// Strict JSON for token headers, claims and JWKS documents: nlohmann-json's parser driven
// through its SAX interface, building the document ourselves so that we can refuse what the
// library would accept silently. nlohmann's own parser already refuses invalid UTF-8, trailing
// data, comments and numbers that overflow a double (1e400); on top of that we refuse duplicate
// object keys (two parsers may pick different values for `{"alg":"HS256","alg":"none"}`) and
// nesting deeper than a bound. The parser is iterative, so depth costs no stack; the bound is
// there to keep documents small and flat. Nothing here throws.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sluice::filters::jwt {

inline constexpr size_t kDefaultMaxJsonDepth = 16;

// One JSON value, or nullopt with `*why` set (a short phrase, never the input).
std::optional<nlohmann::json> parseStrictJson(std::string_view text, std::string* why,
                                              size_t max_depth = kDefaultMaxJsonDepth);

}  // namespace sluice::filters::jwt
