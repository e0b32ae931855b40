#include "conf/text.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace sluice::conf::detail {
namespace {

constexpr size_t kMaxQuoted = 64;

char lowerChar(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool isAlnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}

bool isLabel(std::string_view label) {
  if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
    return false;
  }
  return std::all_of(label.begin(), label.end(),
                     [](char c) { return isAlnum(c) || c == '-' || c == '_'; });
}

}  // namespace

std::string quote(std::string_view text) {
  std::string out = "\"";
  const bool shorten = text.size() > kMaxQuoted;
  if (shorten) {
    text = text.substr(0, kMaxQuoted);
  }
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += shorten ? "...\"" : "\"";
  return out;
}

std::string quoteName(std::string_view text) {
  const bool plain = !text.empty() && text.size() <= kMaxQuoted &&
                     std::all_of(text.begin(), text.end(), [](char c) {
                       return c > 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\';
                     });
  return plain ? "'" + std::string(text) + "'" : quote(text);
}

std::string toLower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), lowerChar);
  return out;
}

bool isHostName(std::string_view text) {
  if (text.empty() || text.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (true) {
    const size_t dot = text.find('.', start);
    if (!isLabel(text.substr(start, dot == std::string_view::npos ? dot : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) {
      return true;
    }
    start = dot + 1;
  }
}

bool isObjectName(std::string_view text) {
  return !text.empty() && text.size() <= 128 && std::all_of(text.begin(), text.end(), [](char c) {
    return isAlnum(c) || c == '_' || c == '-' || c == '.' || c == ':';
  });
}

bool hasSpaceOrControl(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; });
}

bool isToken(std::string_view text) {
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return isAlnum(c) || kExtra.find(c) != std::string_view::npos;
  });
}

std::optional<std::string> normalizeRouteHost(std::string_view text, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<std::string> {
    if (why != nullptr) {
      *why = std::move(reason);
    }
    return std::nullopt;
  };
  std::string host = toLower(text);
  if (host == "*") {
    return host;
  }
  if (host.empty()) {
    return fail("is empty");
  }
  if (host.find_first_of(" \t\r\n") != std::string::npos) {
    return fail("must not contain spaces");
  }
  if (host.find(':') != std::string::npos || host.find('[') != std::string::npos) {
    return fail("must not contain a port (routes match the Host header without its port)");
  }
  const bool wildcard = host.rfind("*.", 0) == 0;
  const std::string_view name = wildcard ? std::string_view(host).substr(2) : host;
  if (name.find('*') != std::string_view::npos) {
    return fail("may only use a wildcard as a leading \"*.\" (\"*.example.com\") or alone (\"*\")");
  }
  if (!isHostName(name)) {
    return fail("must be a host name, \"*.suffix\" or \"*\"");
  }
  return host;
}

size_t editDistance(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  const size_t m = b.size();
  // Three rows: the one before the previous one is needed for transpositions.
  std::vector<size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (size_t j = 0; j <= m; ++j) {
    prev[j] = j;
  }
  for (size_t i = 1; i <= n; ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = lowerChar(a[i - 1]) == lowerChar(b[j - 1]) ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && lowerChar(a[i - 1]) == lowerChar(b[j - 2]) &&
          lowerChar(a[i - 2]) == lowerChar(b[j - 1])) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

std::optional<std::string> closestMatch(std::string_view word,
                                        const std::vector<std::string>& candidates) {
  // Short words need a closer match: one edit in a three-letter word is a different word.
  const size_t limit = word.size() <= 3 ? 1 : 2;
  std::optional<std::string> best;
  size_t best_distance = limit + 1;
  for (const std::string& candidate : candidates) {
    const size_t d = editDistance(word, candidate);
    if (d < best_distance) {
      best = candidate;
      best_distance = d;
    }
  }
  if (best || word.size() < 3) {
    return best;
  }
  const std::string lowered = toLower(word);
  for (const std::string& candidate : candidates) {
    if (toLower(candidate).rfind(lowered, 0) == 0) {
      return candidate;
    }
  }
  return std::nullopt;
}

std::string didYouMean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::optional<std::string> match = closestMatch(word, candidates);
  return match ? "; did you mean " + quoteName(*match) + "?" : std::string();
}

}  // namespace sluice::conf::detail
