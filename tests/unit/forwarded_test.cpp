#include "proxy/http/forwarded.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice::http {
namespace {

IpAddress ip(std::string_view s) {
  std::optional<IpAddress> a = IpAddress::parse(s);
  EXPECT_TRUE(a.has_value()) << s;
  return a.value_or(IpAddress{});
}

bool inCidr(std::string_view cidr, std::string_view addr) {
  std::string why;
  std::optional<Cidr> c = Cidr::parse(cidr, &why);
  EXPECT_TRUE(c.has_value()) << cidr << ": " << why;
  return c && c->contains(ip(addr));
}

TEST(IpAddress, ParseAndFormat) {
  EXPECT_EQ(ip("192.0.2.1").toString(), "192.0.2.1");
  EXPECT_TRUE(ip("192.0.2.1").isV4());
  EXPECT_EQ(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));  // one address, however it arrives
  EXPECT_EQ(ip("2001:DB8:0:0::1").toString(), "2001:db8::1");
  EXPECT_FALSE(ip("::1").isV4());
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", "[::1]",
                          "::1%eth0", "1.2.3.4:80", "localhost", "::g"}) {
    EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
  }
}

TEST(Cidr, MatchingBothFamilies) {
  EXPECT_TRUE(inCidr("10.0.0.0/8", "10.255.1.2"));
  EXPECT_FALSE(inCidr("10.0.0.0/8", "11.0.0.0"));
  EXPECT_TRUE(inCidr("10.0.0.0/8", "::ffff:10.1.2.3"));  // a dual-stack socket's IPv4 peer
  EXPECT_TRUE(inCidr("192.0.2.7", "192.0.2.7"));         // a bare address is /32
  EXPECT_FALSE(inCidr("192.0.2.7", "192.0.2.8"));
  EXPECT_TRUE(inCidr("172.16.0.0/12", "172.31.255.255"));
  EXPECT_FALSE(inCidr("172.16.0.0/12", "172.32.0.0"));
  EXPECT_TRUE(inCidr("0.0.0.0/0", "203.0.113.9"));
  EXPECT_FALSE(inCidr("0.0.0.0/0", "2001:db8::1"));
  EXPECT_TRUE(inCidr("::1/128", "::1"));
  EXPECT_TRUE(inCidr("::1", "::1"));  // a bare address is /128
  EXPECT_FALSE(inCidr("::1/128", "::2"));
  EXPECT_TRUE(inCidr("2001:db8::/32", "2001:db8:ffff::1"));
  EXPECT_FALSE(inCidr("2001:db8::/32", "2001:db9::1"));
  EXPECT_TRUE(inCidr("fe80::/10", "febf::1"));
  EXPECT_FALSE(inCidr("fe80::/10", "fec0::1"));
  EXPECT_FALSE(inCidr("::/0", "192.0.2.1"));  // an IPv6 CIDR is not a backdoor for IPv4
  EXPECT_TRUE(inCidr("::ffff:10.0.0.0/104", "10.9.9.9"));  // written mapped: an IPv4 CIDR
  std::string why;
  EXPECT_EQ(Cidr::parse("2001:db8::/32", &why)->toString(), "2001:db8::/32");
  EXPECT_EQ(Cidr::parse("10.0.0.0/8", &why)->toString(), "10.0.0.0/8");
}

