#include "proxy/net/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace sluice::net {

namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::string_view kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr size_t kV2Fixed = 16;  // signature, version/command, family/transport, length

// A v1 port: decimal 0..65535 without leading zeros.
bool parsePort(std::string_view s, uint16_t* port) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) {
    return false;
  }
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) {
    return false;
  }
  *port = static_cast<uint16_t>(v);
  return true;
}

bool parseAddress(int family, std::string_view text, uint16_t port, sockaddr_storage* out) {
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof(buf)) {
    return false;
  }
  memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  memset(out, 0, sizeof(*out));
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    return inet_pton(AF_INET, buf, &sin->sin_addr) == 1;
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(out);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  return inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1;
}

uint16_t load16(const char* p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[0]) << 8) | static_cast<uint8_t>(p[1]));
}

}  // namespace

ProxyProtocolParser::Result ProxyProtocolParser::fail(const char* why, size_t consumed) {
  status_ = Status::kError;
  error_ = why;
  buf_.clear();
  return {Status::kError, consumed, why};
}

ProxyProtocolParser::Result ProxyProtocolParser::feed(const char* data, size_t len) {
  if (status_ != Status::kNeedMore) {
    return {status_, 0, error_};
  }
  size_t i = 0;
  bool done = false;
  while (i < len && !done) {
    if (buf_.empty() && data[i] != kV1Prefix[0] && data[i] != kV2Signature[0]) {
      return fail("not a PROXY protocol header", i);
    }
    if ((buf_.empty() ? data[i] : buf_[0]) == kV1Prefix[0]) {
      // v1: a line of at most 107 bytes, CRLF included.
      size_t room = kMaxV1Bytes - buf_.size();
      size_t take = std::min(room, len - i);
      const char* lf = static_cast<const char*>(memchr(data + i, '\n', take));
      size_t n = lf != nullptr ? static_cast<size_t>(lf - (data + i)) + 1 : take;
      size_t checked = buf_.size();
      buf_.append(data + i, n);
      i += n;
      // Refuse at the first byte that breaks "PROXY ".
      for (size_t k = checked; k < std::min(buf_.size(), kV1Prefix.size()); ++k) {
        if (buf_[k] != kV1Prefix[k]) {
          return fail("not a PROXY protocol header", i);
        }
      }
      if (lf == nullptr) {
        if (buf_.size() >= kMaxV1Bytes) {
          return fail("PROXY v1 line longer than 107 bytes", i);
        }
        continue;
      }
      if (const char* why = parseV1(); why != nullptr) {
        return fail(why, i);
      }
      done = true;
      continue;
    }
    // v2: 16 fixed bytes, then as many more as they announce.
    size_t checked = buf_.size();
    size_t want = need_ != 0 ? need_ : kV2Fixed;
    size_t n = std::min(want - buf_.size(), len - i);
    buf_.append(data + i, n);
    i += n;
    for (size_t k = checked; k < std::min(buf_.size(), kV2Signature.size()); ++k) {
      if (buf_[k] != kV2Signature[k]) {
        return fail("not a PROXY protocol header", i);
      }
    }
    if (need_ == 0 && buf_.size() == kV2Fixed) {
      if (const char* why = checkV2Fixed(); why != nullptr) {
        return fail(why, i);
      }
      need_ = kV2Fixed + load16(buf_.data() + 14);
      if (need_ > max_v2_bytes_) {
        return fail("PROXY v2 header longer than allowed", i);
      }
    }
    if (need_ != 0 && buf_.size() == need_) {
      if (const char* why = parseV2(); why != nullptr) {
        return fail(why, i);
      }
      done = true;
    }
  }
  if (!done) {
    return {Status::kNeedMore, len, ""};
  }
  status_ = Status::kDone;
  header_.length = buf_.size();
  buf_.clear();
  buf_.shrink_to_fit();
  return {Status::kDone, i, ""};
}

const char* ProxyProtocolParser::parseV1() {
  std::string_view line(buf_);
  if (line.size() < 2 || line[line.size() - 2] != '\r') {
    return "PROXY v1 line not ended by CRLF";
  }
  line.remove_suffix(2);
  line.remove_prefix(kV1Prefix.size());
  // "UNKNOWN": the proxy cannot say; whatever follows up to the CRLF is ignored.
  if (line == "UNKNOWN" || line.rfind("UNKNOWN ", 0) == 0) {
    header_.version = 1;
    header_.family = AF_UNSPEC;
    return nullptr;
  }
  std::string_view fields[5];
  for (size_t f = 0; f < 5; ++f) {
    size_t sp = line.find(' ');
    if ((sp == std::string_view::npos) != (f == 4)) {
      return "PROXY v1 line has not 6 fields";
    }
    fields[f] = line.substr(0, sp);
    line = f == 4 ? std::string_view() : line.substr(sp + 1);
  }
  int family = 0;
  if (fields[0] == "TCP4") {
    family = AF_INET;
  } else if (fields[0] == "TCP6") {
    family = AF_INET6;
  } else {
    return "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN";
  }
  uint16_t sport = 0;
  uint16_t dport = 0;
  if (!parsePort(fields[3], &sport) || !parsePort(fields[4], &dport)) {
    return "invalid port in PROXY v1 line";
  }
  if (!parseAddress(family, fields[1], sport, &header_.source) ||
      !parseAddress(family, fields[2], dport, &header_.destination)) {
    return "invalid address in PROXY v1 line";
  }
  header_.version = 1;
  header_.family = family;
  return nullptr;
}

