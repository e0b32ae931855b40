// Value syntax shared by every key: durations, sizes, addresses; and the diagnostic format.

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <limits>

#include "conf/config.h"
#include "conf/section.h"
#include "conf/text.h"

namespace sluice::conf {
namespace {

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

template <typename T>
std::optional<T> fail(std::string* why, std::string reason) {
  if (why != nullptr) {
    *why = std::move(reason);
  }
  return std::nullopt;
}

// Reads the decimal digits at the front of `text` (advancing it). nullopt on overflow.
std::optional<uint64_t> takeNumber(std::string_view& text) {
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && isDigit(text[i]); ++i) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return std::nullopt;
    }
    value = value * 10 + digit;
  }
  text.remove_prefix(i);
  return value;
}

std::string_view takeUnit(std::string_view& text) {
  size_t i = 0;
  while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i])) != 0) {
    ++i;
  }
  const std::string_view unit = text.substr(0, i);
  text.remove_prefix(i);
  return unit;
}

bool mulAdd(uint64_t& total, uint64_t value, uint64_t scale, uint64_t max) {
  if (value != 0 && scale > max / value) {
    return false;
  }
  const uint64_t add = value * scale;
  if (add > max - total) {
    return false;
  }
  total += add;
  return true;
}

struct Unit {
  std::string_view name;
  uint64_t scale;
};

// Largest first: a duration's parts must come in this order.
constexpr Unit kDurationUnits[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
constexpr std::string_view kDurationUnitHelp = "use ms, s, m or h";

// Case-insensitive. Bare K/M/G/T are binary, like nginx's "16k".
constexpr Unit kSizeUnits[] = {
    {"", 1},
    {"b", 1},
    {"k", 1ull << 10},
    {"kib", 1ull << 10},
    {"kb", 1000},
    {"m", 1ull << 20},
    {"mib", 1ull << 20},
    {"mb", 1000ull * 1000},
    {"g", 1ull << 30},
    {"gib", 1ull << 30},
    {"gb", 1000ull * 1000 * 1000},
    {"t", 1ull << 40},
    {"tib", 1ull << 40},
    {"tb", 1000ull * 1000 * 1000 * 1000},
};
constexpr std::string_view kSizeUnitHelp = "use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB";

constexpr std::string_view kFractionHelp =
    "fractions are not supported; use a smaller unit (\"1500ms\", not \"1.5s\")";

std::optional<uint16_t> parsePort(std::string_view text, std::string* why) {
  if (text.empty()) {
    return fail<uint16_t>(why, "missing port");
  }
  if (!std::all_of(text.begin(), text.end(), isDigit)) {
    return fail<uint16_t>(why, "port " + detail::quote(text) + " is not a number");
  }
  const std::string_view digits = text;
  const std::optional<uint64_t> port = takeNumber(text);
  if (!port || *port < 1 || *port > 65535) {
    return fail<uint16_t>(why, "port must be between 1 and 65535, got " + std::string(digits));
  }
  return static_cast<uint16_t>(*port);
}

// The canonical text of an IP literal ("0:0::1" -> "::1"), or nullopt.
std::optional<std::string> canonicalIp(const std::string& host, int family) {
  unsigned char bytes[16];
  char text[INET6_ADDRSTRLEN];
  if (inet_pton(family, host.c_str(), bytes) != 1 ||
      inet_ntop(family, bytes, text, sizeof(text)) == nullptr) {
    return std::nullopt;
  }
  return std::string(text);
}

}  // namespace

std::optional<KeySource> KeySource::parse(std::string_view text, std::string* why) {
  KeySource k;
  k.text = text;
  if (text == "source_ip") {
    return k;
  }
  const size_t colon = text.find(':');
  const std::string_view kind = text.substr(0, colon);
  const std::string_view name =
      colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  k.name = name;
  if ((kind == "header" || kind == "cookie") && detail::isToken(name)) {
    k.kind = kind == "header" ? Kind::kHeader : Kind::kCookie;
    return k;
  }
  if (kind == "query" && !name.empty() && !detail::hasSpaceOrControl(name) &&
      name.find_first_of("&=#") == std::string_view::npos) {
    k.kind = Kind::kQuery;
    return k;
  }
  if (why != nullptr) {
    *why = "must be \"source_ip\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\", got " +
           detail::quote(text);
  }
  return std::nullopt;
}

std::string Diagnostic::format() const {
  return detail::formatPos(pos) + (error() ? ": error: " : ": warning: ") + message;
}

