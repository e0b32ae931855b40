#include "proxy/net/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice::net {
namespace {

using Status = ProxyProtocolParser::Status;
const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

std::string be16(size_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}

std::string v2(uint8_t ver_cmd, uint8_t fam, const std::string& body) {
  return kSig + static_cast<char>(ver_cmd) + static_cast<char>(fam) + be16(body.size()) + body;
}

std::string inet4Block() {
  // 192.0.2.1:56324 -> 198.51.100.2:443
  return std::string("\xc0\x00\x02\x01\xc6\x33\x64\x02", 8) + be16(56324) + be16(443);
}

std::string inet6Block() {
  std::string b(32, '\0');
  b[0] = '\x20';
  b[1] = '\x01';
  b[2] = '\x0d';
  b[3] = '\xb8';
  b[15] = '\x01';  // 2001:db8::1
  b[16] = '\x20';
  b[17] = '\x01';
  b[18] = '\x0d';
  b[19] = '\xb8';
  b[31] = '\x02';  // 2001:db8::2
  return b + be16(4711) + be16(8443);
}

std::string text(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    return reinterpret_cast<const sockaddr_un*>(&ss)->sun_path;
  }
  return "-";
}

struct Parsed {
  Status status;
  size_t consumed = 0;  // over all pieces
  std::string error;
  ProxyHeader header;
};

// Feeds `input` in the given pieces until the parser is done or fails.
Parsed parse(const std::string& input, const std::vector<size_t>& cuts = {}) {
  ProxyProtocolParser p;
  Parsed out{Status::kNeedMore, 0, "", {}};
  size_t from = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(input.size());
  for (size_t end : ends) {
    std::string piece = input.substr(from, end - from);  // exact size: ASan sees overreads
    ProxyProtocolParser::Result r = p.feed(piece.data(), piece.size());
    if (r.status == Status::kNeedMore) {
      EXPECT_EQ(r.consumed, piece.size());
    }
    out.consumed += r.consumed;
    out.status = r.status;
    out.error = r.error;
    if (r.status != Status::kNeedMore) {
      break;
    }
    from = end;
  }
  out.header = p.header();
  return out;
}

// The same outcome for the input whole, split in two at every point, and byte by byte.
Parsed parseEverySplit(const std::string& input) {
  Parsed whole = parse(input);
  std::vector<size_t> bytewise;
  for (size_t i = 1; i < input.size(); ++i) {
    bytewise.push_back(i);
    Parsed split = parse(input, {i});
    EXPECT_EQ(split.status, whole.status) << "split at " << i;
    EXPECT_EQ(split.error, whole.error) << "split at " << i;
    if (whole.status == Status::kDone) {
      EXPECT_EQ(split.consumed, whole.consumed) << "split at " << i;
      EXPECT_EQ(text(split.header.source), text(whole.header.source)) << "split at " << i;
    }
  }
  Parsed bytes = parse(input, bytewise);
  EXPECT_EQ(bytes.status, whole.status);
  EXPECT_EQ(bytes.error, whole.error);
  return whole;
}

TEST(ProxyProtocolV1, Tcp4AndTcp6) {
  std::string line = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
  Parsed r = parseEverySplit(line + "GET / HTTP/1.1\r\n");
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.consumed, line.size());  // the request after it is left alone
  EXPECT_EQ(r.header.version, 1);
  EXPECT_EQ(r.header.family, AF_INET);
  EXPECT_FALSE(r.header.local);
  EXPECT_EQ(r.header.length, line.size());
  EXPECT_EQ(text(r.header.source), "192.0.2.1:56324");
  EXPECT_EQ(text(r.header.destination), "198.51.100.2:443");

  line = "PROXY TCP6 2001:db8::1 ::ffff:198.51.100.2 0 65535\r\n";
  r = parseEverySplit(line + "\x16\x03\x01");
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.consumed, line.size());
  EXPECT_EQ(r.header.family, AF_INET6);
  EXPECT_EQ(text(r.header.source), "[2001:db8::1]:0");
  EXPECT_EQ(text(r.header.destination), "[::ffff:198.51.100.2]:65535");
}