const char* ProxyProtocolParser::checkV2Fixed() const {
  auto version = static_cast<uint8_t>(buf_[12]);
  auto family = static_cast<uint8_t>(buf_[13]);
  if ((version & 0xF0) != 0x20) {
    return "unsupported PROXY protocol version";
  }
  if ((version & 0x0F) > 1) {
    return "invalid PROXY v2 command";
  }
  if ((family >> 4) > 3 || (family & 0x0F) > 2) {
    return "invalid PROXY v2 address family or transport";
  }
  return nullptr;
}

const char* ProxyProtocolParser::parseV2() {
  const char* p = buf_.data();
  uint8_t command = static_cast<uint8_t>(p[12]) & 0x0F;
  uint8_t af = static_cast<uint8_t>(p[13]) >> 4;
  uint8_t transport = static_cast<uint8_t>(p[13]) & 0x0F;
  const char* block = p + kV2Fixed;
  size_t block_len = buf_.size() - kV2Fixed;
  if (command == 0) {
    // LOCAL: the block, family included, is to be ignored.
    header_.version = 2;
    header_.local = true;
    header_.family = AF_UNSPEC;
    return nullptr;
  }
  size_t addr_len = 0;
  switch (af) {
    case 1:
      addr_len = 12;
      break;
    case 2:
      addr_len = 36;
      break;
    case 3:
      addr_len = 216;
      break;
    default:
      break;
  }
  if (af != 0 && transport != 1) {
    return "PROXY v2 transport is not a stream";
  }
  if (block_len < addr_len) {
    return "PROXY v2 length shorter than its addresses";
  }
  // TLVs: type, two bytes of length, value; each must fit in what remains.
  size_t at = addr_len;
  while (at < block_len) {
    if (block_len - at < 3) {
      return "truncated PROXY v2 TLV";
    }
    size_t tlv_len = load16(block + at + 1);
    if (tlv_len > block_len - at - 3) {
      return "PROXY v2 TLV longer than the header";
    }
    at += 3 + tlv_len;
  }
  ProxyHeader& h = header_;
  memset(&h.source, 0, sizeof(h.source));
  memset(&h.destination, 0, sizeof(h.destination));
  if (af == 1) {
    auto* src = reinterpret_cast<sockaddr_in*>(&h.source);
    auto* dst = reinterpret_cast<sockaddr_in*>(&h.destination);
    src->sin_family = dst->sin_family = AF_INET;
    memcpy(&src->sin_addr, block, 4);
    memcpy(&dst->sin_addr, block + 4, 4);
    memcpy(&src->sin_port, block + 8, 2);  // both in network order already
    memcpy(&dst->sin_port, block + 10, 2);
    h.family = AF_INET;
  } else if (af == 2) {
    auto* src = reinterpret_cast<sockaddr_in6*>(&h.source);
    auto* dst = reinterpret_cast<sockaddr_in6*>(&h.destination);
    src->sin6_family = dst->sin6_family = AF_INET6;
    memcpy(&src->sin6_addr, block, 16);
    memcpy(&dst->sin6_addr, block + 16, 16);
    memcpy(&src->sin6_port, block + 32, 2);
    memcpy(&dst->sin6_port, block + 34, 2);
    h.family = AF_INET6;
  } else if (af == 3) {
    auto* src = reinterpret_cast<sockaddr_un*>(&h.source);
    auto* dst = reinterpret_cast<sockaddr_un*>(&h.destination);
    static_assert(sizeof(src->sun_path) == 108);
    src->sun_family = dst->sun_family = AF_UNIX;
    memcpy(src->sun_path, block, 108);  // as sent: NUL-padded, or abstract
    memcpy(dst->sun_path, block + 108, 108);
    h.family = AF_UNIX;
  } else {
    h.family = AF_UNSPEC;  // UNSPEC: the proxy cannot say
  }
  h.version = 2;
  return nullptr;
}

}  // namespace sluice::net
