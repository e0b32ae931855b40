#pragma once

// Private to conf/: small text checks and message helpers shared by the loader sources.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::conf::detail {

// `text` in double quotes, with control characters escaped and long values shortened, so that a
// value from an untrusted file can be put in a one-line message.
std::string quote(std::string_view text);

// 'name' when `text` is plain printable ASCII without quotes, else quote(text): for key and object
// names in messages.
std::string quoteName(std::string_view text);

// Lower-cases ASCII letters.
std::string toLower(std::string_view text);

// A DNS host name: dot-separated labels of letters, digits, '-' and '_' (no leading or trailing
// '-'), 1..63 characters each, 253 in all. IPv4 literals pass too.
bool isHostName(std::string_view text);

// A name for a listener, pool, filter or route: letters, digits, '_', '-', '.' and ':' (the
// characters HAProxy allows), at most 128. Names appear in metric labels and admin URLs.
bool isObjectName(std::string_view text);

// An HTTP token (RFC 9110): header and cookie names.
bool isToken(std::string_view text);

// Any space, control character or DEL.
bool hasSpaceOrControl(std::string_view text);

// A route's `host`: an exact host name, "*.suffix" or "*"; returns it lower-cased, or nullopt
// with `why` set.
std::optional<std::string> normalizeRouteHost(std::string_view text, std::string* why);

// Optimal string alignment distance (Levenshtein plus adjacent transpositions), ASCII
// case-insensitive.
size_t editDistance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is close enough to be a likely typo (or `word` is a
// prefix of it); nullopt otherwise.
std::optional<std::string> closestMatch(std::string_view word,
                                        const std::vector<std::string>& candidates);

// "; did you mean 'x'?" or "".
std::string didYouMean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace sluice::conf::detail