std::optional<Duration> parseDuration(std::string_view text, std::string* why) {
  if (text.empty()) {
    return fail<Duration>(why, "empty duration");
  }
  if (text.front() == '-') {
    return fail<Duration>(why, "durations cannot be negative");
  }
  const std::string_view whole = text;
  uint64_t total = 0;
  size_t next_unit = 0;  // index into kDurationUnits of the largest unit still allowed
  const uint64_t max = static_cast<uint64_t>(std::numeric_limits<Duration::rep>::max());
  while (!text.empty()) {
    if (!isDigit(text.front())) {
      return fail<Duration>(why, "expected a number at " + detail::quote(text));
    }
    const std::string_view digits = text;
    const std::optional<uint64_t> value = takeNumber(text);
    if (!value) {
      return fail<Duration>(why, "too large");
    }
    if (!text.empty() && text.front() == '.') {
      return fail<Duration>(why, std::string(kFractionHelp));
    }
    const std::string_view unit = takeUnit(text);
    if (unit.empty() && !text.empty()) {
      return fail<Duration>(why, "expected a unit at " + detail::quote(text) + " (" +
                                     std::string(kDurationUnitHelp) + ")");
    }
    if (unit.empty()) {
      const std::string number(digits.substr(0, digits.size() - text.size()));
      return fail<Duration>(why, "missing unit after " + detail::quote(number) + " (" +
                                     std::string(kDurationUnitHelp) + ", e.g. \"30s\")");
    }
    const auto* found = std::find_if(std::begin(kDurationUnits), std::end(kDurationUnits),
                                     [&](const Unit& u) { return u.name == unit; });
    if (found == std::end(kDurationUnits)) {
      return fail<Duration>(
          why, "unknown unit " + detail::quote(unit) + " (" + std::string(kDurationUnitHelp) + ")");
    }
    const auto index = static_cast<size_t>(found - std::begin(kDurationUnits));
    if (index < next_unit) {
      return fail<Duration>(why,
                            "units must go from largest to smallest, each once (\"1m30s\"), in " +
                                detail::quote(whole));
    }
    next_unit = index + 1;
    if (!mulAdd(total, *value, found->scale, max)) {
      return fail<Duration>(why, "too large");
    }
  }
  return Duration(static_cast<Duration::rep>(total));
}

std::optional<uint64_t> parseSize(std::string_view text, std::string* why) {
  if (text.empty()) {
    return fail<uint64_t>(why, "empty size");
  }
  if (text.front() == '-') {
    return fail<uint64_t>(why, "sizes cannot be negative");
  }
  if (!isDigit(text.front())) {
    return fail<uint64_t>(why, "expected a number at " + detail::quote(text));
  }
  const std::optional<uint64_t> value = takeNumber(text);
  if (!value) {
    return fail<uint64_t>(why, "too large");
  }
  if (!text.empty() && text.front() == '.') {
    return fail<uint64_t>(why, "fractions are not supported; use a smaller unit (\"1536KiB\")");
  }
  const std::string unit = detail::toLower(text);
  const auto* found = std::find_if(std::begin(kSizeUnits), std::end(kSizeUnits),
                                   [&](const Unit& u) { return u.name == unit; });
  if (found == std::end(kSizeUnits)) {
    return fail<uint64_t>(
        why, "unknown unit " + detail::quote(text) + " (" + std::string(kSizeUnitHelp) + ")");
  }
  uint64_t total = 0;
  if (!mulAdd(total, *value, found->scale, std::numeric_limits<uint64_t>::max())) {
    return fail<uint64_t>(why, "too large");
  }
  return total;
}

std::optional<Address> parseAddress(std::string_view text, std::string* why) {
  if (text.empty()) {
    return fail<Address>(why, "empty address");
  }
  Address address;
  address.text = std::string(text);
  std::string_view port_text;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return fail<Address>(why, "missing ']' after the IPv6 address");
    }
    const std::string host(text.substr(1, close - 1));
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return fail<Address>(why, "missing port (e.g. \"[::1]:8443\")");
    }
    const std::optional<std::string> canonical = canonicalIp(host, AF_INET6);
    if (!canonical) {
      return fail<Address>(why, detail::quote(host) + " is not a valid IPv6 address");
    }
    address.host = *canonical;
    address.ipv6 = true;
    port_text = rest.substr(1);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail<Address>(why, "missing port (e.g. \"127.0.0.1:8080\")");
    }
    const std::string host(text.substr(0, colon));
    if (host.find(':') != std::string::npos) {
      return fail<Address>(why, "IPv6 addresses need brackets (e.g. \"[::1]:8443\")");
    }
    if (host.empty()) {
      return fail<Address>(why, "missing host (use 0.0.0.0 or [::] for every interface)");
    }
    const bool looks_ipv4 =
        std::all_of(host.begin(), host.end(), [](char c) { return isDigit(c) || c == '.'; });
    if (looks_ipv4) {
      const std::optional<std::string> canonical = canonicalIp(host, AF_INET);
      if (!canonical) {
        return fail<Address>(why, detail::quote(host) + " is not a valid IPv4 address");
      }
      address.host = *canonical;
    } else if (detail::isHostName(host)) {
      address.host = detail::toLower(host);
    } else {
      return fail<Address>(why, detail::quote(host) + " is not a valid host name or IP address");
    }
    port_text = text.substr(colon + 1);
  }
  const std::optional<uint16_t> port = parsePort(port_text, why);
  if (!port) {
    return std::nullopt;
  }
  address.port = *port;
  return address;
}

}  // namespace sluice::conf
