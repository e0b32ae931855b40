#include "proxy/net/listen.h"

#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

namespace sluice::net {

int listenSocket(const conf::Address& addr, bool reuse_port, std::string* error) {
  sockaddr_storage ss{};
  std::string host = addr.host == "localhost" ? "127.0.0.1" : addr.host;
  int rc = addr.ipv6 ? uv_ip6_addr(host.c_str(), addr.port, reinterpret_cast<sockaddr_in6*>(&ss))
                     : uv_ip4_addr(host.c_str(), addr.port, reinterpret_cast<sockaddr_in*>(&ss));
  if (rc != 0) {
    *error = "bad listen address '" + addr.text + "'";
    return -1;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  }
  if (addr.ipv6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int e = errno;
    *error = "cannot listen on " + addr.text + ": " + strerror(e) + bindHint(addr, e);
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string bindHint(const conf::Address& addr, int err) {
  if (err == EACCES || err == EPERM) {
    return " (ports below 1024 need root or CAP_NET_BIND_SERVICE: start sluice as root with "
           "[server] user = \"...\" to drop privileges once bound, or grant the capability: "
           "AmbientCapabilities=CAP_NET_BIND_SERVICE in its systemd unit, or setcap "
           "cap_net_bind_service=+ep on the binary)";
  }
  if (err == EADDRINUSE) {
    return " (another process listens there: `ss -ltnp 'sport = :" + std::to_string(addr.port) +
           "'` names it)";
  }
  if (err == EADDRNOTAVAIL) {
    return " (no interface of this machine has that address)";
  }
  return {};
}

int probeAddress(const conf::Address& addr, std::string* error) {
  int fd = listenSocket(addr, false, error);
  if (fd < 0) {
    return -1;
  }
  ::close(fd);
  return 0;
}

}  // namespace sluice::net
