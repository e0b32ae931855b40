#pragma once

// base64url (RFC 4648 section 5) as JWS uses it (RFC 7515 section 2): the URL-safe alphabet, no
// padding, nothing else. Decoding is strict so that a token has exactly one spelling: any other
// character ('+', '/', '=', whitespace), a length of 4n+1, or stray bits in the last character
// are refused.

#include <string>
#include <string_view>

namespace sluice::filters::jwt {

// Appends the decoded bytes of `in` to `out`. False (and `out` unspecified) when `in` is not
// strict unpadded base64url. `allow_padding` accepts a correct trailing "=" or "==" (JWK
// documents from some issuers carry it; tokens never may).
bool decodeBase64Url(std::string_view in, std::string& out, bool allow_padding = false);

std::string encodeBase64Url(std::string_view in);

}  // namespace sluice::filters::jwt
