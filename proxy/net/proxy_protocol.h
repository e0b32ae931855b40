#pragma once

// The PROXY protocol header a load balancer sends before the client's bytes (HAProxy's
// proxy-protocol.txt, versions 1 and 2): an incremental parser fed bytes as they arrive, split
// anywhere. It reads the header and nothing after it; no I/O and no timers (the caller bounds
// the wait with its header timeout). The header is refused as soon as a byte cannot belong to
// one, so a client that speaks HTTP or TLS to a PROXY listener is told at its first byte.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice::net {

struct ProxyHeader {
  uint8_t version = 0;  // 1 or 2
  // v2 LOCAL: the proxy speaks for itself (a health check); use the connection's endpoints.
  bool local = false;
  // AF_INET, AF_INET6 or AF_UNIX with the addresses below; AF_UNSPEC when the header carries
  // none (LOCAL, v1 UNKNOWN, v2 UNSPEC): then the connection's own endpoints count.
  int family = AF_UNSPEC;
  sockaddr_storage source{};       // the client
  sockaddr_storage destination{};  // the address the client connected to
  size_t length = 0;               // bytes of the header, TLVs included
};

class ProxyProtocolParser {
 public:
  static constexpr size_t kMaxV1Bytes = 107;  // "PROXY TCP6 <39> <39> 65535 65535\r\n"
  // v2 allows 16 + 65535 bytes; TLVs in practice (SSL details, unique IDs, cloud endpoint IDs)
  // take a few hundred.
  static constexpr size_t kDefaultMaxV2Bytes = 4096;

  enum class Status : uint8_t {
    kNeedMore,  // all of `data` belongs to the header, which is not complete yet
    kDone,      // header() is set; the first `consumed` bytes of `data` were its end
    kError,     // not a valid PROXY header: close the connection
  };
  struct Result {
    Status status;
    size_t consumed;
    const char* error;  // kError: why; else ""
  };

  explicit ProxyProtocolParser(size_t max_v2_bytes = kDefaultMaxV2Bytes)
      : max_v2_bytes_(max_v2_bytes) {}

  // After kDone or kError, further calls return the same status and consume nothing.
  Result feed(const char* data, size_t len);
  const ProxyHeader& header() const { return header_; }

 private:
  Result fail(const char* why, size_t consumed);
  const char* parseV1();
  const char* checkV2Fixed() const;  // the 16 fixed bytes, before the rest arrives
  const char* parseV2();

  size_t max_v2_bytes_;
  std::string buf_;  // the header so far: at most kMaxV1Bytes or max_v2_bytes_
  size_t need_ = 0;  // v2: the header's whole length, once its first 16 bytes are in
  ProxyHeader header_;
  Status status_ = Status::kNeedMore;
  const char* error_ = "";
};

}  // namespace sluice::net
