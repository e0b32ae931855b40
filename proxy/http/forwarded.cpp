#include "proxy/http/forwarded.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "proxy/http/syntax.h"

namespace sluice::http {

namespace {

constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool allDigits(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) {
    return false;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

bool validPort(std::string_view s) {
  if (!allDigits(s, 5)) {
    return false;
  }
  unsigned v = 0;
  for (char c : s) {
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v <= 65535;
}

// One hop of a forwarding chain, as the hop to its right reported it.
struct Hop {
  bool valid = false;  // an address (not "unknown", obfuscated or malformed)
  IpAddress addr;
  // Forwarded only: the element's proto= and host=, unescaped.
  std::string proto;
  std::string host;
};

// An X-Forwarded-For element: an address, optionally with a port ("192.0.2.1:80",
// "[2001:db8::1]:80"), which some proxies add.
std::optional<IpAddress> parseXffNode(std::string_view s) {
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos) {
      return std::nullopt;
    }
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty() && (rest[0] != ':' || !validPort(rest.substr(1)))) {
      return std::nullopt;
    }
    std::optional<IpAddress> a = IpAddress::parse(s.substr(1, close - 1));
    return a && !a->isV4() ? a : std::nullopt;
  }
  size_t colon = s.find(':');
  if (colon != std::string_view::npos && s.find(':', colon + 1) == std::string_view::npos) {
    if (!validPort(s.substr(colon + 1))) {
      return std::nullopt;
    }
    s = s.substr(0, colon);  // IPv4 with a port
  }
  return IpAddress::parse(s);
}

// A Forwarded node (RFC 7239 6): IPv4 or "[IPv6]", an optional port (digits or obfuscated),
// "unknown", or an obfuscated identifier. Only addresses make a valid hop.
std::optional<IpAddress> parseForwardedNode(std::string_view s) {
  std::string_view name = s;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos) {
      return std::nullopt;
    }
    name = s.substr(1, close - 1);
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') {
        return std::nullopt;
      }
      port = rest.substr(1);
      if (port.empty()) {
        return std::nullopt;
      }
    }
    std::optional<IpAddress> a = IpAddress::parse(name);
    return a && !a->isV4() ? a : std::nullopt;
  }
  size_t colon = s.find(':');
  if (colon != std::string_view::npos) {
    name = s.substr(0, colon);
    port = s.substr(colon + 1);
    bool obfuscated = port.size() > 1 && port[0] == '_';
    if (!validPort(port) && !obfuscated) {
      return std::nullopt;
    }
  }
  std::optional<IpAddress> a = IpAddress::parse(name);
  return a && a->isV4() ? a : std::nullopt;  // "unknown", "_hidden" and garbage: no address
}

// Parses one Forwarded header line into hops, or returns false when the line is malformed
// (RFC 7239 4: elements separated by ",", pairs by ";", values tokens or quoted strings). OWS
// around "," and ";" is tolerated.
bool parseForwardedLine(std::string_view line, std::vector<Hop>* hops) {
  size_t i = 0;
  auto skipOws = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) {
      ++i;
    }
  };
  while (true) {
    Hop hop;
    bool seen_for = false;
    bool seen_proto = false;
    bool seen_host = false;
    bool empty = true;
    while (true) {
      skipOws();
      if (i < line.size() && isTchar(static_cast<unsigned char>(line[i]))) {
        size_t start = i;
        while (i < line.size() && isTchar(static_cast<unsigned char>(line[i]))) {
          ++i;
        }
        std::string_view name = line.substr(start, i - start);
        if (i >= line.size() || line[i] != '=') {
          return false;
        }
        ++i;
        std::string value;
        if (i < line.size() && line[i] == '"') {
          ++i;
          bool closed = false;
          while (i < line.size()) {
            auto c = static_cast<unsigned char>(line[i++]);
            if (c == '"') {
              closed = true;
              break;
            }
            if (c == '\\') {
              if (i >= line.size() || !isFieldValueChar(static_cast<unsigned char>(line[i]))) {
                return false;
              }
              c = static_cast<unsigned char>(line[i++]);
            } else if (!isFieldValueChar(c)) {
              return false;
            }
            value.push_back(static_cast<char>(c));
          }
          if (!closed) {
            return false;
          }
        } else {
          size_t vstart = i;
          while (i < line.size() && isTchar(static_cast<unsigned char>(line[i]))) {
            ++i;
          }
          if (i == vstart) {
            return false;
          }
          value.assign(line.substr(vstart, i - vstart));
        }
        empty = false;
        bool* seen = nullptr;
        if (iequals(name, "for")) {
          seen = &seen_for;
          std::optional<IpAddress> a = parseForwardedNode(value);
          hop.valid = a.has_value();
          if (a) {
            hop.addr = *a;
          }
        } else if (iequals(name, "proto")) {
          seen = &seen_proto;
          hop.proto = std::move(value);
        } else if (iequals(name, "host")) {
          seen = &seen_host;
          hop.host = std::move(value);
        }
        if (seen != nullptr) {
          if (*seen) {
            return false;  // RFC 7239 4: each parameter at most once per element
          }
          *seen = true;
        }
        skipOws();
      }
      if (i < line.size() && line[i] == ';') {
        ++i;
        continue;
      }
      break;
    }
    if (!empty) {
      hop.valid = hop.valid && seen_for;
      hops->push_back(std::move(hop));
    }
    if (i == line.size()) {
      return true;
    }
    if (line[i] != ',') {
      return false;
    }
    ++i;
  }
}