TEST(ProxyProtocolV1, UnknownAndLengthLimit) {
  Parsed r = parseEverySplit("PROXY UNKNOWN\r\n");
  ASSERT_EQ(r.status, Status::kDone);
  EXPECT_EQ(r.header.family, AF_UNSPEC);
  r = parse("PROXY UNKNOWN whatever follows\r\n");
  ASSERT_EQ(r.status, Status::kDone);
  EXPECT_EQ(r.header.family, AF_UNSPEC);

  // The longest line the spec allows is 107 bytes with its CRLF.
  std::string longest =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  EXPECT_EQ(parse(longest).status, Status::kDone);
  std::string unknown107 = "PROXY UNKNOWN " + std::string(107 - 16, 'x') + "\r\n";
  ASSERT_EQ(unknown107.size(), 107u);
  EXPECT_EQ(parse(unknown107).status, Status::kDone);
  std::string unknown108 = "PROXY UNKNOWN " + std::string(108 - 16, 'x') + "\r\n";
  EXPECT_EQ(parseEverySplit(unknown108).status, Status::kError);
  // Without a line end the parser stops at 107 bytes, not at the end of the input.
  EXPECT_EQ(parse("PROXY UNKNOWN " + std::string(10000, 'x')).status, Status::kError);
  // Incomplete: asks for more.
  EXPECT_EQ(parse("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r").status, Status::kNeedMore);
  EXPECT_EQ(parse("PROX").status, Status::kNeedMore);
}

TEST(ProxyProtocolV1, Malformed) {
  for (const char* bad : {
           "PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",  // family mismatch
           "PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",     // family mismatch
           "PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
           "PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n",  // leading zero
           "PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",
           "PROXY TCP4 192.0.2.1  198.51.100.2 1 443\r\n",  // two spaces
           "PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",       // a field short
           "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",   // a field too many
           "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",    // trailing space
           "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",       // bare LF
           "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r\n",
           "PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
           "PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
           "PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
           "PROXY \r\n",
           "proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
           "PROXYTCP4 192.0.2.1 198.51.100.2 1 2\r\n",
           "GET / HTTP/1.1\r\n",
           "\x16\x03\x01\x02\x00",
       }) {
    Parsed r = parseEverySplit(bad);
    EXPECT_EQ(r.status, Status::kError) << bad;
    EXPECT_FALSE(r.error.empty()) << bad;
  }
  // A client speaking HTTP is refused at its first byte.
  ProxyProtocolParser p;
  EXPECT_EQ(p.feed("G", 1).status, Status::kError);
  EXPECT_EQ(p.feed("PROXY", 5).status, Status::kError);  // and stays refused
}

TEST(ProxyProtocolV2, Inet4AndInet6) {
  std::string h = v2(0x21, 0x11, inet4Block());
  Parsed r = parseEverySplit(h + "GET /");
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.consumed, h.size());
  EXPECT_EQ(r.header.version, 2);
  EXPECT_FALSE(r.header.local);
  EXPECT_EQ(r.header.family, AF_INET);
  EXPECT_EQ(r.header.length, 28u);
  EXPECT_EQ(text(r.header.source), "192.0.2.1:56324");
  EXPECT_EQ(text(r.header.destination), "198.51.100.2:443");

  h = v2(0x21, 0x21, inet6Block());
  r = parseEverySplit(h + "\x16\x03");
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.consumed, h.size());
  EXPECT_EQ(r.header.family, AF_INET6);
  EXPECT_EQ(text(r.header.source), "[2001:db8::1]:4711");
  EXPECT_EQ(text(r.header.destination), "[2001:db8::2]:8443");
}

TEST(ProxyProtocolV2, UnixUnspecAndLocal) {
  std::string paths(216, '\0');
  paths.replace(0, 9, "/run/a.sk");
  paths.replace(108, 9, "/run/b.sk");
  Parsed r = parseEverySplit(v2(0x21, 0x31, paths));
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.header.family, AF_UNIX);
  EXPECT_EQ(text(r.header.source), "/run/a.sk");
  EXPECT_EQ(text(r.header.destination), "/run/b.sk");

  r = parseEverySplit(v2(0x21, 0x00, ""));  // PROXY, UNSPEC: the proxy cannot say
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.header.family, AF_UNSPEC);
  EXPECT_FALSE(r.header.local);

  // LOCAL (a health check): addresses, if any, are ignored, and so is the family.
  for (const std::string& h :
       {v2(0x20, 0x00, ""), v2(0x20, 0x11, inet4Block()), v2(0x20, 0x00, std::string(5, 'x'))}) {
    r = parseEverySplit(h + "GET");
    ASSERT_EQ(r.status, Status::kDone) << r.error;
    EXPECT_EQ(r.consumed, h.size());
    EXPECT_TRUE(r.header.local);
    EXPECT_EQ(r.header.family, AF_UNSPEC);
  }
}

