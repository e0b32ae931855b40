#include "proxy/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace sluice::notify {

namespace {

std::string statusLine(std::string_view status) {
  std::string line = "STATUS=";
  for (char c : status) {
    line.push_back(c == '\n' ? ' ' : c);
  }
  return line;
}

}  // namespace

bool send(std::string_view message) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) {
    return false;  // not started by a service manager (or a vsock address, which we do not use)
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len < 2 || len >= sizeof addr.sun_path) {
    return false;
  }
  memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract: the length below, not a terminator, ends the name
  }
  socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  ssize_t n;
  do {
    n = sendto(fd, message.data(), message.size(), MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&addr), addr_len);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  return n == static_cast<ssize_t>(message.size());
}

std::string readyMessage(std::string_view status) {
  return "READY=1\n" + statusLine(status);
}

std::string reloadingMessage(std::string_view status, uint64_t monotonic_usec) {
  // MONOTONIC_USEC lets systemd (253 and later) tell this reload from an earlier one.
  return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec) + "\n" +
         statusLine(status);
}

std::string stoppingMessage(std::string_view status) {
  return "STOPPING=1\n" + statusLine(status);
}

void ready(std::string_view status) {
  send(readyMessage(status));
}

void reloading(std::string_view status) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t usec =
      static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  send(reloadingMessage(status, usec));
}

void stopping(std::string_view status) {
  send(stoppingMessage(status));
}

}  // namespace sluice::notify