// The last element of a comma-separated header over all its lines: what the nearest proxy
// said.
std::string_view lastListValue(const std::vector<Header>& headers, std::string_view name) {
  std::string_view last;
  for (const Header& h : headers) {
    if (!iequals(h.name, name)) {
      continue;
    }
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view item = trim(v.substr(0, comma));
      if (!item.empty()) {
        last = item;
      }
      if (comma == std::string_view::npos) {
        break;
      }
      v.remove_prefix(comma + 1);
    }
  }
  return last;
}

std::string validProto(std::string_view p) {
  if (iequals(p, "http")) {
    return "http";
  }
  if (iequals(p, "https")) {
    return "https";
  }
  return "";
}

// A host and optional port as a proxy reports it: letters, digits and "-._:[]" only, so that
// nothing else can reach a backend through X-Forwarded-Host.
bool plausibleHost(std::string_view h) {
  if (h.empty() || h.size() > 255) {
    return false;
  }
  for (char c : h) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("-._:[]").find(c) != std::string_view::npos;
    if (!ok) {
      return false;
    }
  }
  return true;
}

}  // namespace

// ---- addresses -----------------------------------------------------------------------------

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return std::nullopt;
  }
  char buf[INET6_ADDRSTRLEN];
  memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress a;
  in_addr v4;
  in6_addr v6;
  if (inet_pton(AF_INET, buf, &v4) == 1) {
    memcpy(a.bytes.data(), kMappedPrefix, 12);
    memcpy(a.bytes.data() + 12, &v4, 4);
    return a;
  }
  if (inet_pton(AF_INET6, buf, &v6) == 1) {
    memcpy(a.bytes.data(), &v6, 16);
    return a;
  }
  return std::nullopt;
}

bool IpAddress::isV4() const {
  return memcmp(bytes.data(), kMappedPrefix, 12) == 0;
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN];
  if (isV4()) {
    inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof(buf));
  } else {
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
  }
  return buf;
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* why) {
  std::string_view addr_text = text;
  std::optional<unsigned> len;
  size_t slash = text.find('/');
  if (slash != std::string_view::npos) {
    addr_text = text.substr(0, slash);
    std::string_view bits = text.substr(slash + 1);
    if (!allDigits(bits, 3)) {
      *why = "invalid prefix length in \"" + std::string(text) + "\"";
      return std::nullopt;
    }
    unsigned v = 0;
    for (char c : bits) {
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    len = v;
  }
  std::optional<IpAddress> a = IpAddress::parse(addr_text);
  if (!a) {
    *why = "\"" + std::string(text) + "\" is not an IPv4 or IPv6 address or CIDR";
    return std::nullopt;
  }
  Cidr c;
  c.base_ = *a;
  // Written as IPv6, the prefix counts over 128 bits; "::ffff:10.0.0.0/104" is 10.0.0.0/8.
  const bool written_v6 = addr_text.find(':') != std::string_view::npos;
  unsigned max = written_v6 ? 128 : 32;
  unsigned bits = len.value_or(max);
  if (bits > max) {
    *why = "prefix length of \"" + std::string(text) + "\" is above " + std::to_string(max);
    return std::nullopt;
  }
  c.bits_ = static_cast<uint8_t>(written_v6 ? bits : bits + 96);
  c.v4_ = a->isV4() && c.bits_ >= 96;
  for (unsigned b = c.bits_; b < 128; ++b) {
    if ((c.base_.bytes[b / 8] & (0x80u >> (b % 8))) != 0) {
      *why = "\"" + std::string(text) + "\" has bits set after the prefix length";
      return std::nullopt;
    }
  }
  return c;
}

bool Cidr::contains(const IpAddress& addr) const {
  if (addr.isV4() != v4_) {
    return false;
  }
  unsigned full = bits_ / 8;
  if (memcmp(addr.bytes.data(), base_.bytes.data(), full) != 0) {
    return false;
  }
  unsigned rest = bits_ % 8;
  if (rest == 0) {
    return true;
  }
  auto mask = static_cast<uint8_t>(0xFFu << (8 - rest));
  return (addr.bytes[full] & mask) == (base_.bytes[full] & mask);
}

std::string Cidr::toString() const {
  if (v4_) {
    return base_.toString() + "/" + std::to_string(bits_ - 96);
  }
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, base_.bytes.data(), buf, sizeof(buf));  // "::ffff:0.0.0.0/80" stays v6
  return std::string(buf) + "/" + std::to_string(bits_);
}

