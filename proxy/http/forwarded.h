#pragma once

// Who the client is, when sluice sits behind other proxies: trusted-proxy CIDRs, and the
// forwarding headers (X-Forwarded-For/-Proto/-Host or RFC 7239 Forwarded) read the way nginx's
// real_ip_recursive reads them: from the right, believing each hop only while the hop that
// reported it is a trusted proxy. Pure code: no I/O.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/message.h"

namespace sluice::http {

// An IPv4 or IPv6 address. IPv4 is held as IPv4-mapped IPv6 (::ffff:a.b.c.d), so that a peer
// accepted on a dual-stack socket and the same peer on an IPv4 socket are one address.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};

  // "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"; no brackets, no port, no zone.
  static std::optional<IpAddress> parse(std::string_view text);
  bool isV4() const;
  // "192.0.2.1" for IPv4 (mapped or not), RFC 5952 text for IPv6.
  std::string toString() const;
  bool operator==(const IpAddress&) const = default;
};

class Cidr {
 public:
  // "10.0.0.0/8", "::1/128", "2001:db8::/32"; a bare address is /32 or /128. Set host bits
  // ("10.0.0.1/8") are refused: they usually mean a typo. On error returns nullopt and puts a
  // sentence for the config loader in `*why`.
  static std::optional<Cidr> parse(std::string_view text, std::string* why);
  // IPv4 CIDRs match IPv4 addresses, also IPv4-mapped ones; IPv6 CIDRs match IPv6 addresses.
  bool contains(const IpAddress& addr) const;
  std::string toString() const;

 private:
  IpAddress base_;
  uint8_t bits_ = 0;  // prefix length over the 128-bit (mapped) form
  bool v4_ = false;
};

class TrustedProxies {
 public:
  bool add(std::string_view cidr, std::string* why);
  bool contains(const IpAddress& addr) const;
  bool empty() const { return cidrs_.empty(); }

 private:
  std::vector<Cidr> cidrs_;
};

// Which header the trusted proxies write. Only one is read: a trusted proxy that maintains
// X-Forwarded-For passes a client's own Forwarded header through untouched, and the other way
// round, so reading both would let a client choose its address.
enum class ForwardedSource : uint8_t { kXForwardedFor, kForwarded };

struct ClientInfo {
  IpAddress client;          // the believed client address
  std::string client_ip;     // client.toString(): for logs, filters, rate limits
  bool from_header = false;  // the address came from a forwarding header, not the peer
  // The values sluice sends upstream; client-sent forwarding headers are dropped.
  std::string x_forwarded_for;    // the believed chain from the client on, then the peer
  std::string x_forwarded_proto;  // "http" or "https"
  std::string x_forwarded_host;   // may be empty (no Host)
};

// `peer` is the connection's peer (after the PROXY protocol, if any), `scheme` the listener's
// own ("http" or "https"), `host` the request's host (Host header or absolute-form authority).
// From a peer that is not trusted every forwarding header is ignored.
ClientInfo resolveClient(const IpAddress& peer, const TrustedProxies& trusted,
                         ForwardedSource source, const std::vector<Header>& headers,
                         std::string_view scheme, std::string_view host);

}  // namespace sluice::http