TEST(ProxyProtocolV2, TlvsAreSkippedWithinBounds) {
  std::string tlvs = std::string("\x02", 1) + be16(11) + "example.com" +  // AUTHORITY
                     std::string("\x05", 1) + be16(0) +                   // empty UNIQUE_ID
                     std::string("\x04", 1) + be16(3) + "abc";            // NOOP
  Parsed r = parseEverySplit(v2(0x21, 0x11, inet4Block() + tlvs) + "GET");
  ASSERT_EQ(r.status, Status::kDone) << r.error;
  EXPECT_EQ(r.header.length, 16 + 12 + tlvs.size());
  EXPECT_EQ(text(r.header.source), "192.0.2.1:56324");

  // A TLV whose length runs past the header, and one cut short.
  EXPECT_EQ(
      parseEverySplit(v2(0x21, 0x11, inet4Block() + "\x02" + be16(12) + "example.com")).status,
      Status::kError);
  EXPECT_EQ(parseEverySplit(v2(0x21, 0x11, inet4Block() + std::string("\x02\x00", 2))).status,
            Status::kError);
}

TEST(ProxyProtocolV2, LyingLengthsAndBadFields) {
  // The length leaves no room for the addresses its family needs.
  EXPECT_EQ(parseEverySplit(v2(0x21, 0x11, inet4Block().substr(0, 11))).status, Status::kError);
  EXPECT_EQ(parseEverySplit(v2(0x21, 0x21, inet4Block())).status, Status::kError);
  EXPECT_EQ(parseEverySplit(v2(0x21, 0x31, std::string(215, '\0'))).status, Status::kError);
  // A length announcing more than the bound is refused once the 16 fixed bytes are in, before
  // anything is buffered.
  std::string big = kSig + "\x21\x11" + be16(60000);
  ProxyProtocolParser p;
  ProxyProtocolParser::Result res = p.feed(big.data(), big.size());
  EXPECT_EQ(res.status, Status::kError);
  ProxyProtocolParser roomy(70000);
  res = roomy.feed(big.data(), big.size());
  EXPECT_EQ(res.status, Status::kNeedMore);  // allowed, and more is needed
  // A length announcing more than what comes: the header is incomplete.
  std::string lying = kSig + "\x21\x11" + be16(100) + inet4Block();
  EXPECT_EQ(parse(lying).status, Status::kNeedMore);

  for (const auto& [ver_fam, why] : std::vector<std::pair<std::string, const char*>>{
           {"\x11\x11", "version 1 in a binary header"},
           {"\x31\x11", "version 3"},
           {"\x22\x11", "command 2"},
           {"\x2f\x11", "command 15"},
           {"\x21\x41", "family 4"},
           {"\x21\x13", "transport 3"},
           {"\x21\x12", "datagrams"},
           {"\x21\x10", "INET without a transport"},
       }) {
    std::string h = kSig + ver_fam + be16(12) + inet4Block();
    Parsed r = parseEverySplit(h);
    EXPECT_EQ(r.status, Status::kError) << why;
    // Refused at the fixed part, whatever follows.
    if (std::string(why) != "datagrams" && std::string(why) != "INET without a transport") {
      EXPECT_EQ(parse(h.substr(0, 16)).status, Status::kError) << why;
    }
  }
}

TEST(ProxyProtocolV2, BadSignatureAtEveryByte) {
  std::string good = v2(0x21, 0x11, inet4Block());
  for (size_t i = 0; i < 12; ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x40);
    Parsed r = parse(bad);
    EXPECT_EQ(r.status, Status::kError) << i;
    // Refused at the broken byte: nothing after it is needed.
    EXPECT_EQ(parse(bad.substr(0, i + 1)).status, Status::kError) << i;
  }
}

TEST(ProxyProtocol, DoneIsFinal) {
  ProxyProtocolParser p;
  std::string h = "PROXY UNKNOWN\r\nGET";
  ProxyProtocolParser::Result r = p.feed(h.data(), h.size());
  ASSERT_EQ(r.status, Status::kDone);
  EXPECT_EQ(r.consumed, 15u);
  r = p.feed("GET", 3);
  EXPECT_EQ(r.status, Status::kDone);
  EXPECT_EQ(r.consumed, 0u);
}

}  // namespace
}  // namespace sluice::net