bool TrustedProxies::add(std::string_view cidr, std::string* why) {
  std::optional<Cidr> c = Cidr::parse(cidr, why);
  if (!c) {
    return false;
  }
  cidrs_.push_back(*c);
  return true;
}

bool TrustedProxies::contains(const IpAddress& addr) const {
  for (const Cidr& c : cidrs_) {
    if (c.contains(addr)) {
      return true;
    }
  }
  return false;
}

// ---- the walk ------------------------------------------------------------------------------

ClientInfo resolveClient(const IpAddress& peer, const TrustedProxies& trusted,
                         ForwardedSource source, const std::vector<Header>& headers,
                         std::string_view scheme, std::string_view host) {
  ClientInfo info;
  info.client = peer;
  info.x_forwarded_proto = validProto(scheme);
  if (info.x_forwarded_proto.empty()) {
    info.x_forwarded_proto = "http";
  }
  info.x_forwarded_host.assign(host);
  std::vector<Hop> hops;
  size_t first = 0;  // the believed chain is hops[first..]
  if (trusted.contains(peer)) {
    for (const Header& h : headers) {
      if (source == ForwardedSource::kXForwardedFor && iequals(h.name, "x-forwarded-for")) {
        std::string_view v = h.value;
        while (true) {
          size_t comma = v.find(',');
          std::string_view item = trim(v.substr(0, comma));
          if (!item.empty()) {  // empty list elements do not count (RFC 9110 5.6.1)
            Hop hop;
            std::optional<IpAddress> a = parseXffNode(item);
            hop.valid = a.has_value();
            if (a) {
              hop.addr = *a;
            }
            hops.push_back(std::move(hop));
          }
          if (comma == std::string_view::npos) {
            break;
          }
          v.remove_prefix(comma + 1);
        }
      } else if (source == ForwardedSource::kForwarded && iequals(h.name, "forwarded")) {
        size_t before = hops.size();
        if (!parseForwardedLine(h.value, &hops)) {
          hops.resize(before);
          hops.emplace_back();  // the whole line counts as one malformed hop
        }
      }
    }
    // From the right: each hop is believed because the hop to its right is a trusted proxy.
    // The first address that is not a trusted proxy is the client; a hop that is no address
    // stops the walk, and the last trusted proxy is the client.
    first = hops.size();
    while (first > 0 && hops[first - 1].valid) {
      --first;
      info.client = hops[first].addr;
      info.from_header = true;
      if (!trusted.contains(info.client)) {
        break;
      }
    }
    // The proto and host the trusted peer reports.
    std::string proto;
    std::string fwd_host;
    if (source == ForwardedSource::kXForwardedFor) {
      proto = validProto(lastListValue(headers, "x-forwarded-proto"));
      fwd_host = lastListValue(headers, "x-forwarded-host");
    } else if (!hops.empty()) {
      proto = validProto(hops.back().proto);
      fwd_host = hops.back().host;
    }
    if (!proto.empty()) {
      info.x_forwarded_proto = std::move(proto);
    }
    if (plausibleHost(fwd_host)) {
      info.x_forwarded_host = std::move(fwd_host);
    }
  }
  info.client_ip = info.client.toString();
  for (size_t i = first; i < hops.size(); ++i) {
    info.x_forwarded_for += hops[i].addr.toString();
    info.x_forwarded_for += ", ";
  }
  info.x_forwarded_for += peer.toString();
  return info;
}

}  // namespace sluice::http