TEST(Cidr, ErrorsHaveReasons) {
  for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.1/8", "10.0.0.0/", "10.0.0.0/x",
                          "10.0.0.0/8/8", "host/8", "", "/8", "10.0.0.0/0008"}) {
    std::string why;
    EXPECT_FALSE(Cidr::parse(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

class ResolveClient : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(trusted_.add("10.0.0.0/8", &why)) << why;
    ASSERT_TRUE(trusted_.add("2001:db8:1::/48", &why)) << why;
  }
  ClientInfo resolve(std::string_view peer, const std::vector<Header>& headers,
                     ForwardedSource source = ForwardedSource::kXForwardedFor) {
    return resolveClient(ip(peer), trusted_, source, headers, "https", "site.example");
  }
  TrustedProxies trusted_;
};

TEST_F(ResolveClient, UntrustedPeerIgnoresEverythingItSays) {
  ClientInfo c = resolve("203.0.113.5", {{"X-Forwarded-For", "1.1.1.1"},
                                         {"X-Forwarded-Proto", "http"},
                                         {"X-Forwarded-Host", "evil.example"},
                                         {"Forwarded", "for=1.1.1.1"}});
  EXPECT_EQ(c.client_ip, "203.0.113.5");
  EXPECT_FALSE(c.from_header);
  EXPECT_EQ(c.x_forwarded_for, "203.0.113.5");
  EXPECT_EQ(c.x_forwarded_proto, "https");
  EXPECT_EQ(c.x_forwarded_host, "site.example");
}

TEST_F(ResolveClient, TrustedChainWalkedFromTheRight) {
  // The client spoofed "6.6.6.6"; the first proxy saw 198.51.100.7 and appended it.
  ClientInfo c = resolve("10.0.0.2", {{"X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.1"},
                                      {"X-Forwarded-Proto", "http"},
                                      {"X-Forwarded-Host", "Public.Example:8443"}});
  EXPECT_EQ(c.client_ip, "198.51.100.7");
  EXPECT_TRUE(c.from_header);
  EXPECT_EQ(c.x_forwarded_for, "198.51.100.7, 10.0.0.1, 10.0.0.2");
  EXPECT_EQ(c.x_forwarded_proto, "http");
  EXPECT_EQ(c.x_forwarded_host, "Public.Example:8443");
  // Several lines are one list.
  c = resolve("10.0.0.2", {{"X-Forwarded-For", "6.6.6.6"},
                           {"x-forwarded-for", " 198.51.100.7 ,"},
                           {"X-Forwarded-For", "10.0.0.1"}});
  EXPECT_EQ(c.client_ip, "198.51.100.7");
  EXPECT_EQ(c.x_forwarded_for, "198.51.100.7, 10.0.0.1, 10.0.0.2");
  // Every hop trusted: the leftmost is the client.
  c = resolve("10.0.0.2", {{"X-Forwarded-For", "10.1.1.1, 10.0.0.1"}});
  EXPECT_EQ(c.client_ip, "10.1.1.1");
  // No header from a trusted peer: the peer is the client.
  c = resolve("10.0.0.2", {});
  EXPECT_EQ(c.client_ip, "10.0.0.2");
  EXPECT_FALSE(c.from_header);
  EXPECT_EQ(c.x_forwarded_for, "10.0.0.2");
}

TEST_F(ResolveClient, MixedIpv6AndPorts) {
  ClientInfo c = resolve("::ffff:10.0.0.2",
                         {{"X-Forwarded-For", "2001:db8:99::5, [2001:db8:1::9]:443, 10.3.3.3:80"}});
  EXPECT_EQ(c.client_ip, "2001:db8:99::5");
  EXPECT_EQ(c.x_forwarded_for, "2001:db8:99::5, 2001:db8:1::9, 10.3.3.3, 10.0.0.2");
  c = resolve("2001:db8:1::1", {{"X-Forwarded-For", "192.0.2.44"}});
  EXPECT_EQ(c.client_ip, "192.0.2.44");
}

TEST_F(ResolveClient, GarbageStopsTheWalk) {
  for (const char* bad : {"unknown", "1.2.3.4.5", "<script>", "1.2.3.4:99999", "[::1", "_hidden",
                          "1.2.3.4 5.6.7.8", "[1.2.3.4]"}) {
    ClientInfo c =
        resolve("10.0.0.2", {{"X-Forwarded-For", std::string("6.6.6.6, ") + bad + ", 10.0.0.1"}});
    EXPECT_EQ(c.client_ip, "10.0.0.1") << bad;  // the last trusted hop
    EXPECT_EQ(c.x_forwarded_for, "10.0.0.1, 10.0.0.2") << bad;
  }
  ClientInfo c = resolve("10.0.0.2", {{"X-Forwarded-For", "6.6.6.6, garbage"}});
  EXPECT_EQ(c.client_ip, "10.0.0.2");
  EXPECT_EQ(c.x_forwarded_for, "10.0.0.2");
  // Proto and host that are not plausible are not passed on.
  c = resolve("10.0.0.2",
              {{"X-Forwarded-Proto", "gopher"}, {"X-Forwarded-Host", "a b\r\nX-Injected: 1"}});
  EXPECT_EQ(c.x_forwarded_proto, "https");
  EXPECT_EQ(c.x_forwarded_host, "site.example");
  c = resolve("10.0.0.2", {{"X-Forwarded-Proto", "https, HTTP"}});
  EXPECT_EQ(c.x_forwarded_proto, "http");  // the nearest proxy's word
}

TEST_F(ResolveClient, ForwardedHeader) {
  const auto fwd = ForwardedSource::kForwarded;
  ClientInfo c =
      resolve("10.0.0.2",
              {{"Forwarded", "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\""},
               {"Forwarded", "for=10.0.0.1;proto=http;host=\"app.example:8080\";by=_proxy"}},
              fwd);
  EXPECT_EQ(c.client_ip, "2001:db8:cafe::17");
  EXPECT_EQ(c.x_forwarded_for, "2001:db8:cafe::17, 10.0.0.1, 10.0.0.2");
  EXPECT_EQ(c.x_forwarded_proto, "http");
  EXPECT_EQ(c.x_forwarded_host, "app.example:8080");
  // Case-insensitive names, quoted IPv4 with a port, OWS around separators.
  c = resolve("10.0.0.2", {{"Forwarded", "For=\"192.0.2.60:4711\" ; Proto=https , for=10.0.0.1"}},
              fwd);
  EXPECT_EQ(c.client_ip, "192.0.2.60");
  // X-Forwarded-For is not read when the proxies write Forwarded, and the other way round.
  c = resolve("10.0.0.2", {{"X-Forwarded-For", "6.6.6.6"}}, fwd);
  EXPECT_EQ(c.client_ip, "10.0.0.2");
  c = resolve("10.0.0.2", {{"Forwarded", "for=6.6.6.6"}});
  EXPECT_EQ(c.client_ip, "10.0.0.2");
  // Obfuscated identifiers and "unknown" stop the walk at the last trusted hop.
  for (const char* node : {"_abc", "unknown", "\"_abc:_port\"", "\"unknown:80\""}) {
    c = resolve("10.0.0.2", {{"Forwarded", std::string("for=6.6.6.6, for=") + node}}, fwd);
    EXPECT_EQ(c.client_ip, "10.0.0.2") << node;
    c = resolve("10.0.0.2",
                {{"Forwarded", std::string("for=6.6.6.6, for=") + node + ", for=10.0.0.1"}}, fwd);
    EXPECT_EQ(c.client_ip, "10.0.0.1") << node;
  }
}

TEST_F(ResolveClient, MalformedForwardedLines) {
  const auto fwd = ForwardedSource::kForwarded;
  for (const char* bad : {
           "for=[2001:db8::1]",        // IPv6 must be quoted
           "for=\"[2001:db8::1]",      // unterminated
           "for=1.2.3.4;for=5.6.7.8",  // a parameter twice
           "for=",                     // no value
           "for 1.2.3.4",              // no "="
           "for=1.2.3.4 x",            // junk after a value
           "proto=https",              // no for=
           "for=\"1.2.3.4\x01\"",      // a control character
           "for=\"[2001:db8::1]:\"",   // an empty port
       }) {
    ClientInfo c = resolve(
        "10.0.0.2",
        {{"Forwarded", "for=6.6.6.6"}, {"Forwarded", bad}, {"Forwarded", "for=10.0.0.1"}}, fwd);
    EXPECT_EQ(c.client_ip, "10.0.0.1") << bad;
    EXPECT_EQ(c.x_forwarded_for, "10.0.0.1, 10.0.0.2") << bad;
  }
  // Empty elements are skipped.
  ClientInfo c = resolve("10.0.0.2", {{"Forwarded", "for=192.0.2.9,,for=10.0.0.1,"}}, fwd);
  EXPECT_EQ(c.client_ip, "192.0.2.9");
}

}  // namespace
}  // namespace sluice::http
